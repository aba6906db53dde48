"""Asserts that an environment holding only bspump-core has no connector client installed.

Run inside a venv where `pip install packages/bspump-core` was the only install.
"""

from __future__ import annotations

import importlib.metadata
import sys

FORBIDDEN = ("aiokafka", "confluent-kafka", "asyncpg", "pymongo", "motor", "elasticsearch", "aiomqtt")


def main() -> int:
    installed = {dist.metadata["Name"].lower(): dist.version for dist in importlib.metadata.distributions()}
    leaked = [name for name in FORBIDDEN if name in installed]
    print("installed with bspump-core:", ", ".join(f"{n} {v}" for n, v in sorted(installed.items())))
    if "bspump-core" not in installed:
        print("error: bspump-core is not installed here", file=sys.stderr)
        return 1
    if leaked:
        print(f"error: bspump-core pulled in connector clients: {', '.join(leaked)}", file=sys.stderr)
        return 1
    import bspump

    print(f"ok: bspump {bspump.__version__} installed without any connector client")
    return 0


if __name__ == "__main__":
    sys.exit(main())
