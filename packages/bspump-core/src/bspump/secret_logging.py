"""Keeps configured secret values out of log output, including tracebacks and other libraries' records.

The application attaches a :class:`SecretMaskingFilter` to the handlers of the root logger while it runs
(handler filters see every record that reaches them, whichever logger emitted it): a client library that puts
a password into its exception message, or a traceback that quotes a DSN, is masked like bspump's own lines.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from .config.secrets import SecretMask


class SecretMaskingFilter(logging.Filter):
    """Rewrites a record's message, traceback and stack with ``mask.mask`` before a handler formats it."""

    def __init__(self, mask: SecretMask) -> None:
        super().__init__()
        self.mask = mask

    def filter(self, record: logging.LogRecord) -> bool:
        mask = self.mask.mask
        message = record.getMessage()
        masked = mask(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask(record.exc_text)
        if record.stack_info:
            record.stack_info = mask(record.stack_info)
        return True


@contextmanager
def masked_logs(mask: SecretMask) -> Iterator[SecretMaskingFilter]:
    """Attach a masking filter to every handler of the root logger for the duration of the block."""
    masking = SecretMaskingFilter(mask)
    handlers = list(logging.getLogger().handlers)
    for handler in handlers:
        handler.addFilter(masking)
    try:
        yield masking
    finally:
        for handler in handlers:
            handler.removeFilter(masking)
