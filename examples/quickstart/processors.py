"""The quickstart's own processors: parse access-log lines, enrich them from a lookup, drop noise."""

from __future__ import annotations

import re
from typing import Any

import bspump

LINE = re.compile(
    r'(?P<ip>\S+) \S+ \S+ \[(?P<time>[^\]]+)\] "(?P<method>[A-Z]+) (?P<path>\S+) [^"]*" '
    r'(?P<status>\d{3}) (?P<bytes>\d+) "[^"]*" "(?P<agent>[^"]*)" (?P<duration_ms>\d+)$'
)
BOT_MARKERS = ("bot", "crawler", "spider", "curl/")
STATIC_PREFIXES = ("/static/", "/images/", "/favicon.ico", "/robots.txt")


class ParseAccessLog(bspump.Processor):
    """Turns a combined-log-format line into a dict; a malformed line raises (the error policy skips it)."""

    def process(self, context: bspump.Context, event: Any) -> Any:
        match = LINE.match(event)
        if match is None:
            raise ValueError("not a combined access-log line")
        record = match.groupdict()
        record["status"] = int(record["status"])
        record["bytes"] = int(record["bytes"])
        record["duration_ms"] = int(record["duration_ms"])
        return record


class DropBotsAndStatic(bspump.Processor):
    """Keeps the requests people made for pages and APIs."""

    def process(self, context: bspump.Context, event: Any) -> Any:
        agent = event["agent"].lower()
        if any(marker in agent for marker in BOT_MARKERS) or event["path"].startswith(STATIC_PREFIXES):
            return None
        return event


class GeoEnrich(bspump.Processor):
    """Adds country and city from the GeoIP lookup (keyed by the /24 network)."""

    ConfigDefaults = {"lookup": "GeoIP"}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.geo = self.app.pump_service.locate_lookup(self.Config.get("lookup"), referrer=self.qualified_id)

    def process(self, context: bspump.Context, event: Any) -> Any:
        network = event["ip"].rsplit(".", 1)[0]
        place = self.geo.get(network)
        event["country"] = place["country"] if place else None
        event["city"] = place["city"] if place else None
        event["slow"] = event["duration_ms"] > 2000
        return event
