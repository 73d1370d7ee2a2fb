"""Bindings: reading them, and the one write of every change to them (apply_binding_changes),
with its binding_history row and its event; expiries reported once (report_expiries)."""
from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from datetime import datetime

import peewee as pw

from ..core.binding_changes import BindingChange
from ..core.model import AUTO, MANUAL, Binding
from ..core.webhooks import Event
from . import sqltext
from .connection import BindingRaced, _reconnects


class BindingTables:
    """The Store's methods on bindings."""

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

    def list_bindings(self, agent: str | None = None) -> list[Binding]:
        """All bindings (of one agent), by client then source. Whether each routes is the
        ownership rule's to say (Service.standings), not the query's."""
        b = self.m.Binding
        query = (b.select(b.client, b.agent, b.source, b.at, b.expires_at, b.why, b.call_uuid)
                 .order_by(b.client, b.source))
        if agent is not None:
            query = query.where(b.agent == agent)
        return [Binding(client=row.client, agent=row.agent, source=row.source, at=row.at,
                        expires_at=row.expires_at, why=row.why or "", call_uuid=row.call_uuid)
                for row in query]

    def _upsert_bindings(self, bindings) -> None:
        # One multi-row statement per chunk: a CRM import is a million rows.
        to_db = self.m.Binding.at.db_value
        columns = self._binding_columns
        rows_per_statement = sqltext.MAX_PARAMS // len(columns)
        for chunk in sqltext.chunks(bindings, rows_per_statement):
            params = []
            for x in chunk:
                params += (x.client, x.source, x.agent, to_db(x.at), to_db(x.expires_at), x.why, x.call_uuid)
            sql = sqltext.upsert_sql(f'"{self.m.Binding._meta.table_name}"', columns, ["client", "source"],
                              self.db.param, rows=len(chunk))
            self.db.execute_sql(sql, params)

    @_reconnects
    def bindings_of_agent(self, ext: str) -> list[Binding]:
        """Every binding naming agent `ext`, by client then source."""
        return self.list_bindings(agent=ext)

    def apply_binding_changes(self, changes: Sequence[BindingChange], events: Sequence[Event] = ()) -> None:
        """The one write of binding changes (binding_changes.py decides them): each change's row,
        a binding_history row for each reported change, and `events` into the outbox, all in one
        transaction: the caller's (BindingPath reads, decides and writes in one), else its own.
        Each row is written by compare-and-swap against the binding the change was decided on:
        BindingRaced when another process changed it meanwhile (the transaction is undone).
        Manual bindings that are set (an import is a million) go in multi-row statements."""
        to_db = self.m.Binding.at.db_value
        # Not a savepoint of its own inside the caller's: a call's learning is the hot path, and
        # each savepoint is two more statements.
        with nullcontext() if self.db.in_transaction() else self.transaction():
            upserts = []
            for change in changes:
                old, new = change.old, change.new
                if change.source == MANUAL and new is not None:
                    upserts.append(new)
                    continue
                if old is None and new is None:
                    continue
                if old is None:
                    sql, params = self._insert_binding_sql, (
                        new.client, new.source, new.agent, to_db(new.at), to_db(new.expires_at), new.why,
                        new.call_uuid)
                elif new is None:
                    sql, params = self._delete_binding_sql, self._same_binding(old)
                else:
                    sql, params = self._swap_binding_sql, (
                        new.client, new.agent, to_db(new.at), to_db(new.expires_at), new.why, new.call_uuid,
                        *self._same_binding(old))
                if self.db.execute_sql(sql, params).rowcount != 1:
                    raise BindingRaced(f"the {change.source} binding of {change.client} changed meanwhile")
            self._upsert_bindings(upserts)
            self._insert_history([c for c in changes if c.reported])
            self._notify(list(events))

    def _same_binding(self, old: Binding) -> tuple:
        """The parameters of the compare-and-swap's WHERE: the row is still `old`."""
        return (old.client, old.source, old.agent, self.m.Binding.at.db_value(old.at), old.why, old.call_uuid,
                old.call_uuid)

    def report_expiries(self, expiries: Sequence[tuple[BindingChange, Event]]) -> int:
        """Expired bindings (binding_changes.expired), each with its event: a binding_history row
        (keyed by the binding's client, source and `at`) and the event, in one transaction, for
        each one not reported yet, by this process or another; the rows stay. How many were new."""
        h = self.m.BindingHistory
        columns = [h.client, h.source, h.from_agent, h.to_agent, h.at, h.call_uuid, h.kind, h.why, h.expiry_of]
        to_db = h.at.db_value
        sql = (f'INSERT INTO "{h._meta.table_name}" ({sqltext.names(columns)}) '
               f'VALUES ({sqltext.marks(self.db.param, len(columns))}) '
               f'ON CONFLICT ("client", "source", "expiry_of") DO NOTHING')
        reported = []
        with self.transaction():
            for change, event in expiries:
                old = change.old
                params = (change.client, change.source, change.from_agent, change.to_agent, to_db(change.at),
                          old.call_uuid, change.kind, change.why, to_db(old.at))
                if self.db.execute_sql(sql, params).rowcount == 1:
                    reported.append(event)
            self._notify(reported)
        return len(reported)

    @_reconnects
    def expiry_page(self, after: tuple[str, str] | None, now: datetime, learned_before: datetime | None,
                    size: int = 1000) -> tuple[list[Binding], tuple[str, str] | None]:
        """One page of the bindings in key order after `after`: those of them whose expiry is
        past at `now` or (learned) that ended before `learned_before`, and that no
        binding_history row reports expired yet; and the key to read the next page after (None
        after the last page). A page is a short indexed read, whatever the size of the table."""
        b, h = f'"{self.m.Binding._meta.table_name}"', f'"{self.m.BindingHistory._meta.table_name}"'
        p, to_db = self.db.param, self.m.Binding.at.db_value
        keyset, params = "", []
        if after is not None:
            keyset, params = f'WHERE ("client" > {p} OR ("client" = {p} AND "source" > {p})) ', [after[0], *after]
        page_sql = f'SELECT * FROM {b} {keyset}ORDER BY "client", "source" LIMIT {int(size)}'
        last = self.db.execute_sql(f'SELECT "client", "source" FROM ({page_sql}) page '
                                   f'ORDER BY "client" DESC, "source" DESC LIMIT 1', params).fetchall()
        if not last:
            return [], None
        due = f'x."expires_at" <= {p}'
        due_params = [to_db(now)]
        if learned_before is not None:
            due = f'({due} OR (x."source" = {p} AND x."at" < {p}))'
            due_params += [AUTO, to_db(learned_before)]
        sql = (f'SELECT x."client", x."source", x."agent", x."at", x."expires_at", x."why", x."call_uuid" '
               f'FROM ({page_sql}) x WHERE {due} AND NOT EXISTS (SELECT 1 FROM {h} h WHERE h."client" = x."client" '
               f'AND h."source" = x."source" AND h."expiry_of" = x."at")')
        rows = self.db.execute_sql(sql, params + due_params).fetchall()
        return [self._binding_of_row(*row) for row in rows], tuple(last[0])

    @_reconnects
    def bindings_of(self, clients) -> dict[str, dict[str, Binding]]:
        """Each client's bindings keyed by source (clients without any are left out)."""
        b = self.m.Binding
        found: dict[str, dict[str, Binding]] = {}
        for chunk in sqltext.chunks(sorted(set(clients)), sqltext.MAX_PARAMS):
            # The SQL by hand: peewee takes longer to write an IN of thousands than the database to run it.
            sql = (f'SELECT {sqltext.names(self._binding_columns)} FROM "{b._meta.table_name}" '
                   f'WHERE "client" IN ({sqltext.marks(self.db.param, len(chunk))})')
            rows = self.db.execute_sql(sql, chunk).fetchall()
            for row in rows:
                found.setdefault(row[0], {})[row[1]] = self._binding_of_row(*row)
        return found

    @_reconnects
    def binding_changes(self, since: datetime | None = None, rebinds_only: bool = False) -> list[dict]:
        """Reported binding changes (binding_history), oldest first, with the group of the call
        that made each (None when that call is not recorded or had no group). `rebinds_only`:
        only those away from an agent (to another or to none), not a client's first binding."""
        h, c = self.m.BindingHistory, self.m.Call
        query = (h.select(h.client, h.source, h.from_agent, h.to_agent, h.at, h.call_uuid, h.kind, h.why,
                          c.group_name)
                 .join(c, pw.JOIN.LEFT_OUTER, on=(c.uuid == h.call_uuid)).order_by(h.at, h.id))
        if since is not None:
            query = query.where(h.at >= since)
        if rebinds_only:
            query = query.where(h.from_agent.is_null(False), h.to_agent.is_null() | (h.from_agent != h.to_agent))
        to_time = h.at.python_value
        return [{"client": client, "source": source, "from_agent": from_agent, "to_agent": to_agent,
                 "at": to_time(at), "call_uuid": call_uuid, "kind": kind, "why": why, "group": group}
                for client, source, from_agent, to_agent, at, call_uuid, kind, why, group in query.tuples()]
