"""Bindings set by hand or imported, and what moves them: hand-over, release, missed calls."""
from __future__ import annotations

from datetime import UTC, datetime

import peewee as pw

from ..core.model import AUTO, MANUAL, SOURCES, Binding, Call
from ..core.webhooks import binding_changed
from . import sqltext
from .calls import _sticky_agent
from .clients import _require_client
from .connection import StoreError, _one_line, _reconnects


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
        rows_per_statement = sqltext.MAX_PARAMS // len(columns)
        for chunk in sqltext.chunks(bindings, rows_per_statement):
            params = []
            for x in chunk:
                params += (x.client, x.source, x.agent, to_db(x.at), to_db(x.expires_at), x.why, x.call_uuid)
            sql = sqltext.upsert_sql(f'"{self.m.Binding._meta.table_name}"', columns, ["client", "source"],
                              self.db.param, rows=len(chunk))
            self.db.execute_sql(sql, params)

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
