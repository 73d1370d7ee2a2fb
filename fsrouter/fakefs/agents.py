"""Scripted agents, and what a bridge to them comes to.

An agent is a registered phone that behaves as its script says: answers after N s, never
answers, is busy, is not registered, hangs up after N s of talk. A bridge's dial string is
parsed the way mod_dptools reads it ({globals}, '|' failover groups, ',' simultaneous legs,
[per-leg vars]) and its outcome is worked out in FreeSWITCH seconds before anything is played
out, so a leg_timeout decides exactly, never by a race with the wall clock.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

# A SIP phone that rings (180, no media) and is not answered ends with NO_ANSWER when leg_timeout
# fires (captures 08, 11); a leg in early media ends with ALLOTTED_TIMEOUT (captures 05, 06).
DEFAULT_ORIGINATE_TIMEOUT = 60.0
DEFAULT_TALK = 12.0
# A busy phone answers 486 at once; the captures show it within a few media frames.
BUSY_AFTER = 0.06
# The first SIP provisional answer (180 Ringing) from a phone.
RING_AFTER = 0.06


@dataclass
class Agent:
    ext: str
    answers_after: float | None = 2.0     # None: never answers
    talk: float = DEFAULT_TALK            # after this much talk the client hangs up
    hangs_up_after: float | None = None   # or the agent hangs up after this much talk
    busy: bool = False
    registered: bool = True
    early_media: bool = False             # a leg_timeout then ends with ALLOTTED_TIMEOUT
    rings: list[float] = field(default_factory=list)   # FreeSWITCH times (s) the phone rang
    transfer: object = None               # a transfers.Transfer: after `talk`, the client is passed on

    @property
    def contact(self) -> str:
        # The captures' agents are gateways registered on the internal profile (gw+a<ext>).
        return f"sofia/internal/sip:gw+a{self.ext}@127.0.0.1:5070;transport=udp;gw=a{self.ext}"


@dataclass
class LegSpec:
    endpoint: str
    variables: dict[str, str]
    ext: str | None            # the user/<ext>@domain it names, if any

    @property
    def leg_timeout(self) -> float | None:
        value = self.variables.get("leg_timeout")
        try:
            return float(value) if value is not None else None
        except ValueError:
            return None


@dataclass
class DialString:
    raw: str
    globals: dict[str, str]
    groups: list[list[LegSpec]]   # failover groups ('|'), each a simultaneous ring (',')

    @property
    def legs(self) -> list[LegSpec]:
        return [leg for group in self.groups for leg in group]

    @property
    def originate_timeout(self) -> float | None:
        value = self.globals.get("originate_timeout")
        try:
            return float(value) if value is not None else None
        except ValueError:
            return None


def _split_top(text: str, separator: str) -> list[str]:
    """Split on `separator` outside [..], {..} and <..>: a leg's own variables hold commas."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        if char in "[{<":
            depth += 1
        elif char in "]}>":
            depth = max(0, depth - 1)
        elif char == separator and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def _variables(text: str) -> dict[str, str]:
    out = {}
    for item in _split_top(text, ","):
        name, sep, value = item.partition("=")
        if sep and name.strip():
            out[name.strip()] = value.strip().strip("'")
    return out


_USER = re.compile(r"^user/([^@/]+)(?:@.*)?$")
_SOFIA = re.compile(r"^sofia/[^/]+/(?:sip:)?(?:gw\+a)?([0-9A-Za-z_.+-]+)@")


def parse_dial_string(raw: str) -> DialString:
    text = raw.strip()
    globals_: dict[str, str] = {}
    while text.startswith("{"):
        end = text.find("}")
        if end < 0:
            break
        globals_.update(_variables(text[1:end]))
        text = text[end + 1:]
    groups = []
    for group_text in _split_top(text, "|"):
        group = []
        for leg_text in _split_top(group_text, ","):
            leg_text = leg_text.strip()
            variables: dict[str, str] = {}
            while leg_text.startswith("["):
                end = leg_text.find("]")
                if end < 0:
                    break
                variables.update(_variables(leg_text[1:end]))
                leg_text = leg_text[end + 1:].strip()
            if not leg_text:
                continue
            match = _USER.match(leg_text) or _SOFIA.match(leg_text)
            group.append(LegSpec(leg_text, variables, match.group(1) if match else None))
        if group:
            groups.append(group)
    return DialString(raw, globals_, groups)


@dataclass
class LegPlan:
    """One originated leg, worked out: what happens to it and when (seconds after the bridge)."""
    spec: LegSpec
    agent: Agent | None
    created: bool            # False: no channel at all (not registered, no route)
    answer_at: float | None
    end_at: float            # when it fails, or (for the winner) when it is answered
    cause: str               # SUCCESS for the winner, else the hangup cause
    progress_at: float | None = None


@dataclass
class BridgePlan:
    legs: list[LegPlan]
    winner: LegPlan | None
    disposition: str         # variable_originate_disposition
    ends_at: float           # when the bridge is answered or has failed


DIALSTATUS = {"SUCCESS": "SUCCESS", "NO_ANSWER": "NOANSWER", "USER_BUSY": "BUSY",
              "ALLOTTED_TIMEOUT": "ALLOTTED_TIMEOUT", "USER_NOT_REGISTERED": "USER_NOT_REGISTERED",
              "NO_ROUTE_DESTINATION": "NO_ROUTE_DESTINATION", "CALL_REJECTED": "CALL_REJECTED"}


def _plan_leg(spec: LegSpec, agent: Agent | None, originate_timeout: float | None, start: float) -> LegPlan:
    if agent is None:
        # An endpoint the fake has no script for: a user/ that is not in the directory or has no
        # registration is USER_NOT_REGISTERED; anything else has no route.
        cause = "USER_NOT_REGISTERED" if spec.endpoint.startswith("user/") else "NO_ROUTE_DESTINATION"
        return LegPlan(spec, None, False, None, start, cause)
    if not agent.registered:
        return LegPlan(spec, agent, False, None, start, "USER_NOT_REGISTERED")
    if agent.busy:
        return LegPlan(spec, agent, True, None, start + BUSY_AFTER, "USER_BUSY")
    limits = [(t, "leg") for t in (spec.leg_timeout,) if t is not None]
    limits += [(t, "originate") for t in (originate_timeout,) if t is not None]
    if not limits:
        limits = [(DEFAULT_ORIGINATE_TIMEOUT, "originate")]
    limit, which = min(limits)
    progress = start + RING_AFTER
    if agent.answers_after is not None and agent.answers_after < limit:
        at = start + agent.answers_after
        return LegPlan(spec, agent, True, at, at, "SUCCESS", progress if at > progress else None)
    cause = "ALLOTTED_TIMEOUT" if which == "leg" and agent.early_media else "NO_ANSWER"
    return LegPlan(spec, agent, True, None, start + limit, cause, progress)


def plan_bridge(dial: DialString, agents: dict[str, Agent]) -> BridgePlan:
    """Failover groups in turn; in a group the first leg to answer wins and the others still
    ringing end with LOSE_RACE. A failed group's disposition is the cause of its last leg to end."""
    start = 0.0
    all_legs: list[LegPlan] = []
    disposition = "NO_ANSWER"
    for group in dial.groups:
        legs = [_plan_leg(spec, agents.get(spec.ext or ""), dial.originate_timeout, start) for spec in group]
        answered = [leg for leg in legs if leg.answer_at is not None]
        if answered:
            winner = min(answered, key=lambda leg: leg.answer_at)
            for leg in legs:
                if leg is not winner and leg.created and leg.end_at >= winner.answer_at:
                    leg.cause, leg.end_at, leg.answer_at = "LOSE_RACE", winner.answer_at, None
            all_legs += legs
            return BridgePlan(all_legs, winner, "SUCCESS", winner.answer_at)
        all_legs += legs
        last = max(legs, key=lambda leg: (leg.end_at, legs.index(leg)))
        disposition = last.cause
        start = last.end_at
    return BridgePlan(all_legs, None, disposition, start)
