"""Turns ``import bspump.kafka`` without bspump-kafka installed into an error that says what to install."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from importlib.abc import MetaPathFinder
from importlib.machinery import ModuleSpec
from types import ModuleType

#: Subpackages published by the bspump project, and the distribution that provides each.
KNOWN_CONNECTORS = {
    "kafka": "bspump-kafka",
    "postgresql": "bspump-postgresql",
    "mongodb": "bspump-mongodb",
    "elasticsearch": "bspump-elasticsearch",
    "mqtt": "bspump-mqtt",
}


class MissingConnectorFinder(MetaPathFinder):
    """Consulted last: only when no installed distribution provides ``bspump.<connector>``."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        prefix, _, name = fullname.partition(".")
        if prefix != "bspump" or name not in KNOWN_CONNECTORS:
            return None
        distribution = KNOWN_CONNECTORS[name]
        raise ModuleNotFoundError(
            f"No module named {fullname!r}: the {name} connector is a separate distribution; "
            f"install it with: pip install {distribution}",
            name=fullname,
        )


def install_missing_connector_hint() -> None:
    """Append the finder to ``sys.meta_path`` once."""
    if not any(isinstance(finder, MissingConnectorFinder) for finder in sys.meta_path):
        sys.meta_path.append(MissingConnectorFinder())


def connector_attribute(package: str, name: str) -> ModuleType:
    """Module ``__getattr__`` of ``bspump``: a known connector is imported on first access (raising the
    install hint when it is missing); any other name is an ordinary AttributeError."""
    if name not in KNOWN_CONNECTORS:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    return importlib.import_module(f"{package}.{name}")
