"""Clients as people: the numbers one client calls from, shared numbers and blocks, and the one
read a routing decision makes."""
from __future__ import annotations

import re

from ..core.model import Binding
from . import sqltext
from .connection import StoreError, _reconnects

_E164 = re.compile(r"^\+[1-9][0-9]{5,16}$")


class ClientTables:
    """The Store's methods on client numbers and blocks."""

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

    def link_numbers(self, number: str, other: str) -> tuple[str, str | None]:
        """`other` (and every number of its client) joins `number`'s client, with its blocks:
        (the client id, the client id `other` had when that was another client, else None). The
        binding rows are left as they are: the caller merges them (binding_changes.merged)."""
        require_client(number)
        require_client(other)
        cn = self.m.ClientNumber
        with self.transaction():
            target, _, _ = self.client_of(number)
            source, _, _ = self.client_of(other)
            self._own_row(number, target)
            self._own_row(target, target)
            if source == target:
                return target, None
            self._own_row(source, source)
            self._own_row(other, source)
            cn.update(client=target).where(cn.client == source).execute()
            self.move_blocks(source, target)
        return target, source

    def move_blocks(self, source: str, target: str) -> None:
        """The blocks of client `source` become client `target`'s."""
        k = self.m.Block
        for (agent,) in k.select(k.agent).where(k.client == source).tuples():
            k.insert(client=target, agent=agent).on_conflict_ignore().execute()
        k.delete().where(k.client == source).execute()

    def unlink_number(self, number: str) -> str:
        """`number` leaves its client and is a client of its own from now on, with no bindings:
        the client keeps its bindings and blocks (and, when `number` was the client's id, moves
        them to its lowest other number). The client it left; StoreError when it was not linked."""
        require_client(number)
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
        require_client(number)
        cn = self.m.ClientNumber
        with self.transaction():
            self._own_row(number, self.client_of(number)[0])
            cn.update(shared=bool(on)).where(cn.number == number).execute()

    def block(self, number: str, ext: str) -> str:
        """Keep the client of `number` away from agent `ext` (the block row only): the client id."""
        require_client(number)
        with self.transaction():
            self.require_agent(ext)
            client = self.client_of(number)[0]
            self._own_row(number, client)
            self._own_row(client, client)
            self.m.Block.insert(client=client, agent=ext).on_conflict_ignore().execute()
        return client

    def unblock(self, number: str, ext: str) -> int:
        k = self.m.Block
        return k.delete().where(k.client == self.client_of(number)[0], k.agent == ext).execute()

    def blocks(self, client: str | None = None) -> list[tuple[str, str]]:
        k = self.m.Block
        query = k.select(k.client, k.agent).order_by(k.client, k.agent)
        if client is not None:
            query = query.where(k.client == client)
        return list(query.tuples())

    def clients_of(self, numbers) -> dict[str, tuple[str, bool, frozenset[str]]]:
        """client_of() of many numbers; numbers that are their own client without blocks are left out."""
        n, k = f'"{self.m.ClientNumber._meta.table_name}"', f'"{self.m.Block._meta.table_name}"'
        found: dict[str, tuple[str, bool, set[str]]] = {}
        for chunk in sqltext.chunks(list(numbers), sqltext.MAX_PARAMS):
            sql = (f'SELECT n."number", n."client", n."shared", k."agent" FROM {n} n LEFT JOIN {k} k '
                   f'ON k."client" = n."client" WHERE n."number" IN ({sqltext.marks(self.db.param, len(chunk))})')
            for number, client, shared, agent in self.db.execute_sql(sql, chunk).fetchall():
                entry = found.setdefault(number, (client, bool(shared), set()))
                if agent is not None:
                    entry[2].add(agent)
        return {number: (client, shared, frozenset(blocked))
                for number, (client, shared, blocked) in found.items()}


def require_client(client) -> None:
    # The service normalises numbers; this only guards against a raw caller ID reaching the table.
    if not isinstance(client, str) or not _E164.fullmatch(client):
        raise StoreError(f"client {client!r} is not a number in E.164 form (+380501234567)")
