"""What fsrouter tells the CRM: the event bodies, and how each delivery is signed.

Pure: no database, no sockets. A body is JSON:

    {"id": "<uuid>", "type": "call.answered", "at": "2024-05-01T09:30:02.000000Z", "data": {...}}

The call.* events are the live call transitions (core/live.py) as the listener tells them, one
event per transition (`live_event`), written into the outbox as they happen (http/outbox.py
LiveEvents); binding.changed and callback.done are written in the transaction of the change they report
(binding_path.py, through the store). `id` is the idempotency key: a retried delivery carries the same id (and the
same bytes), and a call's events have ids derived from the call's uuid, the transition's kind and
its place in the call's story, so the same events replayed give the same ids.

Every call event says who should act on it (`notify`, `recipients`): the agent it names (whose
phone rings, who answered, who took the transfer, who talked last); for an extension that is no
known agent's, the group's supervisors; for a missed call, every member of the group.

Every delivery is signed: X-Fsrouter-Signature is "sha256=" and the hex HMAC-SHA256, keyed with
the webhook secret, of the X-Fsrouter-Timestamp value (unix seconds), a dot, and the raw body.
A receiver recomputes it over the bytes it got and compares in constant time (`verify`).
"""
from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

from . import live
from .binding_changes import BindingChange
from .ids import uuid5
from .missed import MissedCall
from .model import Agent, Group

CALL_RINGING = "call.ringing"
CALL_ANSWERED = "call.answered"
CALL_MISSED = "call.missed"
CALL_ENDED = "call.ended"
CALL_TRANSFERRED = "call.transferred"
BINDING_CHANGED = "binding.changed"
CALLBACK_DONE = "callback.done"
EVENT_TYPES = (CALL_RINGING, CALL_ANSWERED, CALL_TRANSFERRED, CALL_MISSED, CALL_ENDED, BINDING_CHANGED,
               CALLBACK_DONE)
CALL_EVENT = {kind: f"call.{kind}" for kind in live.KINDS}  # transition kind -> event type

# Who should act on a call event (its `notify`).
NOTIFY_AGENT = "agent"  # the agent the event names
NOTIFY_SUPERVISORS = "supervisors"  # the group's supervisors: the extension is no known agent's
NOTIFY_GROUP = "group"  # every member of the group: nobody answered

SIGNATURE_HEADER = "X-Fsrouter-Signature"
TIMESTAMP_HEADER = "X-Fsrouter-Timestamp"
EVENT_HEADER = "X-Fsrouter-Event"
DELIVERY_HEADER = "X-Fsrouter-Delivery"
_NAMESPACE = uuid.UUID("0b6f4a52-3c1e-4d8a-9f7e-5a2c1d0e9b41")


@dataclass(frozen=True)
class Event:
    id: str
    type: str
    at: datetime
    data: dict

    def body(self) -> bytes:
        """The exact bytes that are stored, signed and sent: compact JSON, keys sorted, UTF-8.

        orjson writes them: json.dumps was 3.3% of the daemon's samples in the ingestion blast with
        the live stream on (py-spy), a fifth of writing the live events. What orjson refuses (a
        string with a lone surrogate, an integer past 64 bits) json writes, escaped to ASCII."""
        document = {"id": self.id, "type": self.type, "at": iso(self.at), "data": self.data}
        try:
            return orjson.dumps(document, option=orjson.OPT_SORT_KEYS)
        except TypeError:
            return json.dumps(document, separators=(",", ":"), sort_keys=True).encode("ascii")


def iso(value: datetime | None) -> str | None:
    """UTC, to the microsecond, with a Z: "2024-05-01T09:30:02.000000Z". isoformat, not strftime:
    a third less time, and every event carries one to three of them."""
    if value is None:
        return None
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def event_id(name: str) -> str:
    return uuid5(_NAMESPACE, name)


def _call_id(call_uuid: str | None, kind: str, n: int | str = 0) -> str:
    return event_id(f"{call_uuid}|{kind}|{n}")


def recipients(t: live.Transition, agents: Mapping[str, Agent], group: Group | None) -> tuple[str, list[str]]:
    """Who should act on this transition's event, and why (NOTIFY_*): see the module doc."""
    members = sorted(ext for ext, agent in agents.items() if group is not None and group.name in agent.groups)
    if t.kind == live.MISSED or (t.kind == live.ENDED and not t.agent):
        return NOTIFY_GROUP, members
    if t.agent and t.agent in agents:
        return NOTIFY_AGENT, [t.agent]
    return NOTIFY_SUPERVISORS, list(group.supervisors) if group is not None else []


def live_event(t: live.Transition, bound: str | None, notify: tuple[str, list[str]],
               agents: Mapping[str, Agent] | None = None) -> Event:
    """The webhook event of one call transition. `bound`: who the client was bound to when the
    call came (the sticky leg's agent, else the ownership rule's holder: Service.holder_of);
    `notify`: recipients(); `agents` gives the recipients' CRM ids."""
    kind, who = notify
    agents = agents or {}
    data = {"call_uuid": t.call_uuid, "direction": t.direction, "client": t.client, "group": t.group,
            "seq": t.seq, "bound_agent": bound,
            "notify": kind, "recipients": [{"ext": ext, "crm_id": agents[ext].crm_id if ext in agents else None}
                                           for ext in who]}
    if t.kind == live.RINGING:
        data.update(agent=t.agent, route=t.route)
    elif t.kind == live.ANSWERED:
        data.update(agent=t.agent, agent_was_bound=bound is not None and t.agent == bound, route=t.route,
                    answered_at=iso(t.at))
    elif t.kind == live.TRANSFERRED:
        data.update(from_agent=t.from_agent, to_agent=t.agent, hop=t.hop)
    elif t.kind == live.MISSED:
        call = t.call
        data.update(agent=t.agent, rung=list(call.rung) if call else [], route=call.route if call else None,
                    outcome=call.outcome if call else "missed")
    else:
        call = t.call
        data.update(agent=t.agent, answered=bool(call and call.answered),
                    talk_seconds=call.talk_seconds if call else 0.0,
                    started_at=iso(call.started_at) if call else None, ended_at=iso(t.at),
                    recording=call.recording if call else None, outcome=call.outcome if call else "")
    return Event(_call_id(t.call_uuid, kind=t.kind, n=t.seq), CALL_EVENT[t.kind], t.at, data)


def binding_changed(change: BindingChange, bound_agent: str | None = None) -> Event:
    """What the CRM hears of a reported binding change (binding_changes.BindingChange), with who
    is responsible for the client after it (`bound_agent`: binding_changes.holders_after, the
    ownership rule's holder). The id is derived from the change, so one change stored twice (an
    expiry seen by two daemons) is one event."""
    new = change.new
    key = (f"{change.client}|{change.source}|{change.kind}|{change.from_agent}|{change.to_agent}|"
           f"{iso(change.at)}|{iso(change.old.at) if change.old else None}|{change.call_uuid}")
    return Event(event_id(key), BINDING_CHANGED, change.at, {
        "client": change.client, "source": change.source, "old_agent": change.from_agent,
        "new_agent": change.to_agent, "why": change.why, "kind": change.kind, "bound_agent": bound_agent,
        "expires_at": iso(new.expires_at) if new else None, "call_uuid": change.call_uuid})


def callback_done(missed: MissedCall) -> Event:
    """An agent called back a client whose call was missed (one event per missed call closed)."""
    back = missed.closing_call
    assert back is not None, "an open missed call has no callback"
    return Event(_call_id(back.uuid, CALLBACK_DONE, missed.call.uuid), CALLBACK_DONE, back.started_at, {
        "call_uuid": back.uuid, "client": missed.client, "agent": back.agent,
        "client_answered": bool(back.answered), "missed_call_uuid": missed.call.uuid,
        "missed_at": iso(missed.call.started_at), "missed_group": missed.call.group,
        "missed_sticky_agent": missed.call.sticky_agent, "callback_after_seconds": int(missed.callback_after.total_seconds())})


# -- signatures --------------------------------------------------------------------------------------

def signature(secret: str, timestamp: int | str, body: bytes) -> str:
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode("ascii") + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def headers(event_id: str, event_type: str, body: bytes, secret: str, *, now: float) -> dict[str, str]:
    """A delivery's headers, signed at `now` (a Unix time: the sender's clock)."""
    timestamp = int(now)
    return {
        "Content-Type": "application/json",
        "User-Agent": "fsrouter-webhooks/1",
        EVENT_HEADER: event_type,
        DELIVERY_HEADER: event_id,
        "Idempotency-Key": event_id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: signature(secret, timestamp, body),
    }


def verify(secret: str, timestamp: str, body: bytes, signed: str, *, now: float, tolerance: float = 300.0) -> bool:
    """What a receiver does: the signature matches and the timestamp is recent (no replays)."""
    try:
        age = abs(now - int(timestamp))
    except (TypeError, ValueError):
        return False
    expected = signature(secret, timestamp, body)
    return age <= tolerance and hmac.compare_digest(expected.encode(), str(signed).encode())
