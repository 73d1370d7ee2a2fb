"""Binding changes: what changes, why, and from whom to whom. Pure: no database, no clock.

Every change of a stored binding is decided by one function here (set by hand, removed,
imported, learned, handed over, released, blocked, lost to missed sticky calls, merged by a link,
expired) and applied through the store's one write path (Store.apply_binding_changes): the row,
its binding_history row and its `binding.changed` event in one transaction.

A change is `reported` when the client's agent of that source moves (to another agent or to
none): that is what binding_history keeps, the report counts as a rebind and the CRM hears about.
A change that keeps the agent (a new expiry on the same manual binding, a learned binding
confirmed by another call of its agent) is written but not reported.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from . import overrides, ownership, rules
from .model import AUTO, MANUAL, SOURCES, Agent, Binding, Call, Group
from .settings import Settings

# The kinds of change: binding_history.kind, and `kind` in a binding.changed body.
SET = "set"  # binding set (CLI, push API)
REMOVED = "removed"  # binding rm
IMPORTED = "imported"  # binding import
LEARNED = "learned"  # a call taught the client's learned binding
HANDOVER = "handover"  # agent rm/disable --handover-to
RELEASED = "released"  # the agent was disabled or removed: their learned bindings go
BLOCKED = "blocked"  # binding block: the client is kept away from the agent
MISSES = "missed"  # max_sticky_misses: the bound agent kept missing the client's sticky calls
MERGED = "merged"  # client link: the numbers of two clients became one client's
EXPIRED = "expired"  # past its expiry (manual) or the look-back window (learned): reported once
KINDS = (SET, REMOVED, IMPORTED, LEARNED, HANDOVER, RELEASED, BLOCKED, MISSES, MERGED, EXPIRED)


class Refused(ValueError):
    """A change the rules do not allow (the message is one line)."""


@dataclass(frozen=True)
class BindingChange:
    """The binding of one client and source, before (`old`) and after (`new`; None: gone)."""

    client: str
    source: str  # MANUAL or AUTO
    old: Binding | None
    new: Binding | None
    kind: str
    why: str
    at: datetime
    reported: bool = field(init=False)

    def __post_init__(self):
        object.__setattr__(self, "reported", self.from_agent != self.to_agent)

    @property
    def from_agent(self) -> str | None:
        return self.old.agent if self.old is not None else None

    @property
    def to_agent(self) -> str | None:
        return self.new.agent if self.new is not None else None

    @property
    def call_uuid(self) -> str | None:
        return self.new.call_uuid if self.new is not None else None


def _gone(binding: Binding, kind: str, why: str, at: datetime) -> BindingChange:
    return BindingChange(binding.client, binding.source, binding, None, kind, why, at)


# -- by hand ---------------------------------------------------------------------------------------

# What `binding set` (and a push API PUT, and an import line) says of a binding the ownership
# rule bars for good (ownership.barred): refused, not stored to never route.
REFUSED = {
    "agent_blocked": "client {client} is kept away from agent {agent} (binding unblock first)",
    "shared_number": "{number} is a shared number: it never routes sticky, so it takes no binding "
                     "(fsrouter number shared {number} off first)",
}


def refusal(number: str, client: str, agent: str, *, blocked, shared: bool) -> str | None:
    """Why a binding of the client of `number` to `agent` is refused, or None (ownership.barred)."""
    bar = ownership.barred(agent, blocked=blocked, shared=shared)
    return REFUSED[bar].format(number=number, client=client, agent=agent) if bar else None


def set_by_hand(current: Binding | None, client: str, agent: str, now: datetime, blocked: frozenset[str],
                expires_at: datetime | None = None, why: str = "set by hand", kind: str = SET, *,
                number: str | None = None, shared: bool = False) -> BindingChange:
    """The client's manual binding to `agent` from `now`; Refused when the ownership rule bars it
    for good (the number, `number`, is shared; the client is kept away from the agent) or the
    expiry is not in the future."""
    refused = refusal(number or client, client, agent, blocked=blocked, shared=shared)
    if refused:
        raise Refused(refused)
    if expires_at is not None and expires_at <= now:
        raise Refused("the expiry must be in the future")
    new = Binding(client=client, agent=agent, source=MANUAL, at=now, expires_at=expires_at, why=why)
    return BindingChange(client, MANUAL, current, new, kind, why, now)


def removed(current: Mapping[str, Binding], sources: Iterable[str], now: datetime) -> list[BindingChange]:
    """`binding rm`: the client's bindings of `sources` go; Refused for a source that is none."""
    sources = list(sources)
    unknown = set(sources) - set(SOURCES)
    if unknown:
        raise Refused(f"bad binding source {min(unknown)!r}: one of {', '.join(SOURCES)}")
    return [_gone(current[s], REMOVED, "removed", now) for s in SOURCES if s in sources and s in current]


def imported(current: Mapping[str, Binding], pairs: Mapping[str, str], now: datetime,
             why: str = "imported") -> list[BindingChange]:
    """Manual bindings of a bulk import: (client -> agent); `current`: their manual bindings now."""
    return [BindingChange(client, MANUAL, current.get(client),
                          Binding(client=client, agent=agent, source=MANUAL, at=now, why=why), IMPORTED, why, now)
            for client, agent in pairs.items()]


# -- learning --------------------------------------------------------------------------------------

def teaching(call: Call, client: str, shared: bool, blocked: frozenset[str]) -> Call | None:
    """The call as it teaches its client (a linked number teaches its client, `client`), or None
    when it teaches nobody: a shared number never binds, and an agent the client is kept away
    from is never learned."""
    if not call.client or ownership.barred(call.agent, blocked=blocked, shared=shared) is not None:
        return None
    return call if client == call.client else replace(call, client=client)


def learned(call: Call, settings: Settings, current: Binding | None) -> BindingChange | None:
    """What the call does to its client's learned binding (rules.learn), or None."""
    new = rules.learn(call, settings, current)
    if new is None:
        return None
    return BindingChange(new.client, AUTO, current, new, LEARNED, new.why, new.at)


def is_sticky_miss(call: Call, misses: int) -> bool:
    """Can this call be the last of `misses` sticky calls in a row its bound agent did not answer
    (max_sticky_misses; 0 is off)? Only then is there anything more to read."""
    return misses > 0 and call.direction == "inbound" and bool(call.sticky_agent) and call.agent != call.sticky_agent


def after_misses(call: Call, learned_binding: Binding | None, recent: list[Call], misses: int,
                 now: datetime) -> BindingChange | None:
    """max_sticky_misses: when the client's last `misses` inbound calls (`recent`, newest first,
    `call` among them) all rang the learned binding's agent on the sticky leg and none was
    answered by that agent, the learned binding goes. A manual binding is never touched."""
    if not is_sticky_miss(call, misses):
        return None
    agent = call.sticky_agent
    if learned_binding is None or learned_binding.agent != agent:
        return None
    last = recent[:misses]
    if len(last) < misses or any((r.sticky_agent or None) != agent or r.agent == agent for r in last):
        return None
    return _gone(learned_binding, MISSES, f"{misses} sticky calls in a row not answered by {agent}", now)


# -- agents who go, clients kept away --------------------------------------------------------------

def released(bindings: Iterable[Binding], ext: str, now: datetime, why: str | None = None) -> list[BindingChange]:
    """The agent `ext` left or was disabled: their learned bindings go (the clients' next calls
    ring the group and teach a new one); manual ones stay for a human."""
    why = why or f"agent {ext} left"
    return [_gone(b, RELEASED, why, now) for b in bindings if b.agent == ext and b.source == AUTO]


def handed_over(bindings: Iterable[Binding], ext: str, other: str, blocked: Mapping[str, frozenset[str]],
                now: datetime) -> list[BindingChange]:
    """Every binding of `ext` moves to `other`, but a client kept away from `other` (`blocked`:
    client -> agents) is not moved: its learned binding is released, its manual one stays on
    `ext` (binding list --stale)."""
    if ext == other:
        raise Refused("hand over to another agent")
    why = f"handed over from {ext} to {other}"
    changes = []
    for b in bindings:
        if b.agent != ext:
            continue
        if ownership.barred(other, blocked=blocked.get(b.client, frozenset())) is not None:
            if b.source == AUTO:
                changes.append(_gone(b, RELEASED, f"agent {ext} left; client kept away from {other}", now))
            continue
        changes.append(BindingChange(b.client, b.source, b, replace(b, agent=other), HANDOVER, why, now))
    return changes


def blocked_from(current: Mapping[str, Binding], ext: str, now: datetime) -> list[BindingChange]:
    """`binding block`: the client's learned binding to `ext` goes. A manual one stays (it no
    longer routes; a human sets or removes it)."""
    learned_binding = current.get(AUTO)
    if learned_binding is None or learned_binding.agent != ext:
        return []
    return [_gone(learned_binding, BLOCKED, f"client kept away from {ext}", now)]


# -- clients as people -----------------------------------------------------------------------------

def merged(target: str, mine: Mapping[str, Binding], absorbed: str, theirs: Mapping[str, Binding],
           now: datetime) -> list[BindingChange]:
    """`client link`: client `absorbed` (its bindings `theirs`) becomes client `target` (`mine`).
    Per source the target's own manual binding wins; of two learned ones the later call. The
    absorbed client's bindings go; its numbers now route by the merged ones."""
    why = f"numbers of {absorbed} linked to client {target}"
    changes = []
    for source in SOURCES:
        held, joining = mine.get(source), theirs.get(source)
        if joining is not None:
            changes.append(_gone(joining, MERGED, why, now))
        if joining is None or not (held is None or (source == AUTO and (joining.at, joining.agent)
                                                    > (held.at, held.agent))):
            continue
        changes.append(BindingChange(target, source, held, replace(joining, client=target), MERGED, why, now))
    return changes


# -- who is responsible after ----------------------------------------------------------------------

def bindings_after(before: Mapping[str, Mapping[str, Binding]],
                   changes: Iterable[BindingChange]) -> dict[str, dict[str, Binding]]:
    """Each changed client's bindings by source once `changes` are written (`before`: as read)."""
    after = {c.client: dict(before.get(c.client, {})) for c in changes}
    for c in changes:
        if c.new is None:
            after[c.client].pop(c.source, None)
        else:
            after[c.client][c.source] = c.new
    return after


def holders_after(before: Mapping[str, Mapping[str, Binding]], changes: Iterable[BindingChange],
                  agents: Mapping[str, Agent], settings: Settings, now: datetime,
                  facts: Mapping[str, tuple[str, bool, frozenset[str]]]) -> dict[str, str | None]:
    """Who is responsible for each changed client once `changes` are written: the ownership
    rule's holder, in no group (a binding is every group's); `facts`: Store.clients_of's (client,
    shared, blocked) of the clients that have any."""
    alone = (None, False, frozenset())
    holders = {}
    for client, bindings in bindings_after(before, list(changes)).items():
        _, shared, blocked = facts.get(client, alone)
        holders[client] = ownership.decide(client, bindings, agents, settings, now, blocked=blocked,
                                           shared=shared).holder
    return holders


# -- expiry ----------------------------------------------------------------------------------------

def sweep_settings(settings: Settings, groups: Iterable[Group]) -> Settings:
    """The settings a learned binding expires by: the longest look-back window any group routes
    by (a group's own lookback beats the global one; 0 is forever), so a binding is reported
    expired only once no group would route it."""
    windows = [overrides.effective(settings, g).lookback for g in groups] + [settings.lookback]
    longest = timedelta(0) if any(w <= timedelta(0) for w in windows) else max(windows)
    return replace(settings, lookback=longest)


def expired(bindings: Iterable[Binding], settings: Settings, now: datetime) -> list[BindingChange]:
    """The bindings that no longer route by time (rules.is_current under sweep_settings), each
    reported once as gone. The rows stay (binding list --stale shows them)."""
    changes = []
    for b in bindings:
        if rules.is_current(b, settings, now):
            continue
        why = "expired" if b.expires_at is not None and b.expires_at <= now else "past the look-back window"
        changes.append(_gone(b, EXPIRED, why, now))
    return changes
