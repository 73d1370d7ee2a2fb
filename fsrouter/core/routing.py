"""The routing decision: who rings first for a client calling a group, and who rings after."""
from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime

from . import hours, overrides
from .model import AUTO, CRM, MANUAL, SCOPE_MEMBERS, SEQUENTIAL, Agent, Binding, Group, Leg, RoutePlan
from .rules import is_current
from .settings import Settings

# Why a sticky leg was or was not chosen; a plan's reason is one of these.
REASONS = {
    "crm": "the CRM names the client's responsible agent",
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
    # Presence, hours and clients (docs/presence-and-hours.md).
    "agent_offline": "the bound agent's phone is not registered",
    "agent_busy": "the bound agent is already on a call",
    "agent_dnd": "the bound agent is on do-not-disturb",
    "agent_blocked": "the client is kept away from the bound agent (binding block)",
    "outside_hours": "outside the group's sticky hours",
    "shared_number": "the number is shared (switchboard, call centre): it never routes sticky",
}

# What `availability` (decide's keyword) says of an agent; an agent it does not name is available.
AVAILABLE = "available"
OFFLINE = "offline"
BUSY = "busy"
DND = "dnd"
_UNAVAILABLE_REASONS = {OFFLINE: "agent_offline", BUSY: "agent_busy", DND: "agent_dnd"}


def _sources(settings: Settings) -> tuple[str, ...]:
    """The sources that may route, in the `sources` order; `mode` decides on the stored ones."""
    allowed = {"manual": (CRM, MANUAL), "auto": (CRM, AUTO), "both": (CRM, MANUAL, AUTO)}[settings.mode]
    return tuple(s for s in settings.sources if s in allowed)


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


def state_of(agent: Agent, availability: Mapping[str, str] | None) -> str:
    """AVAILABLE, OFFLINE, BUSY or DND: a stored do-not-disturb counts as DND."""
    if agent.dnd:
        return DND
    state = (availability or {}).get(agent.ext, AVAILABLE)
    return state if state in _UNAVAILABLE_REASONS else AVAILABLE


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
    """Plan one call. `bindings` holds the client's bindings keyed by source (MANUAL, AUTO, and
    CRM: the CRM's answer for this call, fetched at the edge), tried in the `sources` order.

    The sticky leg comes from the first binding, in mode order (manual, then learned, for mode
    `both`), that is current and whose agent exists, is enabled and (for sticky_scope `members`)
    belongs to the group. So a manual binding to a disabled agent falls through to the learned
    binding. When no binding works, the reason given is why the first-choice binding failed
    (the manual one under mode `both`), since that is the one a sysadmin will look at first;
    `mode` when the client has bindings but none of a kind the mode routes. Bindings are only
    read, never changed: a disabled agent's binding is kept for when they come back.

    Every dial string in the plan is an agent's configured dial string; the caller's number
    never goes into one.

    Presence and clients (all optional, so a caller that has none decides as before):
    `availability` maps extensions to OFFLINE, BUSY or DND (anyone not named is AVAILABLE): a
    bound agent who is not available is skipped at once (reason agent_offline, agent_busy,
    agent_dnd), like a disabled one. `blocked`: agents this client is kept away from (never its
    sticky agent, reason agent_blocked). `shared`: the number is a switchboard, never sticky.
    The group's own settings (overrides.py) beat `settings`, and outside the group's sticky
    hours there is no sticky leg (reason outside_hours).
    """
    settings = overrides.effective(settings, group)
    sticky = None
    source = None
    reason = "not_a_client" if client is None else "no_binding"
    if client is not None and shared:
        reason, bindings = "shared_number", {}
    elif client is not None and bindings and not hours.within(group.sticky_hours, group.timezone, now):
        reason, bindings = "outside_hours", {}
    if client is not None and bindings:
        usable = [bindings[s] for s in _sources(settings) if s in bindings]
        reason = "mode" if not usable else reason
        for binding in usable:
            failure = _check(binding, group, now, settings, agents)
            if failure is None and binding.agent in blocked:
                failure = "agent_blocked"
            if failure is None:
                failure = _UNAVAILABLE_REASONS.get(state_of(agents[binding.agent], availability))
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
        fallback=fallback_legs(group, agents, exclude, availability),
        strategy=group.strategy if group.strategy == SEQUENTIAL else "simultaneous",
    )
