"""Regenerates the quickstart's sample data (deterministic): access.log and geoip.json.

Run from this folder: ``python make_sample.py``. The committed files are its output.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta

NETWORKS = {
    "81.2.69": ("GB", "London"), "89.160.20": ("SE", "Linköping"), "2.125.160": ("GB", "Boxford"),
    "175.16.199": ("CN", "Changchun"), "216.160.83": ("US", "Milton"), "67.43.156": ("BT", "Thimphu"),
    "202.196.224": ("PH", "Manila"), "149.101.100": ("US", "Washington"), "185.28.48": ("CZ", "Prague"),
    "91.213.160": ("DE", "Berlin"), "31.13.71": ("IE", "Dublin"), "103.21.244": ("AU", "Sydney"),
}
PATHS = ["/", "/index.html", "/products", "/products/42", "/products/7", "/cart", "/checkout", "/login",
         "/api/v1/orders", "/api/v1/orders/981", "/search?q=shoes", "/static/app.js", "/static/site.css",
         "/images/logo.png", "/favicon.ico", "/robots.txt", "/wp-login.php"]
AGENTS = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
    "Googlebot/2.1 (+http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "curl/8.5.0",
]


def main(count: int = 5000) -> None:
    rng = random.Random(20261125)
    moment = datetime(2026, 11, 24, 8, 0, 0, tzinfo=UTC)
    with open("access.log", "w", encoding="utf-8") as out:
        for i in range(count):
            moment += timedelta(milliseconds=rng.randint(5, 900))
            if i % 997 == 500:  # a few truncated lines, as real logs have
                out.write('81.2.69.160 - - [24/Nov/2026:09:13:07 +0000] "GET /products HTTP/1.1" 20\n')
                continue
            network = rng.choice(list(NETWORKS)) if rng.random() > 0.03 else "10.0.0"
            ip = f"{network}.{rng.randint(1, 254)}"
            path = rng.choice(PATHS)
            status = rng.choices([200, 301, 304, 404, 500, 503], weights=[80, 4, 6, 7, 2, 1])[0]
            size = rng.randint(200, 90_000) if status == 200 else rng.randint(0, 600)
            method = "POST" if path in ("/checkout", "/login", "/api/v1/orders") and rng.random() < 0.6 else "GET"
            out.write(f'{ip} - - [{moment.strftime("%d/%b/%Y:%H:%M:%S +0000")}] "{method} {path} HTTP/1.1" '
                      f'{status} {size} "-" "{rng.choice(AGENTS)}" {rng.randint(1, 2500)}\n')
    geo = {network: {"country": country, "city": city} for network, (country, city) in NETWORKS.items()}
    with open("geoip.json", "w", encoding="utf-8") as out:
        json.dump(geo, out, indent=1, ensure_ascii=False)
        out.write("\n")


if __name__ == "__main__":
    main()
