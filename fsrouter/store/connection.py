"""Opening the database, what the store raises, and surviving a lost server connection."""
from __future__ import annotations

import functools
import re

import peewee as pw
from playhouse import db_url


class StoreError(ValueError):
    """Bad input for the store (unknown agent, duplicate, ...); the message is one line."""


class BindingRaced(StoreError):
    """A binding a change was decided on was changed by another process meanwhile: read again,
    decide again (the compare-and-swap of Store.apply_binding_changes)."""


def _connect(url: str) -> pw.Database:
    try:
        params = db_url.parse(url)
        scheme = url.split(":", 1)[0].lower()
        extra = {}
        if scheme.startswith("sqlite"):
            # WAL: the daemon's reads never wait for a CLI import's writes. IMMEDIATE: a writing
            # transaction takes the write lock at BEGIN, so two processes cannot both read a
            # binding and then both fail to upgrade to writers.
            extra = {"pragmas": {"journal_mode": "wal", "foreign_keys": 1, "synchronous": "normal"},
                     "timeout": 10, "lock_type": "IMMEDIATE"}
        elif scheme.startswith("postgres"):
            extra = {"connect_timeout": 5}
        return db_url.connect(url, **{k: v for k, v in extra.items() if k not in params})
    except (RuntimeError, ValueError, pw.ImproperlyConfigured) as exc:
        raise StoreError(f"bad database URL {_redact(url)!r}: {exc}") from None


def _redact(url: str) -> str:
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _reconnects(method):
    """A server connection that died (PostgreSQL restarted, failed over, cut an idle session) is
    dropped after the failed call, so the next call opens a fresh one instead of failing forever.

    Only outside a transaction: inside one, the caller's whole unit has failed and is retried whole.
    SQLite has no connection to lose; its OperationalError is 'database is locked' and such.
    """
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except (pw.OperationalError, pw.InterfaceError):
            if not self.is_sqlite and self.db.transaction_depth() == 0:
                try:
                    self.db.close()
                except pw.PeeweeException:
                    pass  # close() forgets the connection even when closing it fails
            raise
    return wrapper
