"""Missed calls and callbacks: call records in, missed-call rows out. Pure: no database, no clock.

A missed call is an inbound call that no agent answered. It stays open until either
  * an agent calls the client back: any outbound call to the client counts, answered or not (the
    row says whether the client picked up), or
  * the client calls again and an agent answers that call.
Whichever comes first closes every missed call of that client still open before it, and the row
keeps who closed it, how, and after how long (from the end of the missed call to the start of
the call that closed it; never negative). A later missed call of the same client stays open: the
client is still waiting.

A client is a person: a callback to any of their numbers closes the missed calls of all of them.
Each row also names the client's bound agent now (who the ownership rule says is responsible
for them: core/ownership.py, Ownership.holder): the person who should call back, and the first
thing `calls missed` sorts by.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from .model import INBOUND, OUTBOUND, Call

CALLBACK = "callback"  # an agent called the client
ANSWERED_AGAIN = "answered_again"  # the client called again and an agent answered


@dataclass(frozen=True)
class MissedCall:
    call: Call  # the missed inbound call
    bound_agent: str | None  # the client's agent now: who should call back
    closed_by: str | None = None  # CALLBACK, ANSWERED_AGAIN, or None while open
    closing_call: Call | None = None

    @property
    def client(self) -> str:
        return self.call.client

    @property
    def is_open(self) -> bool:
        return self.closing_call is None

    @property
    def owner(self) -> str | None:
        """Whose missed call it is: the agent of the call's sticky leg, else the bound agent."""
        return self.call.sticky_agent or self.bound_agent

    @property
    def callback_agent(self) -> str | None:
        """Who called back (or answered the client's next call)."""
        return self.closing_call.agent if self.closing_call else None

    @property
    def callback_at(self) -> datetime | None:
        return self.closing_call.started_at if self.closing_call else None

    @property
    def client_answered(self) -> bool | None:
        """Did the client pick up the callback (always true when they called again)."""
        return self.closing_call.answered if self.closing_call else None

    @property
    def callback_after(self) -> timedelta | None:
        if self.closing_call is None:
            return None
        return max(timedelta(0), self.closing_call.started_at - self.call.ended_at)


def is_missed(call: Call) -> bool:
    return call.direction == INBOUND and not (call.answered and call.agent)


def closes_missed(call: Call) -> str | None:
    """How this call closes the client's open missed calls, or None when it does not."""
    if call.direction == OUTBOUND and call.agent:
        return CALLBACK
    if call.direction == INBOUND and not is_missed(call):
        return ANSWERED_AGAIN
    return None


def missed_calls(calls: Iterable[Call], bound: Callable[[Call], str | None] | Mapping[str, str | None] | None = None,
                 since: datetime | None = None, only_open: bool = False,
                 clients: Mapping[str, str] | None = None) -> list[MissedCall]:
    """The missed calls among `calls` (started at or after `since`), with what closed each.

    Clients are people: `clients` maps a number to its client (numbers linked to one client;
    a number it does not name is a client of its own), and a call to or from any of a client's
    numbers closes the client's open missed calls. `calls` must hold, for each client, the calls
    after their missed calls (the store's missed_call_rows does). `bound` says who should call
    back each missed call: a function of the missed call (Service.missed_calls asks the
    ownership rule, in the call's group), or a mapping of a number or client to their agent.
    Sorted for the person doing the callbacks: by bound agent (clients without one last), then
    newest first.
    """
    clients = clients or {}
    who = bound if callable(bound) else _by_client(bound or {}, clients)
    by_client: dict[str, list[Call]] = {}
    for call in calls:
        by_client.setdefault(clients.get(call.client, call.client), []).append(call)
    rows: list[MissedCall] = []
    for history in by_client.values():
        waiting: list[Call] = []
        for call in sorted(history, key=lambda c: (c.started_at, c.uuid or "")):
            if is_missed(call):
                waiting.append(call)
                continue
            how = closes_missed(call)
            if how is None:
                continue
            rows += [MissedCall(missed, who(missed), how, call) for missed in waiting]
            waiting = []
        rows += [MissedCall(missed, who(missed)) for missed in waiting]
    rows = [r for r in rows if (since is None or r.call.started_at >= since) and (r.is_open or not only_open)]
    rows.sort(key=lambda r: r.call.started_at, reverse=True)
    rows.sort(key=lambda r: (r.bound_agent is None, r.bound_agent or ""))
    return rows


def _by_client(agents: Mapping[str, str | None], clients: Mapping[str, str]) -> Callable[[Call], str | None]:
    def who(call: Call) -> str | None:
        return agents.get(call.client) or agents.get(clients.get(call.client, call.client))
    return who


def closed_by(call: Call, history: Iterable[Call], clients: Mapping[str, str] | None = None) -> list[MissedCall]:
    """The missed calls of `call`'s client that `call` closes: those still open in `history` (the
    client's earlier calls, from any of their numbers: `clients` as in missed_calls) when it
    came. Empty when the call closes nothing."""
    if closes_missed(call) is None:
        return []
    clients = clients or {}
    person = clients.get(call.client, call.client)
    earlier = [c for c in history if clients.get(c.client, c.client) == person and c.uuid != call.uuid]
    return [row for row in missed_calls([*earlier, call], clients=clients)
            if row.closing_call is not None and row.closing_call.uuid == call.uuid]
