"""Configuration of bspump: ``pipelines.conf`` parsing, interpolation, typed component config.

Public API::

    load_config(path, environ=None) -> PipelinesConfig
    parse_config(text, filename=..., environ=None) -> PipelinesConfig
    PipelinesConfig, Section          the loaded file
    ComponentConfig                   defaults < file section < constructor overrides
    Int, Float, Seconds, Choice       defaults that carry their range or choices
    unbounded_numeric_keys(defaults)  numeric defaults that declare no range
    ConfigError                       every configuration problem, located as file:line [section] key
    is_secret, redact, redact_value, REDACTED
    SecretMask                        hides configured secret values in any text
"""

from .component import RESERVED_KEYS, ComponentConfig
from .errors import ConfigError
from .loader import load_config, parse_config
from .model import PipelinesConfig, Section
from .parser import KNOWN_KINDS
from .secrets import REDACTED, SecretMask, is_secret, redact, redact_value
from .typed import Choice, Float, Int, Seconds, unbounded_numeric_keys

__all__ = [
    "KNOWN_KINDS",
    "REDACTED",
    "RESERVED_KEYS",
    "Choice",
    "ComponentConfig",
    "ConfigError",
    "Float",
    "Int",
    "PipelinesConfig",
    "Seconds",
    "SecretMask",
    "Section",
    "is_secret",
    "load_config",
    "parse_config",
    "redact",
    "redact_value",
    "unbounded_numeric_keys",
]
