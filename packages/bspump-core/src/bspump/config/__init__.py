"""Configuration of bspump: ``pipelines.conf`` parsing, interpolation, typed component config.

Public API::

    load_config(path, environ=None) -> PipelinesConfig
    parse_config(text, filename=..., environ=None) -> PipelinesConfig
    PipelinesConfig, Section          the loaded file
    ComponentConfig                   defaults < file section < constructor overrides
    ConfigError                       every configuration problem, located as file:line [section] key
    is_secret, redact, redact_value, REDACTED
"""

from .coerce import Seconds
from .component import RESERVED_KEYS, ComponentConfig
from .errors import ConfigError
from .loader import load_config, parse_config
from .model import PipelinesConfig, Section
from .parser import KNOWN_KINDS
from .secrets import REDACTED, is_secret, redact, redact_value

__all__ = [
    "KNOWN_KINDS",
    "REDACTED",
    "RESERVED_KEYS",
    "ComponentConfig",
    "ConfigError",
    "PipelinesConfig",
    "Seconds",
    "Section",
    "is_secret",
    "load_config",
    "parse_config",
    "redact",
    "redact_value",
]
