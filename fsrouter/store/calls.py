"""Call records (one at a time from the daemon, in batches from `calls import`), the learned
bindings' compare-and-swap primitives, binding_history rows and the outbox write."""
from __future__ import annotations

import uuid
from datetime import UTC, datetime

import peewee as pw

from ..core.ids import uuid5
from ..core.model import AUTO, DIRECTIONS, Binding, Call
from ..core.webhooks import CALL_EVENT, Event
from . import sqltext
from .connection import BindingRaced, StoreError, _reconnects

CALL_TYPES = frozenset(CALL_EVENT.values())  # events of a call: sent in the order written
# Namespace of the uuids made for calls that come without one (see with_uuid).
_CALL_NAMESPACE = uuid.UUID("6f1c3d2e-8a4b-4c57-9e0f-2b7d5a1c9e33")


class CallTables:
    """The Store's methods on call records and learned bindings."""

    @_reconnects
    def save_call(self, call: Call) -> Call:
        """Insert or update the call record by uuid (a uuid is made when it has none)."""
        call = with_uuid(call)
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
        who has an unanswered inbound call since then (their missed calls, and what followed),
        from any of the client's numbers (a callback to another of them closes the missed call).

        One query on the (client, started_at) index; callbacks always come after the missed call.
        """
        c, cn = self.m.Call, self.m.ClientNumber
        missed = c.select(c.client).where(c.direction == "inbound", (c.answered == False) | c.agent.is_null())
        if since is not None:
            missed = missed.where(c.started_at >= since)
        linked = cn.select(cn.number).where(cn.client.in_(cn.select(cn.client).where(cn.number.in_(missed))))
        query = c.select(*self._call_columns).where(c.client.in_(missed) | c.client.in_(linked))
        if since is not None:
            query = query.where(c.started_at >= since)
        return [_call_of_row(*row) for row in query.order_by(c.started_at, c.uuid).tuples()]

    def calls_before(self, call: Call, limit: int = 50, inbound_only: bool = False) -> list[Call]:
        """The client's latest calls up to this one, newest first (enough to tell which missed
        calls are open; `inbound_only`: a streak of missed sticky calls)."""
        c = self.m.Call
        query = c.select(*self._call_columns).where(c.client == call.client, c.started_at <= call.started_at)
        if inbound_only:
            query = query.where(c.direction == "inbound")
        query = query.order_by(c.started_at.desc()).limit(limit)
        return [_call_of_row(*row) for row in query.tuples()]

    def client_calls_before(self, call: Call, limit: int = 50) -> tuple[list[Call], dict[str, str]]:
        """The client's latest calls up to this one, from any of their numbers: enough to tell which
        missed calls are open; and each of those numbers' client (missed.closed_by's `clients`)."""
        client = self.client_of(call.client)[0]
        numbers = self.numbers_of(client)
        c = self.m.Call
        query = (c.select(*self._call_columns).where(c.client.in_(numbers), c.started_at <= call.started_at)
                 .order_by(c.started_at.desc()).limit(limit))
        return [_call_of_row(*row) for row in query.tuples()], {number: client for number in numbers}

    @_reconnects
    def known_call_uuids(self, uuids) -> set[str]:
        """Which of these call uuids the store has records of."""
        c = self.m.Call
        known: set[str] = set()
        for chunk in sqltext.chunks(set(uuids), 500):
            known.update(u for (u,) in c.select(c.uuid).where(c.uuid.in_(chunk)).tuples())
        return known

    def save_calls(self, calls: list[Call]) -> list[Call]:
        """Save many call records in multi-row statements (an import of call history); the calls
        with their uuids (made for those without one). A bad direction saves nothing."""
        calls = [with_uuid(call) for call in calls]
        for call in calls:
            if call.direction not in DIRECTIONS:
                raise StoreError(f"bad call direction {call.direction!r}")
        self._save_calls(calls)
        return calls

    def _save_calls(self, calls: list[Call]) -> None:
        # A uuid twice in one statement is an error on PostgreSQL: the last values of each uuid,
        # as saving them one by one would leave.
        unique = {call.uuid: call for call in calls}
        columns = self._call_columns
        table = f'"{self.m.Call._meta.table_name}"'
        rows_per_statement = sqltext.MAX_PARAMS // len(columns)
        for chunk in sqltext.chunks(unique.values(), rows_per_statement):
            params = [value for call in chunk for value in self._call_params(call)]
            self.db.execute_sql(sqltext.upsert_sql(table, columns, ["uuid"], self.db.param, rows=len(chunk)), params)

    def write_learned(self, before: dict[str, Binding], after: dict[str, Binding], history: list) -> None:
        """The learned bindings of a batch (BindingPath.record_calls): `before` as
        learned_bindings read them (and locked them), `after` as the learning left them; the
        ones that changed are written (BindingRaced when another process inserted a first one
        meanwhile), with `history` (reported BindingChanges)."""
        # In index order: a million rows go into the index twice as fast as in the calls' order.
        changed = sorted((b for client, b in after.items() if before.get(client) is not b), key=lambda b: b.client)
        self.insert_learned([b for b in changed if b.client not in before])
        self._upsert_bindings([b for b in changed if b.client in before])  # rows read (and locked) before
        self._insert_history(history)

    def learned_bindings(self, clients) -> dict[str, Binding]:
        """The learned binding of each of `clients` that has one; on PostgreSQL the rows stay locked
        until the transaction ends, as learn()'s compare-and-swap would keep them."""
        b = self.m.Binding
        # PostgreSQL: locked in client order, so two imports cannot each hold what the other waits for.
        lock = "" if self.is_sqlite else ' ORDER BY "client" FOR UPDATE'
        found: dict[str, Binding] = {}
        for chunk in sqltext.chunks(list(clients) if self.is_sqlite else sorted(clients), sqltext.MAX_PARAMS - 1):
            sql = (f'SELECT "client", "agent", "at", "expires_at", "why", "call_uuid" '
                   f'FROM "{b._meta.table_name}" '
                   f'WHERE "source" = {self.db.param} AND "client" IN ({sqltext.marks(self.db.param, len(chunk))}){lock}')
            rows = self.db.execute_sql(sql, [AUTO, *chunk]).fetchall()
            for client, *rest in rows:
                found[client] = self._binding_of_row(client, AUTO, *rest)
        return found

    def insert_learned(self, bindings: list[Binding]) -> None:
        """First learned bindings of their clients, as learning inserts them; BindingRaced when another
        process inserted one of them since learned_bindings read."""
        to_db = self.m.Binding.at.db_value
        columns = self._binding_columns
        table = f'"{self.m.Binding._meta.table_name}"'
        for chunk in sqltext.chunks(bindings, sqltext.MAX_PARAMS // len(columns)):
            values = sqltext.values(self.db.param, len(columns), len(chunk))
            params = [value for x in chunk
                      for value in (x.client, AUTO, x.agent, to_db(x.at), None, x.why, x.call_uuid)]
            cursor = self.db.execute_sql(f'INSERT INTO {table} ({sqltext.names(columns)}) VALUES {values} '
                                         f'ON CONFLICT ("client", "source") DO NOTHING', params)
            if cursor.rowcount != len(chunk):
                raise BindingRaced("another process learned a first binding meanwhile")

    def _insert_history(self, changes) -> None:
        """binding_history rows of reported BindingChanges, ids in list order."""
        h = self.m.BindingHistory
        columns = [h.client, h.source, h.from_agent, h.to_agent, h.at, h.call_uuid, h.kind, h.why]
        to_db = h.at.db_value
        table = f'"{h._meta.table_name}"'
        for chunk in sqltext.chunks(changes, sqltext.MAX_PARAMS // len(columns)):
            values = sqltext.values(self.db.param, len(columns), len(chunk))
            params = [value for c in chunk
                      for value in (c.client, c.source, c.from_agent, c.to_agent, to_db(c.at), c.call_uuid,
                                    c.kind, c.why)]
            self.db.execute_sql(f"INSERT INTO {table} ({sqltext.names(columns)}) VALUES {values}", params)

    def add_events(self, events: list[Event]) -> None:
        """Events into the outbox (one row per webhook URL), in the caller's transaction. An event
        already there (the same id for the same URL) is not written again. A call's events carry
        its uuid (`in_order`): the sender delivers them in the order written."""
        self._notify(events)

    def _notify(self, events: list[Event]) -> None:
        """The events into the outbox, one row per webhook URL, in the caller's transaction."""
        if not events or not self.webhook_urls:
            return
        o = self.m.Outbox
        # SQL text rather than peewee's insert_many: building that statement was half the cost of
        # writing the live call events (py-spy of `fsrouter run` at 100 calls/s, bench "live").
        columns = [o.event_id, o.event_type, o.target, o.body, o.created_at, o.next_at, o.in_order, o.state,
                   o.attempts, o.last_error]
        now = o.created_at.db_value(datetime.now(UTC))
        rows = [(e.id, e.type, url, e.body().decode("utf-8"), now, now,
                 e.data.get("call_uuid") if e.type in CALL_TYPES else None, "pending", 0, "")
                for e in events for url in self.webhook_urls]
        table = f'"{o._meta.table_name}"'
        for chunk in sqltext.chunks(rows, sqltext.MAX_PARAMS // len(columns)):
            self.db.execute_sql(f"INSERT INTO {table} ({sqltext.names(columns)}) "
                                f"VALUES {sqltext.values(self.db.param, len(columns), len(chunk))} "
                                f'ON CONFLICT ("event_id", "target") DO NOTHING',
                                [value for row in chunk for value in row])
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


def with_uuid(call: Call) -> Call:
    """The call, with a uuid derived from what it is when it has none: the same call saved twice
    (a CSV imported twice) is one record, and learning from it again changes nothing."""
    if call.uuid:
        return call
    key = "|".join((call.direction, call.client or "", call.agent or "", call.started_at.isoformat(),
                    call.ended_at.isoformat(), repr(float(call.talk_seconds)), str(bool(call.answered))))
    # dataclasses.replace, at a fifth of its cost: Call has no __post_init__ to run again.
    copy = object.__new__(Call)
    copy.__dict__.update(call.__dict__, uuid=uuid5(_CALL_NAMESPACE, key))
    return copy

