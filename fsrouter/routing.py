"""The routing decision: who rings first for a client calling a group, and who rings after."""
from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from .model import AUTO, MANUAL, SCOPE_MEMBERS, SEQUENTIAL, Agent, Binding, Group, Leg, RoutePlan
from .rules import is_current
from .settings import Settings

# Why a sticky leg was or was not chosen; a plan's reason is one of these.
REASONS = {
    "manual": "manual binding",
    "auto": "learned from calls",
    "not_a_client": "the caller ID is not a client number",
    "no_binding": "the client has no binding",
    "mode": "the client's bindings are not of a kind the mode routes",
    "expired": "the binding expired or is older than the look-back window",
    "agent_disabled": "the bound agent is disabled",
    "agent_unknown": "the bound agent no longer exists",
    "outside_scope": "the bound agent is not a member of this group",
    "database_unavailable": "the bindings could not be read in time; the group rings",
}


def _sources(mode: str) -> tuple[str, ...]:
    return {"manual": (MANUAL,), "auto": (AUTO,), "both": (MANUAL, AUTO)}[mode]


def _check(binding: Binding, group: Group, now: datetime, settings: Settings,
           agents: Mapping[str, Agent]) -> str | None:
    """None when the binding can route this call, else the reason it cannot."""
    if not is_current(binding, settings, now):
        return "expired"
    agent = agents.get(binding.agent)
    if agent is None:
        return "agent_unknown"
    if not agent.enabled:
        return "agent_disabled"
    if group.sticky_scope == SCOPE_MEMBERS and group.name not in agent.groups:
        return "outside_scope"
    return None


def fallback_legs(group: Group, agents: Mapping[str, Agent], exclude: str | None = None) -> tuple[Leg, ...]:
    """The group's enabled members in ring order: by priority (lower first), then extension."""
    members = sorted(
        (a for a in agents.values() if group.name in a.groups and a.enabled and a.ext != exclude),
        key=lambda a: (a.priority, a.ext),
    )
    return tuple(Leg(a.ext, a.dial_string, group.ring_timeout) for a in members)


def decide(client: str | None, group: Group, now: datetime, settings: Settings,
           bindings: Mapping[str, Binding], agents: Mapping[str, Agent]) -> RoutePlan:
    """Plan one call. `bindings` holds the client's bindings keyed by source (MANUAL, AUTO).

    The sticky leg comes from the first binding, in mode order (manual, then learned, for mode
    `both`), that is current and whose agent exists, is enabled and (for sticky_scope `members`)
    belongs to the group. So a manual binding to a disabled agent falls through to the learned
    binding. When no binding works, the reason given is why the first-choice binding failed
    (the manual one under mode `both`), since that is the one a sysadmin will look at first;
    `mode` when the client has bindings but none of a kind the mode routes. Bindings are only
    read, never changed: a disabled agent's binding is kept for when they come back.

    Every dial string in the plan is an agent's configured dial string; the caller's number
    never goes into one.
    """
    sticky = None
    source = None
    reason = "not_a_client" if client is None else "no_binding"
    if client is not None and bindings:
        usable = [bindings[s] for s in _sources(settings.mode) if s in bindings]
        reason = "mode" if not usable else reason
        for binding in usable:
            failure = _check(binding, group, now, settings, agents)
            if failure is None:
                agent = agents[binding.agent]
                sticky = Leg(agent.ext, agent.dial_string, settings.sticky_timeout)
                source = reason = binding.source
                break
            if reason in ("no_binding", "mode"):
                reason = failure  # report why the first-choice binding failed
    exclude = sticky.agent if sticky and settings.fallback_excludes_sticky else None
    return RoutePlan(
        client=client,
        group=group.name,
        sticky=sticky,
        source=source,
        reason=reason,
        fallback=fallback_legs(group, agents, exclude),
        strategy=group.strategy if group.strategy == SEQUENTIAL else "simultaneous",
    )
