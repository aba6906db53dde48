"""General-purpose processors shipped with the core."""

from __future__ import annotations

from typing import Any

import orjson

from ..batch import Context
from ..processor import Processor


class JsonParser(Processor):
    """Decodes a JSON document (str or bytes) into Python objects; invalid input follows the error policy."""

    def process(self, context: Context, event: Any) -> Any:
        return orjson.loads(event)
