"""Logging: structlog everywhere, JSON lines for journald, readable lines in a terminal.

greenswitch logs through the stdlib root logger; it is routed through the same renderer so a
call's lines look alike whoever wrote them. Secrets are never passed to a logger.
"""
from __future__ import annotations

import logging
import sys

import structlog


def configure_logging(fmt: str = "auto", level: str = "info", stream=None) -> None:
    stream = stream or sys.stdout
    if fmt == "auto":
        fmt = "console" if getattr(stream, "isatty", lambda: False)() else "json"
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer = (structlog.dev.ConsoleRenderer(colors=False) if fmt == "console"
                else structlog.processors.JSONRenderer())
    structlog.configure(
        processors=shared + [structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info, renderer],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    handler.addFilter(_quiet_greenswitch)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, str(level).upper(), logging.INFO))
    # greenswitch reports every call's start and end at INFO; that is our job, at our level.
    logging.getLogger("peewee").setLevel(logging.WARNING)


def _quiet_greenswitch(record: logging.LogRecord) -> bool:
    # greenswitch logs each call's start and end at INFO on the root logger, without the call's
    # uuid; fsrouter logs the same moments itself. Its warnings and errors still pass.
    return not (record.levelno < logging.WARNING and record.pathname.endswith("greenswitch/esl.py"))
