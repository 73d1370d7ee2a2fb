"""The database: agents, groups, bindings, call records and settings, behind one small class.

SQLite or PostgreSQL through peewee. The schema is created and upgraded on open (MIGRATIONS);
times are stored as naive UTC and come back timezone-aware. Model classes are made per Store,
so two stores (two databases) can be open in one process without rebinding shared classes.
"""
from __future__ import annotations

import functools
import hashlib
import json
import re
import uuid
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Self

import peewee as pw
from playhouse import db_url
from playhouse.migrate import SchemaMigrator

from . import hours, overrides, rules
from .missed import CALLBACK, closed_by, closes_missed
from .model import (
    AUTO,
    DIRECTIONS,
    EXTENSION_RE,
    GROUP_NAME_RE,
    MANUAL,
    SCOPE_ANY,
    SIMULTANEOUS,
    SOURCES,
    STICKY_SCOPES,
    STRATEGIES,
    Agent,
    Binding,
    Call,
    Group,
    default_dial_string,
)
from .settings import Settings
from .webhooks import Event, binding_changed, call_events, callback_done

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_E164 = re.compile(r"^\+[1-9][0-9]{5,16}$")
# SQLite allows 32766 bound parameters per statement since 3.32; stay well below it.
_MAX_PARAMS = 30000
# How often learn() re-reads and retries when another process changed the binding meanwhile.
_LEARN_ATTEMPTS = 20
# Any constant: PostgreSQL processes opening the database serialise their migrations on it.
_PG_MIGRATION_LOCK = 0x66737274
# Namespace of the uuids made for calls that come without one (see _with_uuid).
_CALL_NAMESPACE = uuid.UUID("6f1c3d2e-8a4b-4c57-9e0f-2b7d5a1c9e33")


class StoreError(ValueError):
    """Bad input for the store (unknown agent, duplicate, ...); the message is one line."""


class _Raced(Exception):
    """Another process wrote a learned binding that a batch write expected to be absent."""


class UTCDateTimeField(pw.DateTimeField):
    """Naive UTC in the database, aware UTC in Python.

    On SQLite the text always has microseconds, so text order is time order and the
    compare-and-swap in learn() compares equal values equal.
    """

    def db_value(self, value):
        if value is None:
            return None
        if value.tzinfo is not None:
            value = value.astimezone(UTC)
        value = value.replace(tzinfo=None)  # naive input is taken as UTC already
        if isinstance(self.model._meta.database, pw.SqliteDatabase):
            # The same text as the strftime, three times faster; strftime leaves years below 1000 unpadded.
            if value.year >= 1000:
                return value.isoformat(" ", "microseconds")
            return value.strftime("%Y-%m-%d %H:%M:%S.%f")
        return value

    def python_value(self, value):
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _models(db: pw.Database) -> SimpleNamespace:
    class Base(pw.Model):
        class Meta:
            database = db

    class SchemaVersion(Base):
        version = pw.IntegerField(primary_key=True)
        name = pw.TextField()
        applied_at = UTCDateTimeField()

        class Meta:
            table_name = "schema_version"

    class SettingRow(Base):
        key = pw.TextField(primary_key=True)
        value = pw.TextField()

        class Meta:
            table_name = "setting"

    class AgentRow(Base):
        ext = pw.TextField(primary_key=True)
        name = pw.TextField()
        dial_string = pw.TextField()
        priority = pw.IntegerField(default=100)
        enabled = pw.BooleanField(default=True)
        crm_id = pw.TextField(null=True, unique=True)  # added by migration 4 (the CRM)
        dnd = pw.BooleanField(default=False)  # added by migration 3 (presence)

        class Meta:
            table_name = "agent"

    class GroupRow(Base):
        name = pw.TextField(primary_key=True)
        strategy = pw.TextField(default=SIMULTANEOUS)
        sticky_scope = pw.TextField(default=SCOPE_ANY)
        ring_timeout = pw.FloatField(default=30.0)  # seconds
        # Added by migration 3 (hours and per-group settings).
        sticky_hours = pw.TextField(default="")
        timezone = pw.TextField(default="")
        overrides = pw.TextField(default="")  # JSON object: setting key -> text

        class Meta:
            table_name = "agent_group"  # "group" is an SQL keyword

    class MemberRow(Base):
        agent = pw.ForeignKeyField(AgentRow, column_name="agent", on_delete="CASCADE")
        grp = pw.ForeignKeyField(GroupRow, column_name="group_name", on_delete="CASCADE")

        class Meta:
            table_name = "membership"
            primary_key = pw.CompositeKey("agent", "grp")

    class BindingRow(Base):
        # No foreign key to agent on purpose: a deleted agent's bindings are kept (binding list --stale).
        client = pw.TextField()
        source = pw.TextField()
        agent = pw.TextField(index=True)
        at = UTCDateTimeField()
        expires_at = UTCDateTimeField(null=True)
        why = pw.TextField(default="")
        call_uuid = pw.TextField(null=True)

        class Meta:
            table_name = "binding"
            # The primary key is the index of the per-call point query (client = ?).
            primary_key = pw.CompositeKey("client", "source")

    class CallRow(Base):
        uuid = pw.TextField(primary_key=True)
        direction = pw.TextField()
        client = pw.TextField()
        agent = pw.TextField(null=True)
        started_at = UTCDateTimeField(index=True)
        ended_at = UTCDateTimeField()
        talk_seconds = pw.FloatField(default=0.0)
        answered = pw.BooleanField(default=False)
        group_name = pw.TextField(null=True)
        answered_at = UTCDateTimeField(null=True)
        rung = pw.TextField(default="")  # comma-separated extensions, in ring order
        route = pw.TextField(null=True)
        outcome = pw.TextField(default="")
        sticky_agent = pw.TextField(null=True)  # added by migration 2 (callbacks and rebinds)

        class Meta:
            table_name = "call_record"
            indexes = ((("client", "started_at"), False),)

    class BindingHistoryRow(Base):
        # Each change of a client's learned agent, written with the change (see Store.learn).
        id = pw.AutoField()
        client = pw.TextField()
        from_agent = pw.TextField(null=True)  # None: the client had no learned binding
        to_agent = pw.TextField()
        at = UTCDateTimeField(index=True)  # when the call that made the change ended
        call_uuid = pw.TextField(null=True)

        class Meta:
            table_name = "binding_history"

    return SimpleNamespace(SchemaVersion=SchemaVersion, Setting=SettingRow, Agent=AgentRow, Group=GroupRow,
                           Member=MemberRow, Binding=BindingRow, Call=CallRow,
                           BindingHistory=BindingHistoryRow)



def _outbox_model(db: pw.Database, m: SimpleNamespace) -> None:
    class OutboxRow(pw.Model):
        """One event for one webhook URL (outbox.py sends it). Written in the transaction of the
        change it reports; a delivery claims it by moving next_at forward (compare-and-swap)."""
        id = pw.AutoField()
        event_id = pw.TextField()
        event_type = pw.TextField()
        target = pw.TextField()  # the URL
        body = pw.TextField()  # the JSON, exactly as signed and sent
        created_at = UTCDateTimeField()
        next_at = UTCDateTimeField()  # when to try next
        attempts = pw.IntegerField(default=0)
        state = pw.TextField(default="pending")  # pending | sent | dead
        last_error = pw.TextField(default="")
        sent_at = UTCDateTimeField(null=True)

        class Meta:
            database = db
            table_name = "outbox"
            indexes = ((("state", "next_at"), False), (("event_id", "target"), True))

    m.Outbox = OutboxRow


# -- migrations --------------------------------------------------------------------------------
# Each step runs inside the one transaction that also records its version, so a failed upgrade
# leaves the database as it was. Version 1 creates the tables from the models above; when a model
# changes, add a step (migrator.add_column, ...) and freeze the old definition into step 1 first.

def _v1_initial(db, migrator, m):
    db.create_tables([m.Setting, m.Agent, m.Group, m.Member, m.Binding, m.Call], safe=True)


def _v2_callbacks_and_rebinds(db, migrator, m):
    # Idempotent: a database made by step 1 from today's models already has the column.
    if "sticky_agent" not in {c.name for c in db.get_columns("call_record")}:
        from playhouse.migrate import migrate

        migrate(migrator.add_column("call_record", "sticky_agent", pw.TextField(null=True)))
    db.create_tables([m.BindingHistory], safe=True)


def _v3_presence_hours_clients(db, migrator, m):
    # Idempotent: a database made by step 1 from today's models already has the columns.
    from playhouse.migrate import migrate

    steps = []
    have = {c.name for c in db.get_columns("agent")}
    if "dnd" not in have:
        steps.append(migrator.add_column("agent", "dnd", pw.BooleanField(default=False)))
    have = {c.name for c in db.get_columns("agent_group")}
    for column in ("sticky_hours", "timezone", "overrides"):
        if column not in have:
            steps.append(migrator.add_column("agent_group", column, pw.TextField(default="")))
    if steps:
        migrate(*steps)
    db.create_tables([m.ClientNumber, m.Block], safe=True)



def _v4_outbox_and_crm_ids(db, migrator, m):
    # Idempotent: a database made by step 1 from today's models already has the column.
    if "crm_id" not in {c.name for c in db.get_columns("agent")}:
        from playhouse.migrate import migrate

        migrate(migrator.add_column("agent", "crm_id", pw.TextField(null=True)),
                migrator.add_index("agent", ("crm_id",), unique=True))
    db.create_tables([m.Outbox], safe=True)


MIGRATIONS = [
    (1, "initial schema", _v1_initial),
    (2, "call sticky agent, binding history", _v2_callbacks_and_rebinds),
    (3, "agent dnd, group hours and settings, client numbers, blocks", _v3_presence_hours_clients),
    (4, "outbox, agent crm ids", _v4_outbox_and_crm_ids),
]


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


class Store:
    def __init__(self, db: pw.Database):
        self.db = db
        self.m = _models(db)
        _outbox_model(db, self.m)
        self.webhook_urls: tuple[str, ...] = ()  # set: changes write events to the outbox
        self.on_event = None  # called after events were written (wakes the sender)
        _client_models(db, self.m)
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
        self._upsert_call_sql = _upsert_sql(table_c, self._call_columns, ["uuid"], p)
        self._insert_learned_sql = (
            f'INSERT INTO {table_b} ({_names(self._binding_columns)}) VALUES ({", ".join([p] * 7)}) '
            f'ON CONFLICT ("client", "source") DO NOTHING')
        # The compare-and-swap: replace the learned binding only if it is still the one we read.
        self._swap_learned_sql = (
            f'UPDATE {table_b} SET "agent" = {p}, "at" = {p}, "expires_at" = NULL, "why" = {p}, '
            f'"call_uuid" = {p} WHERE "client" = {p} AND "source" = {p} AND "at" = {p} AND "agent" = {p} '
            f'AND "why" = {p} AND ("call_uuid" = {p} OR ("call_uuid" IS NULL AND {p} IS NULL))')

    @classmethod
    def open(cls, url: str) -> Store:
        db = _connect(url)
        try:
            db.connect()
        except pw.OperationalError as exc:
            raise StoreError(f"cannot open database {_redact(url)}: {_one_line(exc)}") from None
        try:
            return cls(db)
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

    # -- schema ----------------------------------------------------------------------------------
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

    # -- settings --------------------------------------------------------------------------------
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

    # -- agents ----------------------------------------------------------------------------------
    @_reconnects
    def agents(self) -> dict[str, Agent]:
        groups: dict[str, set[str]] = {}
        for agent, group in self.m.Member.select(self.m.Member.agent, self.m.Member.grp).tuples():
            groups.setdefault(agent, set()).add(group)
        return {
            row.ext: Agent(ext=row.ext, name=row.name, dial_string=row.dial_string, priority=row.priority,
                           crm_id=row.crm_id,
                           enabled=bool(row.enabled), groups=frozenset(groups.get(row.ext, ())),
                           dnd=bool(row.dnd))
            for row in self.m.Agent.select().order_by(self.m.Agent.ext)
        }

    def agent(self, ext: str) -> Agent | None:
        return self.agents().get(ext)

    def add_agent(self, ext: str, name: str, dial_string: str | None = None, priority: int = 100,
                  groups=()) -> Agent:
        if not isinstance(ext, str) or not EXTENSION_RE.fullmatch(ext):
            raise StoreError(f"bad extension {ext!r}: use 1-32 letters, digits, '_', '.' or '-'")
        name = _clean_name(name)
        dial_string = _clean_dial_string(dial_string) if dial_string else default_dial_string(ext)
        priority = _clean_priority(priority)
        groups = tuple(dict.fromkeys(groups))
        with self.transaction():
            if self.m.Agent.get_or_none(self.m.Agent.ext == ext) is not None:
                raise StoreError(f"agent {ext} already exists")
            self._require_groups(groups)
            self.m.Agent.create(ext=ext, name=name, dial_string=dial_string, priority=priority, enabled=True)
            for group in groups:
                self.m.Member.create(agent=ext, grp=group)
        return self.agents()[ext]

    def update_agent(self, ext: str, name: str | None = None, dial_string: str | None = None,
                     priority: int | None = None) -> Agent:
        changes = {}
        if name is not None:
            changes["name"] = _clean_name(name)
        if dial_string is not None:
            changes["dial_string"] = (_clean_dial_string(dial_string) if dial_string
                                      else default_dial_string(ext))
        if priority is not None:
            changes["priority"] = _clean_priority(priority)
        with self.transaction():
            self._require_agent(ext)
            if changes:
                self.m.Agent.update(**changes).where(self.m.Agent.ext == ext).execute()
        return self.agents()[ext]

    def set_agent_crm_id(self, ext: str, crm_id: str | None) -> Agent:
        """The agent's user id in the CRM (a CRM lookup's answer maps to them); None or "" clears it."""
        crm_id = (crm_id or "").strip() or None
        if crm_id is not None and (len(crm_id) > 128 or _CONTROL.search(crm_id)):
            raise StoreError("the CRM id must be at most 128 characters, without control characters")
        with self.transaction():
            self._require_agent(ext)
            holder = self.m.Agent.get_or_none(self.m.Agent.crm_id == crm_id) if crm_id else None
            if holder is not None and holder.ext != ext:
                raise StoreError(f"CRM id {crm_id!r} is already agent {holder.ext}'s")
            self.m.Agent.update(crm_id=crm_id).where(self.m.Agent.ext == ext).execute()
        return self.agents()[ext]

    def set_agent_enabled(self, ext: str, enabled: bool) -> None:
        with self.transaction():
            self._require_agent(ext)
            self.m.Agent.update(enabled=bool(enabled)).where(self.m.Agent.ext == ext).execute()

    def remove_agent(self, ext: str) -> None:
        """The agent and their group memberships go; their bindings stay (shown as stale)."""
        with self.transaction():
            self._require_agent(ext)
            self.m.Member.delete().where(self.m.Member.agent == ext).execute()
            self.m.Agent.delete().where(self.m.Agent.ext == ext).execute()

    def _require_agent(self, ext: str) -> None:
        if self.m.Agent.get_or_none(self.m.Agent.ext == ext) is None:
            raise StoreError(f"unknown agent {ext!r}")

    # -- groups ----------------------------------------------------------------------------------
    @_reconnects
    def groups(self) -> dict[str, Group]:
        return {row.name: _group(row) for row in self.m.Group.select().order_by(self.m.Group.name)}

    def group(self, name: str) -> Group | None:
        row = self.m.Group.get_or_none(self.m.Group.name == name)
        return _group(row) if row is not None else None

    def add_group(self, name: str, strategy: str = SIMULTANEOUS, sticky_scope: str = SCOPE_ANY,
                  ring_timeout: timedelta = timedelta(seconds=30)) -> Group:
        if not isinstance(name, str) or not GROUP_NAME_RE.fullmatch(name):
            raise StoreError(f"bad group name {name!r}: use 1-64 letters, digits, '_', '.' or '-'")
        if strategy not in STRATEGIES:
            raise StoreError(f"bad strategy {strategy!r}: one of {', '.join(STRATEGIES)}")
        if sticky_scope not in STICKY_SCOPES:
            raise StoreError(f"bad sticky scope {sticky_scope!r}: one of {', '.join(STICKY_SCOPES)}")
        if not isinstance(ring_timeout, timedelta) or ring_timeout <= timedelta(0):
            raise StoreError("ring timeout must be above zero")
        with self.transaction():
            if self.m.Group.get_or_none(self.m.Group.name == name) is not None:
                raise StoreError(f"group {name} already exists")
            self.m.Group.create(name=name, strategy=strategy, sticky_scope=sticky_scope,
                                ring_timeout=ring_timeout.total_seconds())
        return self.group(name)

    def remove_group(self, name: str) -> None:
        """The group and its memberships go; its agents stay."""
        with self.transaction():
            self._require_groups([name])
            self.m.Member.delete().where(self.m.Member.grp == name).execute()
            self.m.Group.delete().where(self.m.Group.name == name).execute()

    def add_member(self, group: str, ext: str) -> None:
        with self.transaction():
            self._require_groups([group])
            self._require_agent(ext)
            self.m.Member.insert(agent=ext, grp=group).on_conflict_ignore().execute()

    def remove_member(self, group: str, ext: str) -> None:
        with self.transaction():
            self._require_groups([group])
            self._require_agent(ext)
            self.m.Member.delete().where(self.m.Member.grp == group, self.m.Member.agent == ext).execute()

    def _require_groups(self, names) -> None:
        names = set(names)
        if not names:
            return
        known = {name for (name,) in self.m.Group.select(self.m.Group.name)
                 .where(self.m.Group.name.in_(list(names))).tuples()}
        missing = sorted(names - known)
        if missing:
            raise StoreError(f"unknown group {missing[0]!r}")

    # -- bindings --------------------------------------------------------------------------------
    @_reconnects
    def bindings_for(self, client: str) -> dict[str, Binding]:
        """The client's bindings keyed by source (a routing decision reads them with the number's
        client, in routing_inputs)."""
        cursor = self.db.execute_sql(self._bindings_sql, (client,))
        return {source: self._binding_of_row(client, source, *rest) for source, *rest in cursor.fetchall()}

    def _binding_of_row(self, client, source, agent, at, expires_at, why, call_uuid) -> Binding:
        """A Binding from the stored columns (times as the database gives them)."""
        to_time = self.m.Binding.at.python_value
        return Binding(client=client, agent=agent, source=source, at=to_time(at), expires_at=to_time(expires_at),
                       why=why or "", call_uuid=call_uuid)

    def set_manual_binding(self, client: str, agent: str, now: datetime, expires_at: datetime | None = None,
                           why: str = "set by hand") -> Binding:
        _require_client(client)
        client, _, blocked = self.client_of(client)  # a linked number binds its client
        if agent in blocked:
            raise StoreError(f"client {client} is kept away from agent {agent} (binding unblock first)")
        if expires_at is not None and expires_at <= now:
            raise StoreError("the expiry must be in the future")
        binding = Binding(client=client, agent=agent, source=MANUAL, at=now, expires_at=expires_at,
                          why=_one_line(why))
        with self.transaction():
            self._require_agent(agent)
            old = self.bindings_for(client).get(MANUAL) if self.webhook_urls else None
            self._upsert_bindings([binding])
            if self.webhook_urls and (old is None or old.agent != agent):
                self._notify([binding_changed(client, MANUAL, old, binding, binding.why, now)])
        return binding

    def remove_bindings(self, client: str, sources=SOURCES) -> int:
        client = self.client_of(client)[0]
        sources = list(sources)
        unknown = set(sources) - set(SOURCES)
        if unknown:
            raise StoreError(f"bad binding source {min(unknown)!r}: one of {', '.join(SOURCES)}")
        binding = self.m.Binding
        if not self.webhook_urls:
            return binding.delete().where(binding.client == client, binding.source.in_(sources)).execute()
        with self.transaction():
            old = self.bindings_for(client)
            removed = binding.delete().where(binding.client == client, binding.source.in_(sources)).execute()
            now = datetime.now(UTC)
            self._notify([binding_changed(client, source, old[source], None, "removed", now)
                          for source in SOURCES if source in sources and source in old])
        return removed

    def list_bindings(self, agent: str | None = None, stale: bool = False, now: datetime | None = None,
                      settings: Settings | None = None) -> list[Binding]:
        """All bindings (of one agent), by client then source; `stale`: only those that cannot route.

        Stale means the agent is disabled or gone, or the binding expired or (learned) is older than
        the look-back window, as of `now`.
        """
        b, a = self.m.Binding, self.m.Agent
        query = (b.select(b.client, b.agent, b.source, b.at, b.expires_at, b.why, b.call_uuid)
                 .order_by(b.client, b.source))
        if agent is not None:
            query = query.where(b.agent == agent)
        if stale:
            now = now or datetime.now(UTC)
            settings = settings or self.settings()
            agent_missing = a.select(a.ext).where((a.ext == b.agent) & (a.enabled == True))
            condition = ~pw.fn.EXISTS(agent_missing) | (b.expires_at.is_null(False) & (b.expires_at <= now))
            if settings.lookback > timedelta(0):
                condition |= (b.source == AUTO) & (b.at < now - settings.lookback)
            query = query.where(condition)
        return [Binding(client=row.client, agent=row.agent, source=row.source, at=row.at,
                        expires_at=row.expires_at, why=row.why or "", call_uuid=row.call_uuid)
                for row in query]

    def import_bindings(self, rows, now: datetime, why: str = "imported") -> int:
        """Manual bindings from (client, agent) pairs, all or none; a later pair for a client wins."""
        pairs = dict(rows)
        for client in pairs:
            _require_client(client)
        known = {ext for (ext,) in self.m.Agent.select(self.m.Agent.ext).tuples()}
        missing = sorted(set(pairs.values()) - known)
        if missing:
            raise StoreError(f"unknown agent {missing[0]!r}")
        # A linked number binds its client (one read of all links, not one per row).
        cn = self.m.ClientNumber
        owners = dict(cn.select(cn.number, cn.client).where(cn.number != cn.client).tuples())
        pairs = {owners.get(client, client): agent for client, agent in pairs.items()}
        bindings = [Binding(client=client, agent=agent, source=MANUAL, at=now, why=why)
                    for client, agent in pairs.items()]
        with self.transaction():
            self._upsert_bindings(bindings)
        return len(bindings)

    def _upsert_bindings(self, bindings) -> None:
        # One multi-row statement per chunk: a CRM import is a million rows.
        to_db = self.m.Binding.at.db_value
        columns = self._binding_columns
        rows_per_statement = _MAX_PARAMS // len(columns)
        for chunk in pw.chunked(bindings, rows_per_statement):
            params = []
            for x in chunk:
                params += (x.client, x.source, x.agent, to_db(x.at), to_db(x.expires_at), x.why, x.call_uuid)
            sql = _upsert_sql(f'"{self.m.Binding._meta.table_name}"', columns, ["client", "source"],
                              self.db.param, rows=len(chunk))
            self.db.execute_sql(sql, params)

    # -- presence, hours, clients, handover (docs/presence-and-hours.md) -------------------------
    def set_agent_dnd(self, ext: str, on: bool) -> None:
        with self.transaction():
            self._require_agent(ext)
            self.m.Agent.update(dnd=bool(on)).where(self.m.Agent.ext == ext).execute()

    def set_group_options(self, name: str, sticky_hours: str | None = None, timezone: str | None = None,
                          settings: dict[str, str] | None = None, unset=()) -> Group:
        """Sticky hours ("" = always), time zone ("" = UTC) and the group's own settings (`unset`:
        keys that go back to the global value)."""
        with self.transaction():
            row = self.m.Group.get_or_none(self.m.Group.name == name)
            if row is None:
                raise StoreError(f"unknown group {name!r}")
            changes = {}
            spec = row.sticky_hours if sticky_hours is None else " ".join(sticky_hours.split())
            zone = row.timezone if timezone is None else timezone.strip()
            try:
                if spec:
                    hours.parse(spec, zone or None)
                elif zone:
                    hours.zone(zone)
                own = dict(json.loads(row.overrides) if row.overrides else {})
                for key in unset:
                    if key not in overrides.GROUP_KEYS:
                        raise ValueError(f"a group cannot set {key!r}: only {', '.join(overrides.GROUP_KEYS)}")
                    own.pop(key, None)
                own.update(settings or {})
                own = dict(overrides.check(own.items()))
            except ValueError as exc:
                raise StoreError(_one_line(exc)) from None
            changes = {"sticky_hours": spec, "timezone": zone,
                       "overrides": json.dumps(own, sort_keys=True) if own else ""}
            self.m.Group.update(**changes).where(self.m.Group.name == name).execute()
        return self.group(name)

    @_reconnects
    def routing_inputs(self, number: str) -> tuple[str, bool, frozenset[str], dict[str, Binding]]:
        """client_of(number) and bindings_for(its client) in one statement: a routing decision's
        only database round trip (on PostgreSQL each one is a wait on the network)."""
        sql = getattr(self, "_routing_sql", None)
        if sql is None:
            n, k = f'"{self.m.ClientNumber._meta.table_name}"', f'"{self.m.Block._meta.table_name}"'
            b, p = f'"{self.m.Binding._meta.table_name}"', self.db.param
            sql = self._routing_sql = (
                f'SELECT c."client", c."shared", k."agent", b."source", b."agent", b."at", b."expires_at", '
                f'b."why", b."call_uuid" FROM (SELECT COALESCE((SELECT "client" FROM {n} WHERE "number" = {p}), '
                f'{p}) AS "client", (SELECT "shared" FROM {n} WHERE "number" = {p}) AS "shared") c '
                f'LEFT JOIN {k} k ON k."client" = c."client" LEFT JOIN {b} b ON b."client" = c."client"')
        rows = self.db.execute_sql(sql, (number, number, number)).fetchall()
        owner, shared = rows[0][0], bool(rows[0][1])
        bindings = {row[3]: self._binding_of_row(owner, *row[3:]) for row in rows if row[3] is not None}
        return owner, shared, frozenset(r[2] for r in rows if r[2] is not None), bindings

    def client_of(self, number: str) -> tuple[str, bool, frozenset[str]]:
        """(client id, shared?, agents the client is kept away from) of a number: one indexed read."""
        sql = getattr(self, "_client_sql", None)
        if sql is None:
            n, k = f'"{self.m.ClientNumber._meta.table_name}"', f'"{self.m.Block._meta.table_name}"'
            sql = self._client_sql = (f'SELECT n."client", n."shared", k."agent" FROM {n} n LEFT JOIN {k} k '
                                      f'ON k."client" = n."client" WHERE n."number" = {self.db.param}')
        rows = self.db.execute_sql(sql, (number,)).fetchall()
        if not rows:
            return number, False, frozenset()
        return rows[0][0], bool(rows[0][1]), frozenset(r[2] for r in rows if r[2] is not None)

    def numbers_of(self, client: str) -> list[str]:
        cn = self.m.ClientNumber
        found = {n for (n,) in cn.select(cn.number).where(cn.client == client).tuples()}
        return sorted(found | {client})

    def _own_row(self, number: str, client: str) -> None:
        cn = self.m.ClientNumber
        cn.insert(number=number, client=client, shared=False).on_conflict_ignore().execute()

    def link_numbers(self, number: str, other: str) -> str:
        """`other` (and every number of its client) joins `number`'s client; their bindings merge
        (the client's own manual binding wins; of two learned ones the later call). The client id."""
        _require_client(number)
        _require_client(other)
        cn, b, k = self.m.ClientNumber, self.m.Binding, self.m.Block
        with self.transaction():
            target, _, _ = self.client_of(number)
            source, _, _ = self.client_of(other)
            self._own_row(number, target)
            self._own_row(target, target)
            if source != target:
                self._own_row(source, source)
                self._own_row(other, source)
                cn.update(client=target).where(cn.client == source).execute()
                mine, theirs = self.bindings_for(target), self.bindings_for(source)
                for kind, binding in theirs.items():
                    held = mine.get(kind)
                    if held is None or (kind == AUTO and (binding.at, binding.agent) > (held.at, held.agent)):
                        self._upsert_bindings([replace(binding, client=target)])
                b.delete().where(b.client == source).execute()
                for (agent,) in k.select(k.agent).where(k.client == source).tuples():
                    k.insert(client=target, agent=agent).on_conflict_ignore().execute()
                k.delete().where(k.client == source).execute()
        return target

    def unlink_number(self, number: str) -> str:
        """`number` leaves its client and is a client of its own from now on, with no bindings:
        the client keeps its bindings and blocks (and, when `number` was the client's id, moves
        them to its lowest other number). The client it left; StoreError when it was not linked."""
        _require_client(number)
        cn, b, k = self.m.ClientNumber, self.m.Binding, self.m.Block
        with self.transaction():
            owner, _, _ = self.client_of(number)
            others = [n for n in self.numbers_of(owner) if n != number]
            if not others:
                raise StoreError(f"{number} is not linked to another number")
            if number == owner:  # the client goes on under another of its numbers
                owner = others[0]
                self._own_row(owner, number)
                cn.update(client=owner).where(cn.client == number).execute()
                b.update(client=owner).where(b.client == number).execute()
                k.update(client=owner).where(k.client == number).execute()
            self._own_row(number, number)
            cn.update(client=number).where(cn.number == number).execute()
        return owner

    def set_shared(self, number: str, on: bool) -> None:
        """A shared number (switchboard) never binds and never routes sticky."""
        _require_client(number)
        cn = self.m.ClientNumber
        with self.transaction():
            self._own_row(number, self.client_of(number)[0])
            cn.update(shared=bool(on)).where(cn.number == number).execute()

    def block(self, number: str, ext: str) -> tuple[str, int]:
        """Keep the client of `number` away from agent `ext`: (client id, learned bindings dropped)."""
        _require_client(number)
        b = self.m.Binding
        with self.transaction():
            self._require_agent(ext)
            client = self.client_of(number)[0]
            self._own_row(number, client)
            self._own_row(client, client)
            self.m.Block.insert(client=client, agent=ext).on_conflict_ignore().execute()
            dropped = b.delete().where(b.client == client, b.source == AUTO, b.agent == ext).execute()
        return client, dropped

    def unblock(self, number: str, ext: str) -> int:
        k = self.m.Block
        return k.delete().where(k.client == self.client_of(number)[0], k.agent == ext).execute()

    def blocks(self, client: str | None = None) -> list[tuple[str, str]]:
        k = self.m.Block
        query = k.select(k.client, k.agent).order_by(k.client, k.agent)
        if client is not None:
            query = query.where(k.client == client)
        return list(query.tuples())

    def release_learned(self, ext: str) -> int:
        """Drop every learned binding to `ext` (the agent left or was disabled): their clients'
        next calls ring the group and teach a new binding. Manual ones stay for a human."""
        b = self.m.Binding
        return b.delete().where(b.agent == ext, b.source == AUTO).execute()

    def handover(self, ext: str, other: str) -> tuple[int, int]:
        """Every binding of `ext` moves to `other` in one transaction: (moved, left behind). A
        client kept away from `other` is not moved: its learned binding is dropped, its manual one
        stays on `ext` (binding list --stale)."""
        if ext == other:
            raise StoreError("hand over to another agent")
        b, k = self.m.Binding, self.m.Block
        with self.transaction():
            self._require_agent(other)
            kept_away = pw.fn.EXISTS(k.select(k.agent).where((k.client == b.client) & (k.agent == other)))
            moved = b.update(agent=other).where((b.agent == ext) & ~kept_away).execute()
            self.release_learned(ext)
            left = b.select().where(b.agent == ext).count()
        return moved, left

    def forget_after_misses(self, call: Call, misses: int) -> Binding | None:
        """max_sticky_misses: when the client's last `misses` inbound calls all rang the same bound
        agent's sticky leg and none was answered by that agent, drop that learned binding (returned)."""
        agent = _sticky_agent(call)
        if misses <= 0 or call.direction != "inbound" or agent is None or call.agent == agent:
            return None
        client = self.client_of(call.client)[0]
        learned = self.bindings_for(client).get(AUTO)
        if learned is None or learned.agent != agent:
            return None
        c = self.m.Call
        rows = list(c.select().where(c.client == call.client, c.direction == "inbound")
                    .order_by(c.started_at.desc()).limit(misses))
        if len(rows) < misses or any(_sticky_agent(r) != agent or r.agent == agent for r in rows):
            return None
        b = self.m.Binding
        gone = b.delete().where(b.client == client, b.source == AUTO, b.agent == agent).execute()
        return learned if gone else None

    # -- calls and learning ----------------------------------------------------------------------
    @_reconnects
    def save_call(self, call: Call) -> Call:
        """Insert or update the call record by uuid (a uuid is made when it has none)."""
        call = _with_uuid(call)
        if call.direction not in DIRECTIONS:
            raise StoreError(f"bad call direction {call.direction!r}")
        self.db.execute_sql(self._upsert_call_sql, self._call_params(call))
        return call

    def _call_params(self, call: Call) -> tuple:
        to_db = self.m.Call.started_at.db_value
        return (call.uuid, call.direction, call.client, call.agent, to_db(call.started_at),
                to_db(call.ended_at), float(call.talk_seconds), bool(call.answered), call.group,
                to_db(call.answered_at), ",".join(call.rung), call.route, call.outcome or "",
                call.sticky_agent)

    def calls(self, since: datetime | None = None, client: str | None = None,
              limit: int | None = None) -> list[Call]:
        """Call records, newest first."""
        c = self.m.Call
        query = c.select(*self._call_columns).order_by(c.started_at.desc(), c.uuid)
        if since is not None:
            query = query.where(c.started_at >= since)
        if client is not None:
            query = query.where(c.client == client)
        if limit is not None:
            query = query.limit(limit)
        return [_call_of_row(*row) for row in query.tuples()]

    @_reconnects
    def call_counts(self, fields, since: datetime | None = None) -> list[tuple[Call, int]]:
        """The call records started since `since`, grouped by the Call `fields` and the UTC day
        of their start, in one GROUP BY: per group, a Call with those fields (the others empty)
        that started at the group's earliest start, and how many records it stands for."""
        c = self.m.Call
        columns = [_CALL_FIELD_COLUMNS.get(name, name) for name in fields]
        group_by = [getattr(c, column) for column in columns]
        # The stored text begins with the date on SQLite ('2024-05-01 09:30:00.000000', UTC).
        day = pw.fn.substr(c.started_at, 1, 10) if self.is_sqlite else pw.fn.date_trunc("day", c.started_at)
        query = (c.select(*group_by, pw.fn.MIN(c.started_at), pw.fn.COUNT(pw.SQL("*")))
                 .group_by(*group_by, day))
        if since is not None:
            query = query.where(c.started_at >= since)
        to_time, found = c.started_at.python_value, []
        for *values, first, count in query.tuples():
            first = to_time(first)
            call = {"direction": "", "client": "", "agent": None, "started_at": first, "ended_at": first}
            for name, column, value in zip(fields, columns, values):
                call[name] = _CALL_VALUES.get(column, _same)(value)
            found.append((Call(**call), count))
        return found

    @_reconnects
    def missed_call_rows(self, since: datetime | None = None) -> list[Call]:
        """What missed.missed_calls needs, oldest first: every call since `since` of each client
        who has an unanswered inbound call since then (their missed calls, and what followed).

        One query on the (client, started_at) index; callbacks always come after the missed call.
        """
        c = self.m.Call
        missed = c.select(c.client).where(c.direction == "inbound",
                                          (c.answered == False) | c.agent.is_null())
        query = c.select(*self._call_columns).where(c.client.in_(missed))
        if since is not None:
            missed = missed.where(c.started_at >= since)
            query = c.select(*self._call_columns).where(c.client.in_(missed), c.started_at >= since)
        return [_call_of_row(*row) for row in query.order_by(c.started_at, c.uuid).tuples()]

    @_reconnects
    def bindings_of(self, clients) -> dict[str, dict[str, Binding]]:
        """Each client's bindings keyed by source (clients without any are left out)."""
        b = self.m.Binding
        found: dict[str, dict[str, Binding]] = {}
        for chunk in pw.chunked(sorted(set(clients)), _MAX_PARAMS):
            # The SQL by hand: peewee takes longer to write an IN of thousands than the database to run it.
            sql = (f'SELECT {_names(self._binding_columns)} FROM "{b._meta.table_name}" '
                   f'WHERE "client" IN ({self._marks(len(chunk))})')
            rows = self.db.execute_sql(sql, chunk).fetchall()
            for row in rows:
                found.setdefault(row[0], {})[row[1]] = self._binding_of_row(*row)
        return found

    @_reconnects
    def binding_changes(self, since: datetime | None = None, rebinds_only: bool = False) -> list[dict]:
        """Changes of learned agents (binding_history), oldest first, with the group of the call
        that made each (None when that call is not recorded or had no group). `rebinds_only`:
        only those from one agent to another, not a client's first learned binding."""
        h, c = self.m.BindingHistory, self.m.Call
        query = (h.select(h.client, h.from_agent, h.to_agent, h.at, h.call_uuid, c.group_name)
                 .join(c, pw.JOIN.LEFT_OUTER, on=(c.uuid == h.call_uuid)).order_by(h.at, h.id))
        if since is not None:
            query = query.where(h.at >= since)
        if rebinds_only:
            query = query.where(h.from_agent.is_null(False), h.from_agent != h.to_agent)
        to_time = h.at.python_value
        return [{"client": client, "from_agent": from_agent, "to_agent": to_agent, "at": to_time(at),
                 "call_uuid": call_uuid, "group": group}
                for client, from_agent, to_agent, at, call_uuid, group in query.tuples()]

    @_reconnects
    def learn(self, call: Call, settings: Settings) -> Binding | None:
        """Apply the learning rules to one call; the new learned binding, or None if nothing changed.

        Read, decide (rules.learn), then a compare-and-swap write: the row is only replaced if it
        is still what was read. If another process got there first, read again and decide again,
        so whatever the interleaving the call that ended later wins.
        """
        if not call.client:
            return None
        call = _with_uuid(call)
        # A number linked to a client teaches that client; a shared number teaches nobody, and
        # an agent the client is kept away from is never learned.
        client, shared, blocked = self.client_of(call.client)
        if shared or (call.agent is not None and call.agent in blocked):
            return None
        if client != call.client:
            call = replace(call, client=client)
        with self.transaction():
            for _ in range(_LEARN_ATTEMPTS):
                current = self.bindings_for(call.client).get(AUTO)
                new = rules.learn(call, settings, current)
                if new is None:
                    return None
                if self._swap_learned(current, new):
                    if current is None or current.agent != new.agent:
                        self.m.BindingHistory.insert(
                            client=new.client, from_agent=current.agent if current else None,
                            to_agent=new.agent, at=new.at, call_uuid=new.call_uuid).execute()
                    return new
        raise StoreError(f"could not record the binding of {call.client}: it kept changing under us")

    def _swap_learned(self, current: Binding | None, new: Binding) -> bool:
        to_db = self.m.Binding.at.db_value
        if current is None:
            cursor = self.db.execute_sql(self._insert_learned_sql, (
                new.client, AUTO, new.agent, to_db(new.at), None, new.why, new.call_uuid))
        else:
            cursor = self.db.execute_sql(self._swap_learned_sql, (
                new.agent, to_db(new.at), new.why, new.call_uuid,
                new.client, AUTO, to_db(current.at), current.agent, current.why,
                current.call_uuid, current.call_uuid))
        return cursor.rowcount == 1

    @_reconnects
    def record_call(self, call: Call, settings: Settings, notify: bool = True) -> Binding | None:
        """Save the call record and learn from it, in one transaction (live calls and imports alike).

        With webhooks on (and `notify`), the call's events and any change of the learned binding
        go into the outbox in that same transaction.
        """
        with self.transaction():
            call = self.save_call(call)
            if not (notify and self.webhook_urls):
                return self.learn(call, settings)
            before = self.bindings_for(call.client) if call.client else {}
            learned = self.learn(call, settings)
            events = call_events(call, _bound_agent(call, before, settings))
            old = before.get(AUTO)
            if learned is not None and (old is None or old.agent != learned.agent):
                events.append(binding_changed(call.client, AUTO, old, learned, learned.why, learned.at))
            if closes_missed(call) == CALLBACK:
                events += [callback_done(row) for row in closed_by(call, self._calls_before(call))
                           if row.closed_by == CALLBACK]
            self._notify(events)
            return learned

    def _calls_before(self, call: Call, limit: int = 50) -> list[Call]:
        """The client's latest calls up to this one: enough to tell which missed calls are open."""
        c = self.m.Call
        query = (c.select(*self._call_columns).where(c.client == call.client, c.started_at <= call.started_at)
                 .order_by(c.started_at.desc()).limit(limit))
        return [_call_of_row(*row) for row in query.tuples()]

    @_reconnects
    def known_call_uuids(self, uuids) -> set[str]:
        """Which of these call uuids the store has records of."""
        c = self.m.Call
        known: set[str] = set()
        for chunk in pw.chunked(set(uuids), 500):
            known.update(u for (u,) in c.select(c.uuid).where(c.uuid.in_(chunk)).tuples())
        return known

    def record_calls(self, calls, settings: Settings) -> int:
        """Save many calls and learn from them, all in one transaction (an import of call history):
        the records, bindings and binding history are those of record_call(call, settings,
        notify=False) on each call in turn; the number of calls that changed a learned binding.

        In a few statements per thousand calls instead of several per call: the calls are upserted
        in multi-row statements; the learned bindings of their clients are read once (locked on
        PostgreSQL), rules.learn is folded over the calls in their order in memory, and the changed
        bindings and the history are written once. Should another process have learned a first
        binding for one of the clients meanwhile (PostgreSQL), the learning is redone call by call.
        History, not news: no webhook events. `calls` (any iterable) is read to its end before
        anything is written.
        """
        calls = [_with_uuid(call) for call in calls]
        for call in calls:
            if call.direction not in DIRECTIONS:
                raise StoreError(f"bad call direction {call.direction!r}")
        with self.transaction():
            self._save_calls(calls)
            try:
                with self.transaction():  # a savepoint: a lost race undoes only the learning
                    return self._learn_all(calls, settings)
            except _Raced:
                return sum(self.learn(call, settings) is not None for call in calls)

    def _save_calls(self, calls: list[Call]) -> None:
        # A uuid twice in one statement is an error on PostgreSQL: the last values of each uuid,
        # as saving them one by one would leave.
        unique = {call.uuid: call for call in calls}
        columns = self._call_columns
        table = f'"{self.m.Call._meta.table_name}"'
        rows_per_statement = _MAX_PARAMS // len(columns)
        for chunk in pw.chunked(unique.values(), rows_per_statement):
            params = [value for call in chunk for value in self._call_params(call)]
            self.db.execute_sql(_upsert_sql(table, columns, ["uuid"], self.db.param, rows=len(chunk)), params)

    def _learn_all(self, calls: list[Call], settings: Settings) -> int:
        """learn() over `calls` in turn, with one read and one write of the learned bindings."""
        owners = self._clients_of({call.client for call in calls if call.client})
        taught: list[Call] = []
        for call in calls:
            if not call.client:
                continue
            client, shared, blocked = owners.get(call.client, (call.client, False, frozenset()))
            if shared or (call.agent is not None and call.agent in blocked):
                continue
            taught.append(call if client == call.client else replace(call, client=client))
        before = self._learned_bindings({call.client for call in taught})
        current = dict(before)
        history = []
        learned = 0
        for call in taught:
            old = current.get(call.client)
            new = rules.learn(call, settings, old)
            if new is None:
                continue
            learned += 1
            if old is None or old.agent != new.agent:
                history.append((new.client, old.agent if old else None, new.agent, new.at, new.call_uuid))
            current[call.client] = new
        # In index order: a million rows go into the index twice as fast as in the calls' order.
        changed = sorted((b for client, b in current.items() if before.get(client) is not b),
                         key=lambda b: b.client)
        self._insert_learned([b for b in changed if b.client not in before])
        self._upsert_bindings([b for b in changed if b.client in before])  # rows read (and locked) above
        self._insert_history(history)
        return learned

    def _marks(self, count: int) -> str:
        """`count` parameter marks, comma-separated (an IN list)."""
        return ", ".join([self.db.param] * count)

    def _clients_of(self, numbers) -> dict[str, tuple[str, bool, frozenset[str]]]:
        """client_of() of many numbers; numbers that are their own client without blocks are left out."""
        n, k = f'"{self.m.ClientNumber._meta.table_name}"', f'"{self.m.Block._meta.table_name}"'
        found: dict[str, tuple[str, bool, set[str]]] = {}
        for chunk in pw.chunked(list(numbers), _MAX_PARAMS):
            sql = (f'SELECT n."number", n."client", n."shared", k."agent" FROM {n} n LEFT JOIN {k} k '
                   f'ON k."client" = n."client" WHERE n."number" IN ({self._marks(len(chunk))})')
            for number, client, shared, agent in self.db.execute_sql(sql, chunk).fetchall():
                entry = found.setdefault(number, (client, bool(shared), set()))
                if agent is not None:
                    entry[2].add(agent)
        return {number: (client, shared, frozenset(blocked))
                for number, (client, shared, blocked) in found.items()}

    def _learned_bindings(self, clients) -> dict[str, Binding]:
        """The learned binding of each of `clients` that has one; on PostgreSQL the rows stay locked
        until the transaction ends, as learn()'s compare-and-swap would keep them."""
        b = self.m.Binding
        # PostgreSQL: locked in client order, so two imports cannot each hold what the other waits for.
        lock = "" if self.is_sqlite else ' ORDER BY "client" FOR UPDATE'
        found: dict[str, Binding] = {}
        for chunk in pw.chunked(list(clients) if self.is_sqlite else sorted(clients), _MAX_PARAMS - 1):
            sql = (f'SELECT "client", "agent", "at", "expires_at", "why", "call_uuid" '
                   f'FROM "{b._meta.table_name}" '
                   f'WHERE "source" = {self.db.param} AND "client" IN ({self._marks(len(chunk))}){lock}')
            rows = self.db.execute_sql(sql, [AUTO, *chunk]).fetchall()
            for client, *rest in rows:
                found[client] = self._binding_of_row(client, AUTO, *rest)
        return found

    def _insert_learned(self, bindings: list[Binding]) -> None:
        """First learned bindings of their clients, as learn() inserts them; _Raced when another
        process inserted one of them since _learned_bindings read."""
        to_db = self.m.Binding.at.db_value
        columns = self._binding_columns
        table = f'"{self.m.Binding._meta.table_name}"'
        for chunk in pw.chunked(bindings, _MAX_PARAMS // len(columns)):
            values = _values(self.db.param, len(columns), len(chunk))
            params = [value for x in chunk
                      for value in (x.client, AUTO, x.agent, to_db(x.at), None, x.why, x.call_uuid)]
            cursor = self.db.execute_sql(f'INSERT INTO {table} ({_names(columns)}) VALUES {values} '
                                         f'ON CONFLICT ("client", "source") DO NOTHING', params)
            if cursor.rowcount != len(chunk):
                raise _Raced()

    def _insert_history(self, rows: list[tuple]) -> None:
        """binding_history rows (client, from_agent, to_agent, at, call_uuid), ids in list order."""
        h = self.m.BindingHistory
        columns = [h.client, h.from_agent, h.to_agent, h.at, h.call_uuid]
        to_db = h.at.db_value
        table = f'"{h._meta.table_name}"'
        for chunk in pw.chunked(rows, _MAX_PARAMS // len(columns)):
            values = _values(self.db.param, len(columns), len(chunk))
            params = [value for client, from_agent, to_agent, at, call_uuid in chunk
                      for value in (client, from_agent, to_agent, to_db(at), call_uuid)]
            self.db.execute_sql(f"INSERT INTO {table} ({_names(columns)}) VALUES {values}", params)

    def _notify(self, events: list[Event]) -> None:
        """The events into the outbox, one row per webhook URL, in the caller's transaction."""
        if not events or not self.webhook_urls:
            return
        now = datetime.now(UTC)
        rows = [{"event_id": e.id, "event_type": e.type, "target": url, "body": e.body().decode("utf-8"),
                 "created_at": now, "next_at": now} for e in events for url in self.webhook_urls]
        for chunk in pw.chunked(rows, 500):
            self.m.Outbox.insert_many(chunk).on_conflict_ignore().execute()
        if self.on_event is not None:
            self.on_event()


def _call_of_row(uuid, direction, client, agent, started_at, ended_at, talk_seconds, answered, group_name,
                 answered_at, rung, route, outcome, sticky_agent) -> Call:
    """A Call from a call_record row, its columns in Store._call_columns order."""
    return Call(direction=direction, client=client, agent=agent, started_at=started_at,
                ended_at=ended_at, talk_seconds=talk_seconds, answered=bool(answered), uuid=uuid,
                group=group_name, answered_at=answered_at, rung=_rung(rung), route=route, outcome=outcome,
                sticky_agent=sticky_agent)


def _rung(text) -> tuple[str, ...]:
    return tuple(x for x in (text or "").split(",") if x)


def _same(value):
    return value


# Call fields whose call_record column is named otherwise, and columns whose value a Call holds otherwise.
_CALL_FIELD_COLUMNS = {"group": "group_name"}
_CALL_VALUES = {"answered": bool, "rung": _rung}



def _bound_agent(call: Call, before: dict[str, Binding], settings: Settings) -> str | None:
    """Who the client was bound to when the call came: the agent of the sticky leg fsrouter rang,
    else the first binding, in the `sources` order, of a kind the mode routes."""
    if call.sticky_agent:
        return call.sticky_agent
    allowed = {"manual": (MANUAL,), "auto": (AUTO,), "both": (MANUAL, AUTO)}[settings.mode]
    for source in settings.sources:
        if source in allowed and source in before:
            return before[source].agent
    return None


def _with_uuid(call: Call) -> Call:
    """The call, with a uuid derived from what it is when it has none: the same call saved twice
    (a CSV imported twice) is one record, and learning from it again changes nothing."""
    if call.uuid:
        return call
    key = "|".join((call.direction, call.client or "", call.agent or "", call.started_at.isoformat(),
                    call.ended_at.isoformat(), repr(float(call.talk_seconds)), str(bool(call.answered))))
    # dataclasses.replace, at a fifth of its cost: Call has no __post_init__ to run again.
    copy = object.__new__(Call)
    copy.__dict__.update(call.__dict__, uuid=_uuid5(key))
    return copy


def _uuid5(name: str) -> str:
    """str(uuid.uuid5(_CALL_NAMESPACE, name)), without making a UUID object (an import makes a million)."""
    digest = bytearray(hashlib.sha1(_CALL_NAMESPACE.bytes + name.encode("utf-8")).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # the RFC 4122 variant
    x = digest.hex()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


def _names(columns) -> str:
    return ", ".join(f'"{column.column_name}"' for column in columns)


def _values(param: str, width: int, rows: int) -> str:
    """The parameter marks of a multi-row VALUES: (?, ?), (?, ?) ..."""
    return ", ".join(["(" + ", ".join([param] * width) + ")"] * rows)


def _upsert_sql(table: str, columns, conflict: list[str], param: str, rows: int = 1) -> str:
    values = _values(param, len(columns), rows)
    updates = ", ".join(f'"{c.column_name}" = EXCLUDED."{c.column_name}"' for c in columns
                        if c.column_name not in conflict)
    targets = ", ".join(f'"{name}"' for name in conflict)
    return (f"INSERT INTO {table} ({_names(columns)}) VALUES {values} "
            f"ON CONFLICT ({targets}) DO UPDATE SET {updates}")


def _sticky_agent(call) -> str | None:
    """Whose sticky leg rang first on a call (a Call or a call row), when one did."""
    return getattr(call, "sticky_agent", None) or None


def _group(row) -> Group:
    stored = json.loads(row.overrides) if row.overrides else {}
    return Group(name=row.name, strategy=row.strategy, sticky_scope=row.sticky_scope,
                 ring_timeout=timedelta(seconds=row.ring_timeout), sticky_hours=row.sticky_hours or "",
                 timezone=row.timezone or "", overrides=tuple(sorted(stored.items())))


def _client_models(db: pw.Database, m: SimpleNamespace) -> None:
    """The tables of clients as people (migration 3), added to the models `m`."""
    class Base(pw.Model):
        class Meta:
            database = db

    class ClientNumberRow(Base):
        # A number that belongs to a client other than itself, or is shared, or has blocks. A
        # number without a row is its own client. The client id is one of its numbers.
        number = pw.TextField(primary_key=True)
        client = pw.TextField(index=True)
        shared = pw.BooleanField(default=False)

        class Meta:
            table_name = "client_number"

    class BlockRow(Base):
        client = pw.TextField()
        agent = pw.TextField()

        class Meta:
            table_name = "binding_block"
            primary_key = pw.CompositeKey("client", "agent")

    m.ClientNumber, m.Block = ClientNumberRow, BlockRow


def _clean_name(name) -> str:
    if not isinstance(name, str) or not name.strip():
        raise StoreError("the agent needs a name")
    if _CONTROL.search(name):
        raise StoreError("the agent's name must not contain control characters")
    return name.strip()


def _clean_dial_string(text) -> str:
    # The dial string goes verbatim into a bridge command: a newline there would end the command
    # and start another.
    if not isinstance(text, str) or _CONTROL.search(text):
        raise StoreError("the dial string must not contain newlines or control characters")
    return text.strip()


def _clean_priority(priority) -> int:
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise StoreError(f"bad priority {priority!r}: a whole number")
    return priority


def _require_client(client) -> None:
    # The service normalises numbers; this only guards against a raw caller ID reaching the table.
    if not isinstance(client, str) or not _E164.fullmatch(client):
        raise StoreError(f"client {client!r} is not a number in E.164 form (+380501234567)")
