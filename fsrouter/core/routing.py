"""The routing decision: who rings first for a client calling a group, and who rings after."""
from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime

from . import overrides, ownership
from .model import SEQUENTIAL, Agent, Binding, Group, Leg, RoutePlan
from .ownership import AVAILABLE, BUSY, DND, OFFLINE, REASONS, state_of
from .settings import Settings

__all__ = ["AVAILABLE", "BUSY", "DND", "OFFLINE", "REASONS", "decide", "fallback_legs", "state_of"]


def fallback_legs(group: Group, agents: Mapping[str, Agent], exclude: str | None = None,
                  availability: Mapping[str, str] | None = None) -> tuple[Leg, ...]:
    """The group's enabled members in ring order: by priority (lower first), then extension.

    Members on do-not-disturb never ring. In a sequential group the members who are offline or
    busy go last (still by priority), so the first leg is the highest-priority available member;
    they are kept rather than dropped because presence can be a few seconds out of date.
    """
    members = sorted(
        (a for a in agents.values() if group.name in a.groups and a.enabled and a.ext != exclude
         and state_of(a, availability) != DND),
        key=lambda a: (a.priority, a.ext),
    )
    if group.strategy == SEQUENTIAL and (availability or any(a.dnd for a in members)):
        members.sort(key=lambda a: state_of(a, availability) != AVAILABLE)  # stable: priority kept
    return tuple(Leg(a.ext, a.dial_string, group.ring_timeout) for a in members)


def decide(client: str | None, group: Group, now: datetime, settings: Settings,
           bindings: Mapping[str, Binding], agents: Mapping[str, Agent], *,
           availability: Mapping[str, str] | None = None, blocked: Collection[str] = (),
           shared: bool = False) -> RoutePlan:
    """Plan one call: the sticky leg is the owner ownership.decide names (the one rule of which
    binding routes, and why not: see there), then the group's fallback legs.

    `bindings` holds the client's bindings keyed by source (MANUAL, AUTO, and CRM: the CRM's
    answer for this call, fetched at the edge). Bindings are only read, never changed: a
    disabled agent's binding is kept for when they come back. Every dial string in the plan is
    an agent's configured dial string; the caller's number never goes into one.

    Presence and clients (all optional, so a caller that has none decides as before):
    `availability` maps extensions to OFFLINE, BUSY or DND (anyone not named is AVAILABLE);
    `blocked`: agents this client is kept away from; `shared`: the number is a switchboard. The
    group's own settings (overrides.py) beat `settings` (the sticky timeout, the fallback too).
    """
    owned = ownership.decide(client, bindings, agents, settings, now, group=group,
                             availability=availability, blocked=blocked, shared=shared)
    settings = overrides.effective(settings, group)
    sticky = source = None
    if owned.owner is not None:
        agent = agents[owned.owner.agent]
        sticky = Leg(agent.ext, agent.dial_string, settings.sticky_timeout)
        source = owned.owner.source
    exclude = sticky.agent if sticky and settings.fallback_excludes_sticky else None
    return RoutePlan(
        client=client,
        group=group.name,
        sticky=sticky,
        source=source,
        reason=owned.reason,
        fallback=fallback_legs(group, agents, exclude, availability),
        strategy=group.strategy if group.strategy == SEQUENTIAL else "simultaneous",
    )
