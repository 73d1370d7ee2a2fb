"""A call's story as it happens: the transitions the event listener sees, in FreeSWITCH's order.

Pure data. The listener (esl/events.py) turns CHANNEL events into these as they arrive; the
webhooks, the agent's screen pop and the office board read them (through hub.Hub); the finished
call record is told by the same model, not derived a second time.

Kinds, and what `agent` names in each:
  ringing      a leg to an agent was created: whose phone rings (`route`: sticky or fallback,
               None when fsrouter did not route the call)
  answered     an agent answered: who (every answer, the one before a transfer included)
  transferred  the client is now connected to another agent: `agent` took it, `from_agent`
               passed it on, `hop` counts hand-overs from 1 (blind, REFER/Replaces, att_xfer)
  missed       the client hung up and nobody answered: the last agent rung, or None
  ended        the client's call is over: the agent who talked last, or None
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from .model import Call

RINGING = "ringing"
ANSWERED = "answered"
TRANSFERRED = "transferred"
MISSED = "missed"
ENDED = "ended"
KINDS = (RINGING, ANSWERED, TRANSFERRED, MISSED, ENDED)


@dataclass(frozen=True)
class Transition:
    kind: str  # one of KINDS
    call_uuid: str  # the client's channel (inbound) or the agent's own channel (outbound)
    at: datetime  # when FreeSWITCH fired the event that caused it (aware UTC)
    direction: str  # model.INBOUND or model.OUTBOUND
    client: str  # E.164
    agent: str | None = None  # see the module doc
    from_agent: str | None = None  # transferred: who passed the call on
    route: str | None = None  # ringing: "sticky" | "fallback" | None
    group: str | None = None
    hop: int = 0  # transferred: 1 for the first hand-over
    seq: int = 0  # the transition's place in its call's story, from 1
    # missed, ended: the finished call record, told from the same story (esl/events.py)
    call: Call | None = field(default=None, compare=False, repr=False)
