"""The database: agents, groups, bindings, call records and settings, behind one small class.

One module per kind of table: schema (the models and the upgrade steps), agents, clients,
bindings (and the one write of every binding change), calls (and the outbox write); Store joins
their methods on one connection. SQL only: what changes is decided in the core
(core/binding_changes.py) and sequenced by fsrouter/binding_path.py.

SQLite or PostgreSQL through peewee. The schema is created and upgraded on open (MIGRATIONS);
times are stored as naive UTC and come back timezone-aware. Model classes are made per Store,
so two stores (two databases) can be open in one process without rebinding shared classes.
"""
from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Self

import peewee as pw
from playhouse.migrate import SchemaMigrator

from ..core.settings import Settings
from . import sqltext
from .agents import AgentTables
from .bindings import BindingTables
from .calls import CallTables
from .clients import ClientTables
from .connection import BindingRaced, StoreError, _connect, _one_line, _reconnects, _redact
from .gaps import GapTables
from .schema import MIGRATIONS, _client_models, _gap_models, _models, _outbox_model

__all__ = ["MIGRATIONS", "BindingRaced", "Store", "StoreError"]

# Any constant: PostgreSQL processes opening the database serialise their migrations on it.
_PG_MIGRATION_LOCK = 0x66737274


class Store(AgentTables, ClientTables, BindingTables, CallTables, GapTables):
    """One database connection and the methods of every table on it (one module per kind of
    table); opening it creates or upgrades the schema."""

    def __init__(self, db: pw.Database, webhook_urls: tuple[str, ...] = (),
                 on_event: Callable[[], None] | None = None):
        self.db = db
        self.m = _models(db)
        _outbox_model(db, self.m)
        self.webhook_urls = tuple(webhook_urls)  # not empty: changes write events to the outbox
        self.on_event = on_event  # called after events were written (wakes the sender)
        _client_models(db, self.m)
        _gap_models(db, self.m)
        self._upgrade()
        self._prepare_statements()

    def _prepare_statements(self) -> None:
        """The statements of every call (route, then record and learn), written once.

        peewee builds SQL afresh on each query, which costs more than SQLite takes to run it; these
        run for every call, so they are built here, in SQL that SQLite (>= 3.24) and PostgreSQL share.
        """
        b, c = self.m.Binding, self.m.Call
        table_b, table_c = f'"{b._meta.table_name}"', f'"{c._meta.table_name}"'
        self._binding_columns = [b.client, b.source, b.agent, b.at, b.expires_at, b.why, b.call_uuid]
        self._call_columns = [c.uuid, c.direction, c.client, c.agent, c.started_at, c.ended_at,
                              c.talk_seconds, c.answered, c.group_name, c.answered_at, c.rung, c.route,
                              c.outcome, c.sticky_agent]
        p = self.db.param
        self._bindings_sql = (f'SELECT "source", "agent", "at", "expires_at", "why", "call_uuid" '
                              f'FROM {table_b} WHERE "client" = {p}')
        self._upsert_call_sql = sqltext.upsert_sql(table_c, self._call_columns, ["uuid"], p)
        # apply_binding_changes' compare-and-swap: a row is written only if it is still the
        # binding the change was decided on (agent, at, why, call), or (a first binding) still absent.
        self._insert_binding_sql = (
            f'INSERT INTO {table_b} ({sqltext.names(self._binding_columns)}) VALUES ({", ".join([p] * 7)}) '
            f'ON CONFLICT ("client", "source") DO NOTHING')
        same = (f'"client" = {p} AND "source" = {p} AND "agent" = {p} AND "at" = {p} AND "why" = {p} '
                f'AND ("call_uuid" = {p} OR ("call_uuid" IS NULL AND {p} IS NULL))')
        self._swap_binding_sql = (
            f'UPDATE {table_b} SET "client" = {p}, "agent" = {p}, "at" = {p}, "expires_at" = {p}, "why" = {p}, '
            f'"call_uuid" = {p} WHERE {same}')
        self._delete_binding_sql = f'DELETE FROM {table_b} WHERE {same}'

    @classmethod
    def open(cls, url: str, webhook_urls: tuple[str, ...] = (),
             on_event: Callable[[], None] | None = None) -> Store:
        db = _connect(url)
        try:
            db.connect()
        except pw.OperationalError as exc:
            raise StoreError(f"cannot open database {_redact(url)}: {_one_line(exc)}") from None
        try:
            return cls(db, webhook_urls, on_event)
        except Exception:
            db.close()
            raise

    def close(self) -> None:
        if not self.db.is_closed():
            self.db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def transaction(self):
        """One all-or-nothing unit; nested uses become savepoints."""
        with self.db.atomic():
            yield

    @property
    def is_sqlite(self) -> bool:
        return isinstance(self.db, pw.SqliteDatabase)

    def schema_version(self) -> int:
        if not self.db.table_exists("schema_version"):
            return 0
        return self.m.SchemaVersion.select(pw.fn.MAX(self.m.SchemaVersion.version)).scalar() or 0

    def _applied(self) -> set[int]:
        if not self.db.table_exists("schema_version"):
            return set()
        return {v for (v,) in self.m.SchemaVersion.select(self.m.SchemaVersion.version).tuples()}

    def _upgrade(self) -> None:
        latest = MIGRATIONS[-1][0]
        applied = self._applied()
        if {version for version, _, _ in MIGRATIONS} <= applied and max(applied) <= latest:
            return  # the usual case, without taking a write lock (a read-only CLI user can list)
        with self.db.atomic():
            if not self.is_sqlite:
                self.db.execute_sql("SELECT pg_advisory_xact_lock(%s)", (_PG_MIGRATION_LOCK,))
            self.db.create_tables([self.m.SchemaVersion], safe=True)
            current = self.schema_version()  # again: another process may have upgraded meanwhile
            if current > latest:
                raise StoreError(f"the database schema is version {current}, newer than this fsrouter "
                                 f"knows ({latest}): upgrade fsrouter")
            migrator = SchemaMigrator.from_database(self.db)
            applied = self._applied()
            for version, name, step in MIGRATIONS:
                # Every step not applied yet, also one numbered below the current version (steps
                # from branches that landed in another order); each step is idempotent.
                if version not in applied:
                    step(self.db, migrator, self.m)
                    self.m.SchemaVersion.create(version=version, name=name, applied_at=datetime.now(UTC))

    @_reconnects
    def settings(self) -> Settings:
        rows = {row.key: row.value for row in self.m.Setting.select()}
        try:
            return Settings.from_text(rows)
        except (KeyError, ValueError) as exc:
            raise StoreError(f"a stored setting is invalid: {_one_line(exc)}") from None

    def set_setting(self, key: str, text: str) -> Settings:
        with self.transaction():
            try:
                settings = self.settings().with_text(key, text)
            except KeyError as exc:
                raise StoreError(_one_line(exc.args[0] if exc.args else exc)) from None
            except ValueError as exc:
                raise StoreError(f"{key}: {_one_line(exc)}") from None
            value = settings.as_text()[key]
            (self.m.Setting.insert(key=key, value=value)
             .on_conflict(conflict_target=[self.m.Setting.key], preserve=[self.m.Setting.value]).execute())
        return settings
