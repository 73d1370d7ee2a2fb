"""How calls teach bindings: pure functions of the call, the settings and the current binding."""
from __future__ import annotations

from datetime import datetime

from .model import AUTO, INBOUND, OUTBOUND, Binding, Call
from .settings import Settings


def qualifies(call: Call, settings: Settings) -> bool:
    """Does this call, by itself, bind its client to its agent?

    Talk time exactly `min_talk` is enough (>=). An inbound call counts as answered when it has an
    agent (the one who answered) and talk time; the `answered` flag is not needed for inbound,
    since talk time only starts at an answer. An outbound call needs `answered` (the client
    picked up) only under `outbound_requires_answer`.
    """
    if not call.agent:
        return False
    if settings.learn_from not in ("both", call.direction):
        return False
    talked_enough = call.talk_seconds >= settings.min_talk.total_seconds()
    if call.direction == INBOUND:
        return talked_enough
    if call.direction == OUTBOUND:
        # An agent who dials a client has taken the client on, answered or not.
        return (call.answered and talked_enough) if settings.outbound_requires_answer else True
    return False


def learn(call: Call, settings: Settings, current: Binding | None) -> Binding | None:
    """The learned binding after this call, or None when the call changes nothing.

    Events arrive out of order (two calls ending together, several nodes): the call that ended
    later wins, never the one processed later. Calls that ended at the very same instant are
    ordered by agent, then call uuid, then the text of `why` -- an arbitrary but total order, so
    folding `learn` over any set of calls gives one answer whatever order they came in (and a
    call seen twice changes nothing the second time).

    `current` is the client's learned binding. A manual binding passed here is not compared
    with: learning never touches a manual binding, and the result always has source AUTO.
    """
    if not qualifies(call, settings):
        return None
    candidate = Binding(
        client=call.client,
        agent=call.agent,
        source=AUTO,
        at=call.ended_at,
        why=_why(call),
        call_uuid=call.uuid,
    )
    if current is not None and current.source == AUTO and _rank(current) >= _rank(candidate):
        return None
    return candidate


def _rank(binding: Binding) -> tuple:
    return (binding.at, binding.agent, binding.call_uuid or "", binding.why)


def _why(call: Call) -> str:
    if call.direction == INBOUND:
        return f"answered inbound call, talked {call.talk_seconds:.0f}s"
    if call.answered:
        return f"outbound call by agent, talked {call.talk_seconds:.0f}s"
    return "outbound call by agent, not answered"


def is_current(binding: Binding, settings: Settings, now: datetime) -> bool:
    """Is the binding still inside its expiry (manual) or look-back window (learned)?

    An expiry is exclusive (at `expires_at` the binding no longer routes); the look-back window
    is inclusive (a call that ended exactly `lookback` ago still routes). `lookback` 0 is forever.
    The look-back window never applies to manual bindings.
    """
    if binding.expires_at is not None and binding.expires_at <= now:
        return False
    if binding.source == AUTO and settings.lookback.total_seconds() > 0:
        return now - binding.at <= settings.lookback
    return True
