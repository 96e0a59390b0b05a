"""The service's own logging set-up inside a test, with the test run's restored after."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import structlog

from app.logs import configure_logging


@contextmanager
def json_log_formatter() -> Iterator[logging.Formatter]:
    """The formatter `configure_logging("INFO", "json")` installs on the root logger."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level, structlog.get_config()
    try:
        configure_logging("INFO", "json")
        formatter = root.handlers[0].formatter
        assert formatter is not None
        yield formatter
    finally:
        root.handlers[:], level, config = saved
        root.setLevel(level)
        structlog.configure(**config)
