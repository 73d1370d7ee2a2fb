"""Plain data the core works on: no database, no sockets, no clock.

Times are timezone-aware UTC datetimes; durations are timedeltas.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta

INBOUND = "inbound"
OUTBOUND = "outbound"
DIRECTIONS = (INBOUND, OUTBOUND)

MANUAL = "manual"
AUTO = "auto"
SOURCES = (MANUAL, AUTO)  # the bindings the store keeps
CRM = "crm"  # an answer of the CRM, asked per call (crm.py); never stored
ROUTE_SOURCES = (CRM, MANUAL, AUTO)  # what the `sources` setting orders

SIMULTANEOUS = "simultaneous"
SEQUENTIAL = "sequential"
STRATEGIES = (SIMULTANEOUS, SEQUENTIAL)

SCOPE_ANY = "any"
SCOPE_MEMBERS = "members"
STICKY_SCOPES = (SCOPE_ANY, SCOPE_MEMBERS)

# An extension is what a sysadmin types and what goes into a dial string, so it is kept to
# characters that mean nothing to FreeSWITCH's dial-string or API syntax.
EXTENSION_RE = re.compile(r"\A[0-9A-Za-z_.-]{1,32}\Z")
GROUP_NAME_RE = re.compile(r"\A[0-9A-Za-z_.-]{1,64}\Z")
# A call's id: FreeSWITCH's uuid of its channel, as the listener, `calls import` and the CDR
# catch-up all record it (fullmatch).
CALL_UUID_RE = re.compile(r"[0-9A-Za-z][0-9A-Za-z-]{0,63}")


def default_dial_string(ext: str) -> str:
    return f"user/{ext}@${{domain_name}}"


@dataclass(frozen=True)
class Agent:
    ext: str
    name: str
    dial_string: str = ""  # empty: default_dial_string(ext)
    priority: int = 100  # lower rings first in a sequential fallback
    enabled: bool = True
    groups: frozenset[str] = frozenset()
    crm_id: str | None = None  # the agent's user id in the CRM (`agent set EXT --crm-id ID`)
    dnd: bool = False  # do not disturb (`agent dnd EXT on`): never rung, sticky or fallback

    def __post_init__(self):
        if not self.dial_string:
            object.__setattr__(self, "dial_string", default_dial_string(self.ext))


@dataclass(frozen=True)
class Group:
    name: str
    strategy: str = SIMULTANEOUS
    sticky_scope: str = SCOPE_ANY
    # Ring time of each leg of the fallback: the whole group when simultaneous, each agent when sequential.
    ring_timeout: timedelta = timedelta(seconds=30)
    # When the sticky leg may ring (see hours.py); "" = always. The zone is an IANA name ("" = UTC).
    sticky_hours: str = ""
    timezone: str = ""
    # The group's own values of global settings (see overrides.py), as (key, text) pairs.
    overrides: tuple[tuple[str, str], ...] = ()
    # Extensions told when a call of the group is answered by an extension that is no known
    # agent's (`group set NAME --supervisor EXT`; core/webhooks.recipients).
    supervisors: tuple[str, ...] = ()


@dataclass(frozen=True)
class Binding:
    client: str
    agent: str
    source: str  # MANUAL or AUTO
    # For AUTO: when the call that created or last confirmed it ended; it is what the look-back
    # window and the "later-ended call wins" rule compare. For MANUAL: when it was set.
    at: datetime
    expires_at: datetime | None = None
    why: str = ""
    call_uuid: str | None = None


@dataclass(frozen=True)
class Call:
    """One finished call, whoever saw it (the live event stream or a CSV import).

    The learning rules read direction, client, agent, ended_at, talk_seconds and answered; the
    rest is the call record that `calls list` and reports show.
    """

    direction: str  # INBOUND (the client called the office) or OUTBOUND (an agent called the client)
    client: str  # E.164
    agent: str | None  # who answered (inbound) or placed (outbound) the call; None if nobody answered
    started_at: datetime
    ended_at: datetime
    talk_seconds: float = 0.0  # the agent's talk time: from their answer to their leg's hang-up
    answered: bool = False  # did the called side pick up
    uuid: str | None = None
    group: str | None = None
    answered_at: datetime | None = None
    rung: tuple[str, ...] = ()  # agents whose phones rang, in order
    route: str | None = None  # sticky | fallback | none, when fsrouter routed the call
    outcome: str = ""  # answered | missed | abandoned | hangup cause
    # Not stored with the record; read off the events for the webhooks (webhooks.py):
    recording: str | None = None  # fsrouter_recording, when the dialplan recorded the call there
    handled_by: tuple[str, ...] = ()  # agents who talked to the client, in turn (transfers)
    sticky_agent: str | None = None  # whose sticky leg rang first (fsrouter_agent), when one did


@dataclass(frozen=True)
class Leg:
    agent: str
    dial_string: str
    timeout: timedelta


@dataclass(frozen=True)
class RoutePlan:
    client: str | None
    group: str
    sticky: Leg | None
    source: str | None  # MANUAL, AUTO, or None when no sticky leg
    reason: str  # why this sticky leg, or why none (see routing.REASONS)
    fallback: tuple[Leg, ...] = field(default_factory=tuple)
    strategy: str = SIMULTANEOUS

    @property
    def agent(self) -> str | None:
        return self.sticky.agent if self.sticky else None

    def as_dict(self) -> dict:
        return {
            "client": self.client,
            "group": self.group,
            "agent": self.agent,
            "source": self.source,
            "reason": self.reason,
            "timeout": self.sticky.timeout.total_seconds() if self.sticky else None,
            "strategy": self.strategy,
            "fallback": [
                {"agent": leg.agent, "dial_string": leg.dial_string, "timeout": leg.timeout.total_seconds()}
                for leg in self.fallback
            ],
        }
