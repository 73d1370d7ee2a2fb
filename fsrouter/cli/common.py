"""What every command shares: the App (config, store, service), one-line errors, output and
time parsing.

Bad input of any kind ends in one line on stderr (`Error: ...`) and a non-zero exit: errors are
turned into that at one place, OneLineGroup, never shown as a traceback.
"""
from __future__ import annotations

import json
import logging
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import cached_property

import click
import peewee
import structlog

from .. import wiring
from ..config import ConfigError, load_config
from ..core.numbers import NotAClient
from ..core.settings import parse_duration
from ..service import Service, ServiceError, parse_time
from ..store import Store, StoreError

# What bad input, a missing file or an unreachable database raise; each becomes one line.
_EXPECTED_ERRORS = (StoreError, ServiceError, ConfigError, NotAClient, ValueError, OSError,
                    peewee.PeeweeException)
_HELP_ERRORS = tuple(e for e in (getattr(click.exceptions, "NoArgsIsHelpError", None),) if e)


def _one_line(text) -> str:
    return " ".join(str(text).split()) or "failed"


class _Failure(click.ClickException):
    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(_one_line(message))
        self.exit_code = exit_code


class OneLineGroup(click.Group):
    group_class = type  # subgroups are OneLineGroups too

    def make_context(self, *args, **kwargs):
        # A subcommand's usage errors surface in its parent's invoke(); only the top level's
        # own options (fsrouter --bogus) are parsed here, outside any invoke().
        return _parse_one_line(super().make_context, *args, **kwargs)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except _HELP_ERRORS:
            raise
        except click.UsageError as exc:  # e.g. no such command
            raise _Failure(exc.format_message(), exit_code=2) from None
        except _EXPECTED_ERRORS as exc:
            raise _Failure(str(exc)) from None


def _parse_one_line(make_context, *args, **kwargs):
    # click shows a usage error as usage, a hint and the error: four lines. Keep only the error.
    try:
        return make_context(*args, **kwargs)
    except _HELP_ERRORS:
        raise
    except click.UsageError as exc:
        raise _Failure(exc.format_message(), exit_code=2) from None


def example(*lines: str) -> str:
    return "\b\nExample:\n" + "\n".join(f"  {line}" for line in lines)


class App:
    """What the commands share; the config and the database are opened on first use."""

    def __init__(self, db: str | None, config_path: str | None):
        self.db = db
        self.config_path = config_path

    @cached_property
    def config(self):
        config = load_config(self.config_path)
        return replace(config, database=self.db) if self.db else config

    @cached_property
    def store(self) -> Store:
        # With webhooks on, a binding changed here is an event the daemon's sender delivers.
        return wiring.open_store(self.config)

    @cached_property
    def service(self) -> Service:
        return Service(self.store)

    def close(self) -> None:
        if "store" in self.__dict__:
            self.store.close()


def configure_logging() -> None:
    # Minimal: the CLI talks to people through stdout; only warnings go to stderr, as one line each.
    structlog.configure(
        processors=[structlog.processors.add_log_level, structlog.dev.ConsoleRenderer(colors=False)],
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )


def echo_json(value) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def table(headers, rows) -> None:
    rows = [[("" if cell is None else str(cell)) for cell in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    for row in [list(headers)] + rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


def iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else None


def parse_since(text: str, now: datetime) -> datetime:
    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        return parse_time(text)
    except ValueError:
        raise ValueError(f"bad --since {text!r}: a duration (7d, 12h) or an ISO time") from None


def positive_duration(text: str, what: str) -> timedelta:
    value = parse_duration(text)
    if value <= timedelta(0):
        raise ValueError(f"{what} must be above zero")
    return value


pass_app = click.make_pass_decorator(App)


def command_group(*args, **kwargs):
    """A noun's group of commands (`fsrouter agent ...`); its errors are one line too."""
    return click.group(*args, cls=OneLineGroup, **kwargs)


ON_OFF = click.Choice(["on", "off"], case_sensitive=False)
