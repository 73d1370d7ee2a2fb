"""An agent passing the client on, as FreeSWITCH 1.10.12 plays it (captures 12, 13 and 13b).

Script it on the agent who answers: `fake.agent("1003", answers_after=1, talk=3,
transfer=Transfer(BLIND, "1001"))`; after `talk` seconds with the client, 1003 hands the client
to 1001, whose own script (answers_after, talk) then decides when 1001 answers and how long the
client talks to them. What a listener sees, channel by channel (tests/test_fakefs_transfers.py
checks it against the captures):

BLIND (12, a blind REFER): the client's channel is unbridged from 1003's leg, which hangs up; the
  client's channel (its destination now the new extension) originates a leg to 1001, which
  answers, and the client's channel fires the CHANNEL_BRIDGE.
ATTENDED (13, REFER with Replaces): 1003's phone calls 1001 (an inbound channel
  sofia/internal/1003@..., destination 1001, bridged to the leg it originates); after `consult`
  seconds FreeSWITCH hangs up both of 1003's channels and uuid-bridges the client to that leg,
  whose originator stays the consultation channel.
ATT_XFER (13b, the `*4` feature code): 1003's own leg originates the leg to 1001 and is bridged
  to it (the CHANNEL_BRIDGE fires on 1003's leg); after `consult` seconds 1003's leg hangs up and
  FreeSWITCH uuid-bridges the 1001 leg to the client (fired on the 1001 leg: Bridge-A is that leg,
  Bridge-B the client), and swaps the caller ID on the client's channel: its later events say
  Caller-Caller-ID-Number 1001, Caller-Callee-ID-Number the client (switch_ivr_bridge.c).

In the outbound-socket session the router's bridge completes with SUCCESS at the hand-over (12
shows it for a blind transfer): nothing on that socket says who took the call.
"""
from __future__ import annotations

from dataclasses import dataclass

from .channel import Channel

BLIND = "blind"
ATTENDED = "attended"  # REFER with Replaces
ATT_XFER = "att_xfer"
KINDS = (BLIND, ATTENDED, ATT_XFER)
RING_FOR = 20.0  # FreeSWITCH seconds a transfer's leg rings before it is given up (NO_ANSWER)


@dataclass(frozen=True)
class Transfer:
    kind: str  # BLIND, ATTENDED or ATT_XFER
    to: str  # the extension the client is passed to
    consult: float = 2.0  # ATTENDED, ATT_XFER: FreeSWITCH seconds the operator talks to `to` first

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"transfer kind {self.kind!r}: one of {', '.join(KINDS)}")


def play(call, leg: Channel, transfer: Transfer, complete_bridge):
    """Hand the client over from `leg` as `transfer` says. Returns the new leg, bridged to the
    client, and the script of its agent; or None when the client hung up meanwhile or nobody
    answered (the caller's hang-up is then the caller's to play). `complete_bridge()` tells the
    router's session that its bridge is over (SUCCESS)."""
    if transfer.kind == BLIND:
        return _blind(call, leg, transfer, complete_bridge)
    return _attended(call, leg, transfer, complete_bridge)


def _now(call) -> int:
    return call.clock.now_us()


def _new_leg(call, to: str, caller: str, originator: Channel, at_us: int) -> Channel:
    new = Channel("agent", f"sofia/internal/gw+a{to}@127.0.0.1:5070", caller, to, ext=to,
                  group=call.channel.group, created_us=at_us)
    new.other = originator
    new.role_shape = "agent_answer"
    call.fake.channels[new.uuid] = new
    call.emit(new, "agent_answer/CHANNEL_CREATE", "CHANNEL_CREATE", at_us)
    call.emit(new, "agent_answer/CHANNEL_ORIGINATE", "CHANNEL_ORIGINATE", at_us)
    return new


def _answers(call, new: Channel, to: str):
    """Until `to` answers the new leg: its script, or None (hung up meanwhile, never answers)."""
    agent = call.fake.agents.get(to)
    answers = agent.answers_after if agent is not None and agent.registered and not agent.busy else None
    if call.wait_fs(RING_FOR if answers is None else answers) or answers is None:
        _down(call, new, _now(call), "NO_ANSWER" if answers is None else "ORIGINATOR_CANCEL")
        return None
    at = _now(call)
    new.times["answered"] = at
    new.answer_state, new.call_state = "answered", "ACTIVE"
    call.emit(new, "agent_answer/CHANNEL_ANSWER", "CHANNEL_ANSWER", at)
    return agent


def _down(call, channel: Channel, at_us: int, cause: str = "NORMAL_CLEARING") -> None:
    channel.hangup_cause = cause
    channel.answer_state, channel.call_state, channel.alive = "hangup", "HANGUP", False
    channel.times["hangup"] = at_us
    call.fake.channels.pop(channel.uuid, None)
    call.emit(channel, f"{channel.role_shape}/CHANNEL_HANGUP", "CHANNEL_HANGUP", at_us)
    call.emit(channel, f"{channel.role_shape}/CHANNEL_HANGUP_COMPLETE", "CHANNEL_HANGUP_COMPLETE", at_us)


def _bridge_client(call, new: Channel, at_us: int, fired_on_leg: bool) -> None:
    ch = call.channel
    ch.other, new.other = new, ch
    ch.times["bridged"] = new.times["bridged"] = at_us
    for name in ("last_bridge_to", "bridge_uuid", "signal_bond"):
        ch.dynamic[name] = new.uuid
    ch.dynamic["bridge_channel"] = new.name
    if fired_on_leg:
        call.emit(new, "agent_answer/CHANNEL_BRIDGE", "CHANNEL_BRIDGE", at_us)
    else:
        call.emit(ch, "client/CHANNEL_BRIDGE", "CHANNEL_BRIDGE", at_us)


def _blind(call, leg: Channel, transfer: Transfer, complete_bridge):
    ch = call.channel
    at = _now(call)
    complete_bridge()
    call.emit(ch, "client/CHANNEL_UNBRIDGE", "CHANNEL_UNBRIDGE", at)
    _down(call, leg, at)
    ch.dest = transfer.to  # the client's channel now runs `transfer <ext> XML default`
    new = _new_leg(call, transfer.to, ch.caller, ch, _now(call))
    agent = _answers(call, new, transfer.to)
    if agent is None:
        return None
    _bridge_client(call, new, new.times["answered"], fired_on_leg=False)
    return new, agent


def _attended(call, leg: Channel, transfer: Transfer, complete_bridge):
    ch, operator = call.channel, leg.ext
    at = _now(call)
    consultation = None
    if transfer.kind == ATTENDED:
        # The operator's phone calls `to`: a call of its own until the REFER joins it to the client.
        consultation = Channel("out", f"sofia/internal/{operator}@127.0.0.1", operator, transfer.to, ext=operator,
                               created_us=at)
        consultation.role_shape = "out_answer"
        call.fake.channels[consultation.uuid] = consultation
        call.emit(consultation, "out_answer/CHANNEL_CREATE", "CHANNEL_CREATE", at)
        originator = consultation
    else:
        originator = leg  # att_xfer runs on the operator's leg, which originates the new one
        leg.dynamic["dialed_user"] = transfer.to  # 13b: 1003's leg ends with variable_dialed_user 1001
    new = _new_leg(call, transfer.to, operator, originator, _now(call))
    new.operator, new.operator_uuid = operator, originator.uuid
    new.dynamic["originator"] = originator.uuid  # it stays the originator after the hand-over
    agent = _answers(call, new, transfer.to)
    if agent is None:
        if consultation is not None:
            _down(call, consultation, _now(call))
        return None
    answered = new.times["answered"]
    if consultation is not None:
        consultation.times["answered"] = consultation.times["bridged"] = answered
        consultation.answer_state, consultation.call_state = "answered", "ACTIVE"
        call.emit(consultation, "out_answer/CHANNEL_ANSWER", "CHANNEL_ANSWER", answered)
        consultation.other = new
        call.emit(consultation, "out_answer/CHANNEL_BRIDGE", "CHANNEL_BRIDGE", answered)
    else:
        leg.other, leg.operator, leg.operator_uuid = new, operator, ch.uuid  # Bridge-B: the new leg; the
        # originator stays the client
        leg.dynamic["originator"] = ch.uuid
        # The shape is the 1001 leg's (13b), whose caller ID FreeSWITCH had made 1001: the
        # operator's leg keeps the client's.
        leg.headers.update({"Caller-Caller-ID-Number": ch.caller, "Caller-Caller-ID-Name": ch.caller})
        call.emit(leg, "agent_answer/CHANNEL_BRIDGE", "CHANNEL_BRIDGE", answered)
    if call.wait_fs(transfer.consult):  # the client hung up while the operator consulted
        for channel in (new, consultation):
            if channel is not None:
                _down(call, channel, _now(call))
        leg.other = ch
        return None
    at = _now(call)
    complete_bridge()
    if consultation is not None:
        call.emit(consultation, "out_answer/CHANNEL_UNBRIDGE", "CHANNEL_UNBRIDGE", at)
        call.emit(ch, "client/CHANNEL_UNBRIDGE", "CHANNEL_UNBRIDGE", at)
        _down(call, consultation, at)
        _down(call, leg, at)
        # The leg now talks to the client, and says so (13: its HANGUP_COMPLETE names the client).
        new.headers.update({"Caller-Caller-ID-Number": ch.caller, "Caller-Caller-ID-Name": ch.caller})
        _bridge_client(call, new, at, fired_on_leg=False)
    else:
        call.emit(ch, "client/CHANNEL_UNBRIDGE", "CHANNEL_UNBRIDGE", at)
        call.emit(leg, "agent_answer/CHANNEL_UNBRIDGE", "CHANNEL_UNBRIDGE", at)
        _down(call, leg, at)
        # uuid_bridge inverts the caller ID of the inbound channel it bridges as the originatee.
        ch.headers.update({"Caller-Caller-ID-Number": transfer.to, "Caller-Caller-ID-Name": transfer.to,
                           "Caller-Callee-ID-Number": ch.caller, "Caller-Callee-ID-Name": ch.caller})
        new.headers.update({"Caller-Caller-ID-Number": transfer.to, "Caller-Caller-ID-Name": transfer.to})
        _bridge_client(call, new, at, fired_on_leg=True)
        call.unbridged_by_leg = new  # its end is told on the leg too (13b)
    return new, agent
