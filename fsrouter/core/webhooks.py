"""What fsrouter tells the CRM: the event bodies, and how each delivery is signed.

Pure: no database, no sockets. They are written into the outbox in the transaction of the change
they report (binding_path.py, through the store; outbox.py sends them). A body is JSON:

    {"id": "<uuid>", "type": "call.answered", "at": "2024-05-01T09:30:02.000000Z", "data": {...}}

`id` is the idempotency key: a retried delivery carries the same id (and the same bytes), and the
events of a call have ids derived from the call's uuid, so a call recorded twice gives the same ids.

Every delivery is signed: X-Fsrouter-Signature is "sha256=" and the hex HMAC-SHA256, keyed with
the webhook secret, of the X-Fsrouter-Timestamp value (unix seconds), a dot, and the raw body.
A receiver recomputes it over the bytes it got and compares in constant time (`verify`).
"""
from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import time
import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from . import ownership
from .binding_changes import BindingChange
from .missed import MissedCall
from .model import INBOUND, Agent, Binding, Call, Group
from .settings import Settings

CALL_ANSWERED = "call.answered"
CALL_MISSED = "call.missed"
CALL_ENDED = "call.ended"
CALL_TRANSFERRED = "call.transferred"
BINDING_CHANGED = "binding.changed"
CALLBACK_DONE = "callback.done"
EVENT_TYPES = (CALL_ANSWERED, CALL_MISSED, CALL_ENDED, CALL_TRANSFERRED, BINDING_CHANGED, CALLBACK_DONE)

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
        """The exact bytes that are stored, signed and sent."""
        return json.dumps({"id": self.id, "type": self.type, "at": iso(self.at), "data": self.data},
                          ensure_ascii=False, separators=(",", ":"), sort_keys=True).encode("utf-8")


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _call_id(call: Call, kind: str, n: int | str = 0) -> str:
    return str(uuid.uuid5(_NAMESPACE, f"{call.uuid}|{kind}|{n}"))


def bound_agent(call: Call, before: Mapping[str, Binding], agents: Mapping[str, Agent], settings: Settings,
                group: Group | None = None, blocked: Collection[str] = (), shared: bool = False) -> str | None:
    """Who the client was bound to when the call came (the events' bound_agent): the agent of
    the sticky leg fsrouter rang, else who the ownership rule holds responsible in the call's
    group (`before`: the client's bindings by source before the call)."""
    if call.sticky_agent:
        return call.sticky_agent
    return ownership.decide(call.client, before, agents, settings, call.started_at, group=group,
                            blocked=blocked, shared=shared).holder


def call_events(call: Call, bound_agent: str | None) -> list[Event]:
    """The events one finished call gives: answered or missed, each transfer, then ended.

    `bound_agent` is who the client was bound to when the call came (the agent of the sticky leg
    fsrouter rang, else the client's binding before this call); `agent_was_bound` says whether the
    bound agent is the one who answered.
    """
    base = {"call_uuid": call.uuid, "direction": call.direction, "client": call.client, "group": call.group}
    events = []
    if call.agent and (call.answered or call.direction == INBOUND):
        events.append(Event(_call_id(call, CALL_ANSWERED), CALL_ANSWERED, call.answered_at or call.started_at, {
            **base, "agent": call.agent, "bound_agent": bound_agent,
            "agent_was_bound": bound_agent is not None and call.agent == bound_agent,
            "route": call.route, "answered_at": iso(call.answered_at)}))
    else:
        events.append(Event(_call_id(call, CALL_MISSED), CALL_MISSED, call.ended_at, {
            **base, "agent": call.agent, "bound_agent": bound_agent, "rung": list(call.rung),
            "route": call.route, "outcome": call.outcome}))
    hops = call.handled_by
    for n, (from_agent, to_agent) in enumerate(itertools.pairwise(hops)):
        events.append(Event(_call_id(call, CALL_TRANSFERRED, n), CALL_TRANSFERRED, call.ended_at, {
            **base, "from_agent": from_agent, "to_agent": to_agent, "bound_agent": bound_agent,
            "hop": n + 1}))
    events.append(Event(_call_id(call, CALL_ENDED), CALL_ENDED, call.ended_at, {
        **base, "agent": call.agent, "answered": bool(call.answered), "talk_seconds": call.talk_seconds,
        "started_at": iso(call.started_at), "ended_at": iso(call.ended_at), "recording": call.recording,
        "outcome": call.outcome}))
    return events


def binding_changed(change: BindingChange) -> Event:
    """What the CRM hears of a reported binding change (binding_changes.BindingChange). The id is
    derived from the change, so one change stored twice (an expiry seen by two daemons) is one
    event."""
    new = change.new
    key = (f"{change.client}|{change.source}|{change.kind}|{change.from_agent}|{change.to_agent}|"
           f"{iso(change.at)}|{iso(change.old.at) if change.old else None}|{change.call_uuid}")
    return Event(str(uuid.uuid5(_NAMESPACE, key)), BINDING_CHANGED, change.at, {
        "client": change.client, "source": change.source, "old_agent": change.from_agent,
        "new_agent": change.to_agent, "why": change.why, "kind": change.kind,
        "expires_at": iso(new.expires_at) if new else None, "call_uuid": change.call_uuid})


def callback_done(missed: MissedCall) -> Event:
    """An agent called back a client whose call was missed (one event per missed call closed)."""
    back = missed.closing_call
    assert back is not None, "an open missed call has no callback"
    return Event(_call_id(back, CALLBACK_DONE, missed.call.uuid), CALLBACK_DONE, back.started_at, {
        "call_uuid": back.uuid, "client": missed.client, "agent": back.agent,
        "client_answered": bool(back.answered), "missed_call_uuid": missed.call.uuid,
        "missed_at": iso(missed.call.started_at), "missed_group": missed.call.group,
        "missed_sticky_agent": missed.call.sticky_agent, "callback_after_seconds": int(missed.callback_after.total_seconds())})


# -- signatures --------------------------------------------------------------------------------------

def signature(secret: str, timestamp: int | str, body: bytes) -> str:
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode("ascii") + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def headers(event_id: str, event_type: str, body: bytes, secret: str, now: float | None = None) -> dict[str, str]:
    timestamp = int(time.time() if now is None else now)
    return {
        "Content-Type": "application/json",
        "User-Agent": "fsrouter-webhooks/1",
        EVENT_HEADER: event_type,
        DELIVERY_HEADER: event_id,
        "Idempotency-Key": event_id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: signature(secret, timestamp, body),
    }


def verify(secret: str, timestamp: str, body: bytes, signed: str, tolerance: float = 300.0,
           now: float | None = None) -> bool:
    """What a receiver does: the signature matches and the timestamp is recent (no replays)."""
    try:
        age = abs((time.time() if now is None else now) - int(timestamp))
    except (TypeError, ValueError):
        return False
    expected = signature(secret, timestamp, body)
    return age <= tolerance and hmac.compare_digest(expected.encode(), str(signed).encode())
