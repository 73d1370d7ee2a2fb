"""Logging: structlog everywhere, JSON lines for journald, readable lines in a terminal.

greenswitch (and peewee) log through the stdlib root logger; their lines go through the same
renderer to the same stream, so a call's lines look alike whoever wrote them. Secrets are never
passed to a logger.
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
    threshold = getattr(logging, str(level).upper(), logging.INFO)
    # fsrouter's own lines are rendered and written by structlog itself, not handed to the stdlib's
    # logging: that hand-over (a LogRecord, the handler, ProcessorFormatter) was 6% of the daemon's
    # samples in the ingestion blast (py-spy; two info lines per call), the rendering alone 1%.
    # A line below the level costs one no-op call.
    structlog.configure(
        processors=shared + [structlog.processors.format_exc_info, renderer],
        logger_factory=_NamedLoggerFactory(stream),
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
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
    root.setLevel(threshold)
    # greenswitch reports every call's start and end at INFO; that is our job, at our level.
    logging.getLogger("peewee").setLevel(logging.WARNING)


class _NamedLogger(structlog.WriteLogger):
    """structlog's line writer, with the name it was asked for (add_logger_name reads it)."""

    def __init__(self, stream, name: str):
        super().__init__(stream)
        self.name = name


class _NamedLoggerFactory:
    def __init__(self, stream):
        self.stream = stream

    def __call__(self, *args) -> _NamedLogger:
        return _NamedLogger(self.stream, str(args[0]) if args else "fsrouter")


def _quiet_greenswitch(record: logging.LogRecord) -> bool:
    # greenswitch logs each call's start and end at INFO on the root logger, without the call's
    # uuid; fsrouter logs the same moments itself. Its warnings and errors still pass.
    return not (record.levelno < logging.WARNING and record.pathname.endswith("greenswitch/esl.py"))
