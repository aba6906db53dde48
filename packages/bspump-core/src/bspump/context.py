"""Names of the context keys that travel with events across packages.

A source puts where it read an event into its context (``POSITION_KEYS``); error messages quote those keys
instead of the event, which may hold secrets. The pipeline puts ``DEAD_LETTER_KEYS`` into the context of an
event it sends to the dead-letter sink; a sink that writes dead letters carries them along (as fields,
headers or columns).
"""

from __future__ import annotations

from typing import Final

SOURCE: Final = "source"
TOPIC: Final = "topic"
PARTITION: Final = "partition"
OFFSET: Final = "offset"
KEY: Final = "key"
PATH: Final = "path"
LINE: Final = "line"
INDEX: Final = "index"

#: Context keys that locate an event in its source, in the order error messages quote them.
POSITION_KEYS: Final = (SOURCE, TOPIC, PARTITION, OFFSET, KEY, PATH, LINE, INDEX)

ERROR: Final = "error"
ERROR_TYPE: Final = "error_type"
ERROR_COMPONENT: Final = "error_component"
ERROR_PIPELINE: Final = "error_pipeline"

#: What the pipeline adds to the context of a dead-lettered event: ``"ValueError: ..."``, ``"ValueError"``,
#: ``"Pipeline.Component"`` that failed, and the pipeline's ID.
DEAD_LETTER_KEYS: Final = (ERROR, ERROR_TYPE, ERROR_COMPONENT, ERROR_PIPELINE)
