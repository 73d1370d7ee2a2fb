"""Who a client belongs to: for each of their bindings, whether it routes now and, if not, why.

The one rule every surface asks (the routing decision, `binding show` and `list --stale`, the
push API, `calls missed`, the report, the webhooks' bound_agent, learning and `binding set`):
a surface passes what it knows and shows what `decide` says. Pure: the time is passed in.

What a surface does not know it leaves out, and the answer says only what follows from the rest:
  * no `group` (e.g. `binding show` without --group): the global settings, no sticky scope and
    no sticky hours are applied;
  * no `availability` (presence unknown, e.g. on the CLI): only a stored do-not-disturb counts,
    a phone is taken to be registered and idle.

Two answers are read off one decision:
  * `owner`: the binding whose agent rings first now (the routing decision's sticky leg);
  * `holder`: the agent responsible for the client: the owner, or when no binding routes only
    because of the hour or the agent's presence (TRANSIENT), that binding's agent. The agent on a
    lunch break still owns their client's missed call; a blocked or disabled one does not.
"""
from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from functools import lru_cache

from . import hours, overrides
from .model import AUTO, CRM, MANUAL, ROUTE_SOURCES, SCOPE_MEMBERS, Agent, Binding, Group
from .rules import is_current
from .settings import Settings

# Why a binding does or does not route; a plan's reason is one of these.
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
# The state shown for a binding that routes (binding show/list, the push API).
ACTIVE = "active"
# Reasons that pass without anyone changing the configuration: the hour, the agent's presence.
# A binding failing only for one of these still has its holder, and is not stale.
TRANSIENT = frozenset({"outside_hours", "agent_offline", "agent_busy", "agent_dnd"})

# What `availability` says of an agent; an agent it does not name is available.
AVAILABLE = "available"
OFFLINE = "offline"
BUSY = "busy"
DND = "dnd"
_UNAVAILABLE_REASONS = {OFFLINE: "agent_offline", BUSY: "agent_busy", DND: "agent_dnd"}
# Which stored bindings each `mode` lets route; a CRM answer routes under every mode.
_MODE_SOURCES = {"manual": (CRM, MANUAL), "auto": (CRM, AUTO), "both": (CRM, MANUAL, AUTO)}


def barred(agent: str | None, *, blocked: Collection[str] = (), shared: bool = False) -> str | None:
    """Why a binding of this client to `agent` can never route, whatever else holds: the number
    is shared (shared_number) or the client is kept away from the agent (agent_blocked); None
    when neither. `decide` applies it; learning and `binding set` ask it before a binding is made
    (a shared number teaches nobody; nobody is bound, by hand or by a call, to a blocked agent)."""
    if shared:
        return "shared_number"
    if agent is not None and agent in blocked:
        return "agent_blocked"
    return None


def routable_sources(settings: Settings) -> tuple[str, ...]:
    """The sources that may route under `settings`, in the order they are tried (`sources`,
    filtered by `mode`). Settings of a group: pass overrides.effective(settings, group)."""
    return _order(settings.sources, settings.mode)[1]


@lru_cache(maxsize=64)
def _order(sources: tuple[str, ...], mode: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(every source in the order tried: `sources`, then the others; those `mode` routes)."""
    allowed = _MODE_SOURCES[mode]
    return (*sources, *(s for s in ROUTE_SOURCES if s not in sources)), tuple(s for s in sources if s in allowed)


def state_of(agent: Agent, availability: Mapping[str, str] | None) -> str:
    """AVAILABLE, OFFLINE, BUSY or DND: a stored do-not-disturb counts as DND."""
    if agent.dnd:
        return DND
    state = (availability or {}).get(agent.ext, AVAILABLE)
    return state if state in _UNAVAILABLE_REASONS else AVAILABLE


@dataclass(frozen=True)
class Verdict:
    """One binding of the client, and why it does not route (None: it does)."""
    binding: Binding
    reason: str | None

    @property
    def source(self) -> str:
        return self.binding.source

    @property
    def agent(self) -> str:
        return self.binding.agent

    @property
    def routes(self) -> bool:
        return self.reason is None

    @property
    def state(self) -> str:
        """ACTIVE, or the REASONS key of why not: what binding show/list and the API print."""
        return ACTIVE if self.reason is None else self.reason


@dataclass(frozen=True)
class Ownership:
    client: str | None
    verdicts: tuple[Verdict, ...]  # every binding given, in the order they are tried
    owner: Verdict | None  # the binding that rings first now, if any
    reason: str  # the owner's source, or why nobody rings first (REASONS key)

    def of(self, source: str) -> Verdict | None:
        return next((v for v in self.verdicts if v.source == source), None)

    @property
    def agent(self) -> str | None:
        return self.owner.agent if self.owner else None

    @property
    def holder(self) -> str | None:
        """Who is responsible for the client: the owner, else the first binding (in the order
        tried) that fails only for a TRANSIENT reason; None when every binding fails for good."""
        if self.owner is not None:
            return self.owner.agent
        return next((v.agent for v in self.verdicts if v.reason in TRANSIENT), None)


def decide(client: str | None, bindings: Mapping[str, Binding], agents: Mapping[str, Agent],
           settings: Settings, now: datetime, *, group: Group | None = None,
           availability: Mapping[str, str] | None = None, blocked: Collection[str] = (),
           shared: bool = False) -> Ownership:
    """The one ownership rule. `bindings`: the client's bindings keyed by source (MANUAL, AUTO,
    and CRM: the CRM's answer, asked at the edge). `settings` are the global ones; the group's
    own (overrides.py) beat them here.

    For the whole client, first: a shared number never routes sticky (shared_number), and
    outside the group's sticky hours nothing does (outside_hours). Then each binding, in the
    `sources` order: a kind the mode does not route (mode), expired, agent_unknown,
    agent_disabled, outside_scope (sticky_scope `members`), agent_blocked, then presence
    (agent_dnd, agent_offline, agent_busy). The first binding that passes is the owner. With no
    owner the reason is why the first-choice binding failed, since that is the one a sysadmin
    looks at first; `mode` when the client has bindings but none of a kind the mode routes.
    """
    settings = overrides.effective(settings, group)
    if client is None:
        return Ownership(None, (), None, "not_a_client")
    tried, routable = _order(settings.sources, settings.mode)
    given = [bindings[s] for s in tried if s in bindings]
    whole = barred(None, shared=shared)  # the number itself (a binding's agent: in _failure)
    if whole is not None:
        return Ownership(client, tuple(Verdict(b, whole) for b in given), None, whole)
    if not given:
        return Ownership(client, (), None, "no_binding")
    if group is not None and not hours.within(group.sticky_hours, group.timezone, now):
        return Ownership(client, tuple(Verdict(b, "outside_hours") for b in given), None, "outside_hours")
    verdicts = []
    owner = None
    reason = None
    for binding in given:
        failure = "mode" if binding.source not in routable else _failure(
            binding, group, now, settings, agents, availability, blocked)
        verdict = Verdict(binding, failure)
        verdicts.append(verdict)
        if owner is None and failure is None:
            owner = verdict
        if reason is None and failure != "mode":
            reason = failure or binding.source  # the first-choice binding's outcome
    if owner is not None:
        reason = owner.source
    return Ownership(client, tuple(verdicts), owner, reason or "mode")


def _failure(binding: Binding, group: Group | None, now: datetime, settings: Settings,
             agents: Mapping[str, Agent], availability: Mapping[str, str] | None,
             blocked: Collection[str]) -> str | None:
    if not is_current(binding, settings, now):
        return "expired"
    agent = agents.get(binding.agent)
    if agent is None:
        return "agent_unknown"
    if not agent.enabled:
        return "agent_disabled"
    if group is not None and group.sticky_scope == SCOPE_MEMBERS and group.name not in agent.groups:
        return "outside_scope"
    bar = barred(binding.agent, blocked=blocked)
    if bar is not None:
        return bar
    return _UNAVAILABLE_REASONS.get(state_of(agent, availability))


def lasting(anywhere: Ownership, every_hour: Iterable[Ownership] = ()) -> dict[str, str]:
    """The bindings that route in no group whatever the hour and the agents' presence, keyed by
    source, each with why: what `binding list --stale` lists. `anywhere` is `decide` without a
    group; `every_hour`, `decide` in each group at any hour (any_hour(group), no presence); with
    no groups, `anywhere` alone. The why is `anywhere`'s when that one lasts (a blocked agent is
    blocked in every group), else the first group's (outside_scope). A reason in TRANSIENT never
    makes a binding stale: it will route again without anyone changing anything."""
    def lasts(reason: str | None) -> bool:
        return reason is not None and reason not in TRANSIENT

    in_groups = list(every_hour) or [anywhere]
    found = {}
    for verdict in anywhere.verdicts:
        reasons = [decision.of(verdict.source).reason for decision in in_groups]
        if all(lasts(reason) for reason in reasons):
            found[verdict.source] = verdict.reason if lasts(verdict.reason) else reasons[0]
    return found


@lru_cache(maxsize=256)
def any_hour(group: Group) -> Group:
    """The group with no sticky hours: sticky hours are TRANSIENT, never why a binding is stale."""
    return replace(group, sticky_hours="") if group.sticky_hours else group
