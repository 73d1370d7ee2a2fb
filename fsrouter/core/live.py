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

from dataclasses import dataclass, field, replace
from datetime import datetime

from .missed import is_missed
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


def story_of_finished(call: Call) -> list[Transition]:
    """The transitions of a call known only once it was over (recovered from a CDR by the
    catch-up, while nobody listened): its answer, or that it was missed (core.missed.is_missed),
    then its end; numbered from 1, as the listener would have numbered a story it saw whole."""
    base = {"call_uuid": call.uuid or "", "direction": call.direction, "client": call.client, "group": call.group}
    told = []
    if call.answered and call.agent:
        told.append(Transition(ANSWERED, at=call.answered_at or call.started_at, agent=call.agent,
                               route=call.route, **base))
    if is_missed(call):
        told.append(Transition(MISSED, at=call.ended_at, agent=call.rung[-1] if call.rung else None, call=call,
                               **base))
    told.append(Transition(ENDED, at=call.ended_at, agent=call.agent, call=call, **base))
    return [replace(t, seq=n) for n, t in enumerate(told, start=1)]
