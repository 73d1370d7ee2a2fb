"""The schema: the tables as peewee models, made per database, and the steps that upgrade it.

Model classes are made per Store, so two stores (two databases) can be open in one process
without rebinding shared classes. Times are stored as naive UTC and come back timezone-aware.
"""
from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

import peewee as pw

from ..core.model import SCOPE_ANY, SIMULTANEOUS


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
        supervisors = pw.TextField(default="")  # added by migration 5: extensions, comma-separated

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
        # Each reported change of a client's agent (core/binding_changes.py), written with the
        # change in Store.apply_binding_changes; an expiry once, in Store.report_expiries.
        id = pw.AutoField()
        client = pw.TextField()
        from_agent = pw.TextField(null=True)  # None: the client had no binding of this source
        to_agent = pw.TextField(null=True)  # None: the binding went (migration 6)
        at = UTCDateTimeField(index=True)  # when: the end of the call that made a learned change
        call_uuid = pw.TextField(null=True)
        # Added by migration 6 (every binding change): rows before it are learned changes.
        source = pw.TextField(default="auto")
        kind = pw.TextField(default="learned")  # binding_changes.KINDS
        why = pw.TextField(default="")
        expiry_of = UTCDateTimeField(null=True)  # an expiry: the `at` of the binding that expired

        class Meta:
            table_name = "binding_history"
            # An expiry is reported once, whichever daemon sees it first (NULLs are all distinct).
            indexes = ((("client", "source", "expiry_of"), True),)

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
        # Added by migration 5: a call's uuid on its call.* events, which are sent in the order
        # written (Outbox.due); None for events of no call.
        in_order = pw.TextField(null=True)

        class Meta:
            database = db
            table_name = "outbox"
            # (state, id): the sender's due rows, oldest first, read off the index up to its
            # LIMIT rather than sorted whole (Outbox.due: 4.1 -> 0.4 ms on SQLite, 15 -> 1.2 ms
            # on PostgreSQL, with 3,000 rows pending among 30,000). It replaces (state, next_at)
            # (migration 8), which nothing needs any more: each index is paid for on every row
            # written, 4 rows a call with the live events (the INSERT was 5% of an ingestion blast).
            indexes = ((("state", "id"), False), (("event_id", "target"), True),
                       (("in_order", "state"), False))

    m.Outbox = OutboxRow


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


def _gap_models(db: pw.Database, m: SimpleNamespace) -> None:
    """The tables of migration 5, added to the models `m`."""
    class Base(pw.Model):
        class Meta:
            database = db

    class LossWindowRow(Base):
        id = pw.AutoField()
        node = pw.TextField()  # config `node`: each daemon listens to its own FreeSWITCH
        opened_at = UTCDateTimeField()
        closed_at = UTCDateTimeField(null=True)
        why = pw.TextField()
        detail = pw.TextField(default="")
        recovered = pw.IntegerField(default=0)
        learned = pw.IntegerField(default=0)

        class Meta:
            table_name = "loss_window"
            indexes = ((("node", "opened_at"), False),)

    class ListenerMarkRow(Base):
        # The last moment this node's listener was known subscribed, and the switch it was
        # subscribed to: the start of the window a killed daemon leaves behind.
        node = pw.TextField(primary_key=True)
        at = UTCDateTimeField()
        core_uuid = pw.TextField(default="")

        class Meta:
            table_name = "listener_mark"

    class CdrCursorRow(Base):
        # How far the catch-up has read one CDR file: by device and inode, so a file renamed by
        # mod_cdr_csv's rotation is read on from where it was, and its successor from the start.
        node = pw.TextField()
        file_key = pw.TextField()
        path = pw.TextField()
        offset = pw.BigIntegerField()

        class Meta:
            table_name = "cdr_cursor"
            primary_key = pw.CompositeKey("node", "file_key")

    m.LossWindow, m.ListenerMark, m.CdrCursor = LossWindowRow, ListenerMarkRow, CdrCursorRow


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


def _v5_loss_windows(db, migrator, m):
    db.create_tables([m.LossWindow, m.ListenerMark, m.CdrCursor], safe=True)


def _v6_every_binding_change(db, migrator, m):
    # Idempotent: a database made by step 2 from today's models already has the columns.
    from playhouse.migrate import migrate

    columns = {c.name: c for c in db.get_columns("binding_history")}
    steps = []
    for name, field in (("source", pw.TextField(default="auto")), ("kind", pw.TextField(default="learned")),
                        ("why", pw.TextField(default="")), ("expiry_of", UTCDateTimeField(null=True))):
        if name not in columns:
            steps.append(migrator.add_column("binding_history", name, field))
    if not columns["to_agent"].null:
        steps.append(migrator.drop_not_null("binding_history", "to_agent"))
    if steps:
        migrate(*steps)
    if not any(index.unique and index.columns == ["client", "source", "expiry_of"]
               for index in db.get_indexes("binding_history")):
        migrate(migrator.add_index("binding_history", ("client", "source", "expiry_of"), unique=True))


def _v7_live_webhooks(db, migrator, m):
    # Idempotent: a database made by step 1 and 4 from today's models already has the columns.
    from playhouse.migrate import migrate

    steps = []
    if "supervisors" not in {c.name for c in db.get_columns("agent_group")}:
        steps.append(migrator.add_column("agent_group", "supervisors", pw.TextField(default="")))
    if "in_order" not in {c.name for c in db.get_columns("outbox")}:
        steps += [migrator.add_column("outbox", "in_order", pw.TextField(null=True)),
                  migrator.add_index("outbox", ("in_order", "state"), unique=False)]
    if steps:
        migrate(*steps)


def _v8_outbox_due_in_order(db, migrator, m):
    # Idempotent: a database made by step 4 from today's models has (state, id) and never had
    # (state, next_at).
    from playhouse.migrate import migrate

    indexes = db.get_indexes("outbox")
    if not any(index.columns == ["state", "id"] for index in indexes):
        migrate(migrator.add_index("outbox", ("state", "id"), unique=False))
    for index in indexes:
        if index.columns == ["state", "next_at"]:
            migrate(migrator.drop_index("outbox", index.name))


MIGRATIONS = [
    (1, "initial schema", _v1_initial),
    (2, "call sticky agent, binding history", _v2_callbacks_and_rebinds),
    (3, "agent dnd, group hours and settings, client numbers, blocks", _v3_presence_hours_clients),
    (4, "outbox, agent crm ids", _v4_outbox_and_crm_ids),
    (5, "loss windows, listener mark, CDR cursors", _v5_loss_windows),
    (6, "binding history of every change: source, kind, why, expiries", _v6_every_binding_change),
    (7, "group supervisors, call events in order", _v7_live_webhooks),
    (8, "outbox rows due in the order written", _v8_outbox_due_in_order),
]
