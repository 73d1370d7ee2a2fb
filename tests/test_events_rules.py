"""Rules of the call tracker on synthetic event sequences: transfers, short calls, what is not a
call, hostile caller IDs, unknown channels, Event-Sequence gaps, bounded memory.

The events are written the way FreeSWITCH 1.10 wrote them in ../shared/esl-captures: the same
header names, url-decoded values, times in microseconds, `Caller-Channel-Hangup-Time` 0 until
CHANNEL_HANGUP_COMPLETE, CHANNEL_BRIDGE fired on the bridge's originator with
`Bridge-A-Unique-ID`/`Bridge-B-Unique-ID`. Transfers follow what mod_sofia does on a SIP REFER
(blind: the client channel is transferred to the dialplan and bridges a new leg; attended, with
Replaces: `switch_ivr_uuid_bridge(consulted leg, client)`, then the consultation call hangs up
with ATTENDED_TRANSFER) and what mod_dptools' att_xfer does.
"""
from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from fsrouter.core.model import INBOUND, OUTBOUND, Call
from fsrouter.core.rules import learn
from fsrouter.core.settings import Settings
from fsrouter.esl.events import LINGER, CallTracker

AGENTS = frozenset({"1001", "1002", "1003", "1004"})
CLIENT = "+380501234567"
T0 = 1_795_536_284_582_664  # capture 11's first event, in microseconds


class FakeSwitch:
    """Writes CHANNEL events for scripted channels, feeds them to a tracker, keeps the calls."""

    def __init__(self, agents=AGENTS, **options):
        self.tracker = CallTracker(agents=agents, region="UA", **options)
        self.sequence = 193_000
        self.now = T0
        self.channels: dict[str, dict[str, str]] = {}
        self.calls: list[Call] = []

    def at(self, seconds: float) -> FakeSwitch:
        self.now = T0 + round(seconds * 1_000_000)
        return self

    # -- channels ------------------------------------------------------------------------------
    def client_calls(self, uuid, number="0501234567", group="sales", route="sticky"):
        """A client's call arriving from the carrier, sent to the socket with its group set."""
        self._channel(uuid, f"sofia/carrier/{number}@127.0.0.1", "inbound", number, "5100",
                      **{"Caller-Username": number, "Caller-Context": "public"})
        self.emit("CHANNEL_CREATE", uuid)
        if group:
            self.set(uuid, fsrouter_group=group)
        if route:
            self.set(uuid, fsrouter_route=route)

    def agent_dials(self, uuid, agent, number, caller_id=None):
        """An agent's phone calling FreeSWITCH (inbound to it), e.g. to an outside number."""
        self._channel(uuid, f"sofia/internal/{agent}@127.0.0.1", "inbound", caller_id or agent, number,
                      **{"Caller-Username": agent, "variable_user_name": agent})
        self.emit("CHANNEL_CREATE", uuid)

    def rings(self, leg, agent, originator, dialed=None):
        """An outbound leg to an agent's phone, originated by `originator` (bridge user/<agent>)."""
        caller = self.channels[originator]["Caller-Caller-ID-Number"]
        dialed = agent if dialed is None else dialed
        self._channel(leg, f"sofia/internal/{agent}@127.0.0.1:5070", "outbound", caller, dialed,
                      **{"variable_dialed_user": dialed, "variable_dialed_domain": "127.0.0.1",
                         "variable_originator": originator, "Other-Leg-Unique-ID": originator,
                         "Other-Type": "originator"})
        self.emit("CHANNEL_CREATE", leg)
        self.emit("CHANNEL_ORIGINATE", leg)

    def dials_out(self, leg, number, originator):
        """The carrier leg of an agent's outside call."""
        caller = self.channels[originator]["Caller-Caller-ID-Number"]
        self._channel(leg, f"sofia/gateway/carrier/{number}", "outbound", caller, number,
                      **{"variable_originator": originator, "Other-Leg-Unique-ID": originator,
                         "Other-Type": "originator"})
        self.emit("CHANNEL_CREATE", leg)

    # -- events --------------------------------------------------------------------------------
    def set(self, uuid, **variables):
        self.channels[uuid].update({f"variable_{k}": v for k, v in variables.items()})
        return self.emit("CHANNEL_EXECUTE_COMPLETE", uuid, Application="set")

    def answer(self, uuid):
        self.channels[uuid]["Caller-Channel-Answered-Time"] = str(self.now)
        return self.emit("CHANNEL_ANSWER", uuid)

    def bridge(self, originator, other, event="CHANNEL_BRIDGE"):
        """FreeSWITCH fires CHANNEL_BRIDGE / UNBRIDGE once, on the bridge's originator."""
        if event == "CHANNEL_BRIDGE":
            self.channels[originator]["Other-Leg-Unique-ID"] = other
            self.channels[originator]["variable_originate_disposition"] = "SUCCESS"
        return self.emit(event, originator, **{"Bridge-A-Unique-ID": originator, "Bridge-B-Unique-ID": other})

    def unbridge(self, originator, other):
        return self.bridge(originator, other, event="CHANNEL_UNBRIDGE")

    def hangup(self, uuid, cause="NORMAL_CLEARING", complete=True):
        self.channels[uuid]["_hangup_at"] = str(self.now)
        self.channels[uuid]["Hangup-Cause"] = cause
        calls = self.emit("CHANNEL_HANGUP", uuid)
        return calls + self.complete(uuid) if complete else calls

    def complete(self, uuid):
        channel = self.channels[uuid]
        hung_up = int(channel.pop("_hangup_at", self.now))
        answered = int(channel["Caller-Channel-Answered-Time"])
        channel["Caller-Channel-Hangup-Time"] = str(hung_up)
        channel["variable_billsec"] = str((hung_up - answered) // 1_000_000 if answered else 0)
        return self.emit("CHANNEL_HANGUP_COMPLETE", uuid)

    def emit(self, event, uuid, **extra) -> list[Call]:
        self.sequence += 1
        headers = {"Event-Name": event, "Core-UUID": "d6e5c7e7-2cbd-4c0b-9e62-1fac66fc330d",
                   "Event-Date-Timestamp": str(self.now), "Event-Sequence": str(self.sequence)}
        headers.update({k: v for k, v in self.channels.get(uuid, {"Unique-ID": uuid}).items()
                        if not k.startswith("_")})
        headers.update(extra)
        calls = self.tracker.feed(headers)
        self.calls += calls
        return calls

    def _channel(self, uuid, name, direction, caller, destination, **more):
        self.channels[uuid] = {
            "Unique-ID": uuid, "Channel-Name": name, "Call-Direction": direction,
            "Caller-Caller-ID-Number": caller, "Caller-Caller-ID-Name": caller,
            "Caller-Destination-Number": destination, "Channel-Call-UUID": uuid,
            "Caller-Channel-Created-Time": str(self.now), "Caller-Channel-Answered-Time": "0",
            "Caller-Channel-Hangup-Time": "0", **more}


def answered_call(fs, client="A", agent="1001", leg="B", ring=0.02, answer=2.0, talk=30.0):
    """A client call the bound agent answers and talks on; the client hangs up."""
    fs.at(0).client_calls(client)
    fs.at(ring).rings(leg, agent, client)
    fs.at(answer).answer(leg)
    fs.answer(client)
    fs.at(answer + 0.02).bridge(client, leg)
    fs.at(answer + talk).hangup(client, complete=False)
    fs.hangup(leg, complete=False)
    fs.unbridge(client, leg)
    fs.complete(client)
    return fs.complete(leg)


def binding_after(call: Call):
    return learn(call, Settings(), None)


# --- plain calls --------------------------------------------------------------------------------

def test_answered_call_record():
    fs = FakeSwitch()
    answered_call(fs, talk=30.0)
    (call,) = fs.calls
    assert (call.direction, call.client, call.agent, call.rung) == (INBOUND, CLIENT, "1001", ("1001",))
    assert (call.talk_seconds, call.answered, call.outcome) == (30, True, "answered")
    assert (call.group, call.route, call.uuid) == ("sales", "sticky", "A")
    assert call.started_at.utcoffset() == timedelta(0)
    assert (call.answered_at - call.started_at, call.ended_at - call.started_at) == (
        timedelta(seconds=2), timedelta(seconds=32))
    assert binding_after(call).agent == "1001"


def test_short_answered_call_is_recorded_but_does_not_bind():
    fs = FakeSwitch()
    answered_call(fs, talk=5.0)
    (call,) = fs.calls
    assert (call.agent, call.talk_seconds) == ("1001", 5)
    assert binding_after(call) is None


def test_talk_is_whole_seconds_rounded_down_like_billsec():
    fs = FakeSwitch()
    answered_call(fs, talk=9.999)  # the leg's own billsec says 9
    (call,) = fs.calls
    assert call.talk_seconds == 9
    assert binding_after(call) is None


def test_sticky_no_answer_then_group_simultaneous_ring():
    fs = FakeSwitch()
    fs.at(0).client_calls("A", route="fallback")
    fs.at(0.02).rings("B1", "1001", "A")
    fs.at(20).hangup("B1", cause="NO_ANSWER")
    fs.at(20.02).rings("B2", "1002", "A")
    fs.rings("B3", "1003", "A")
    fs.at(25).answer("B3")
    fs.hangup("B2", cause="LOSE_RACE")
    fs.answer("A")
    fs.at(25.02).bridge("A", "B3")
    fs.at(45).hangup("A", complete=False)
    fs.hangup("B3", complete=False)
    fs.complete("A")
    fs.complete("B3")
    (call,) = fs.calls
    assert (call.rung, call.agent, call.talk_seconds, call.route) == (("1001", "1002", "1003"), "1003", 20, "fallback")


def test_nobody_answers_a_missed_call_with_what_rang():
    fs = FakeSwitch()
    fs.at(0).client_calls("A")
    fs.at(0.02).rings("B", "1001", "A")
    fs.at(20).hangup("B", cause="NO_ANSWER")
    fs.at(50).hangup("A", cause="ORIGINATOR_CANCEL")
    (call,) = fs.calls
    assert (call.agent, call.rung, call.answered, call.outcome, call.talk_seconds) == (
        None, ("1001",), False, "missed", 0)
    assert call.answered_at is None
    assert binding_after(call) is None


def test_client_call_without_group_counts_when_it_rings_an_agent():
    # A dialplan that bridges straight to an agent, without fsrouter's socket.
    fs = FakeSwitch()
    fs.at(0).client_calls("A", group=None, route=None)
    fs.at(0.02).rings("B", "1002", "A")
    fs.at(1).answer("B")
    fs.bridge("A", "B")
    fs.at(15).hangup("B")
    fs.hangup("A")
    (call,) = fs.calls
    assert (call.agent, call.group, call.route, call.talk_seconds) == ("1002", None, None, 14)


def test_client_caller_id_without_group_or_agent_leg_is_no_call():
    # The test rig's phones: a client's caller ID on a channel that reaches no group and no agent.
    fs = FakeSwitch()
    fs.at(0).client_calls("A", group=None, route=None)
    fs.at(0.02).dials_out("X", "9999", "A")
    fs.at(1).answer("X")
    fs.bridge("A", "X")
    fs.at(30).hangup("X")
    fs.hangup("A")
    assert fs.calls == []


def test_legs_to_non_agents_are_not_rung():
    fs = FakeSwitch()
    fs.at(0).client_calls("A")
    fs.at(0.02).rings("B", "2001", "A")  # a user that is no agent
    fs.at(3).hangup("B", cause="NO_ANSWER")
    fs.hangup("A")
    (call,) = fs.calls
    assert (call.rung, call.agent) == ((), None)


# --- agents' outbound calls -----------------------------------------------------------------------

def test_agent_outbound_answered():
    fs = FakeSwitch()
    fs.at(0).agent_dials("D", "1004", "0672223344")
    fs.at(0.02).dials_out("X", "0672223344", "D")
    fs.at(5).answer("X")
    fs.answer("D")
    fs.bridge("D", "X")
    fs.at(65.5).hangup("X")
    fs.hangup("D")
    (call,) = fs.calls
    assert (call.direction, call.client, call.agent, call.answered, call.talk_seconds) == (
        OUTBOUND, "+380672223344", "1004", True, 60)
    assert (call.outcome, call.rung, call.uuid) == ("answered", (), "D")
    assert binding_after(call).agent == "1004"


def test_agent_outbound_unanswered_still_binds_by_default():
    fs = FakeSwitch()
    fs.at(0).agent_dials("D", "1004", "+380672223344")
    fs.at(0.02).dials_out("X", "+380672223344", "D")
    fs.at(3.4).hangup("X", cause="ORIGINATOR_CANCEL")
    fs.set("D", originate_disposition="ORIGINATOR_CANCEL")
    fs.hangup("D", cause="ORIGINATOR_CANCEL")
    (call,) = fs.calls
    assert (call.answered, call.talk_seconds, call.outcome) == (False, 0, "missed")
    assert binding_after(call).agent == "1004"


def test_dialplan_answered_agent_channel_is_not_an_answered_call():
    # A prompt answered the agent's channel; the bridge then failed: billsec > 0, not answered.
    fs = FakeSwitch()
    fs.at(0).agent_dials("D", "1004", "0672223344")
    fs.at(0.1).answer("D")
    fs.at(0.2).dials_out("X", "0672223344", "D")
    fs.at(20).hangup("X", cause="NO_ANSWER")
    fs.set("D", originate_disposition="NO_ANSWER")
    fs.at(21).hangup("D")
    (call,) = fs.calls
    assert (call.answered, call.talk_seconds) == (False, 0)


def test_agent_with_company_caller_id_is_still_the_agent_placing_the_call():
    fs = FakeSwitch()
    fs.at(0).agent_dials("D", "1004", "0672223344", caller_id="+380441234567")
    fs.at(3).hangup("D", cause="ORIGINATOR_CANCEL")
    (call,) = fs.calls
    assert (call.direction, call.agent, call.client) == (OUTBOUND, "1004", "+380672223344")


def test_agent_calling_a_colleague_is_no_call():
    fs = FakeSwitch()
    fs.at(0).agent_dials("D", "1004", "1002", caller_id="+380441234567")
    fs.at(0.02).rings("E", "1002", "D")
    fs.at(2).answer("E")
    fs.bridge("D", "E")
    fs.at(40).hangup("E")
    fs.hangup("D")
    assert fs.calls == []


# --- transfers ----------------------------------------------------------------------------------

def test_blind_transfer_the_agent_who_took_over_binds():
    fs = FakeSwitch()
    fs.at(0).client_calls("A")
    fs.at(0.02).rings("B", "1001", "A")
    fs.at(2).answer("B")
    fs.answer("A")
    fs.at(2.02).bridge("A", "B")
    # 1001 talks 30 s, then their phone REFERs the call to 1002: mod_sofia transfers the client
    # channel to extension 1002 and hangs up 1001's leg.
    fs.at(32).unbridge("A", "B")
    fs.hangup("B", cause="BLIND_TRANSFER")
    fs.set("A", transfer_history="1795536316:3f0c4e4a-0d7e-4a55-9f1d-b6c1b8d0a001:bl_xfer:1002/default/XML")
    fs.at(32.1).rings("F", "1002", "A")
    fs.at(35).answer("F")
    fs.at(35.02).bridge("A", "F")
    fs.at(47.5).hangup("A", complete=False)
    fs.hangup("F", complete=False)
    fs.unbridge("A", "F")
    fs.complete("A")
    fs.complete("F")
    (call,) = fs.calls
    assert (call.rung, call.agent, call.talk_seconds) == (("1001", "1002"), "1002", 12)
    assert call.answered_at - call.started_at == timedelta(seconds=35)
    assert binding_after(call).agent == "1002"


def test_blind_transfer_to_short_talk_binds_nobody_not_the_operator():
    fs = FakeSwitch()
    fs.at(0).client_calls("A")
    fs.at(0.02).rings("B", "1001", "A")
    fs.at(2).answer("B")
    fs.bridge("A", "B")
    fs.at(60).unbridge("A", "B")  # the operator talked a minute...
    fs.hangup("B", cause="BLIND_TRANSFER")
    fs.at(60.1).rings("F", "1002", "A")
    fs.at(62).answer("F")
    fs.bridge("A", "F")
    fs.at(66).hangup("F")  # ...the agent who took it over only 4 s
    fs.hangup("A")
    (call,) = fs.calls
    assert (call.agent, call.talk_seconds) == ("1002", 4)
    assert binding_after(call) is None


def start_consultation(fs):
    """Client A talks to operator 1001 (leg B); the operator's phone calls 1002 to consult
    (channel D, inbound from the phone; D rings 1002 on leg E, which answers)."""
    fs.at(0).client_calls("A")
    fs.at(0.02).rings("B", "1001", "A")
    fs.at(2).answer("B")
    fs.answer("A")
    fs.at(2.02).bridge("A", "B")
    fs.at(20).agent_dials("D", "1001", "1002")
    fs.at(20.02).rings("E", "1002", "D")
    fs.at(23).answer("E")
    fs.answer("D")
    fs.at(23.02).bridge("D", "E")


@pytest.mark.parametrize("consult_hangs_up_first", [True, False])
def test_attended_transfer_by_refer_with_replaces(consult_hangs_up_first):
    fs = FakeSwitch()
    start_consultation(fs)
    # REFER with Replaces on B: switch_ivr_uuid_bridge(E, A) takes both out of their bridges and
    # bridges them with E as the originator; D hangs up ATTENDED_TRANSFER, B when the phone BYEs.
    fs.at(38).unbridge("A", "B")
    fs.unbridge("D", "E")
    if consult_hangs_up_first:
        fs.hangup("D", cause="ATTENDED_TRANSFER")
    fs.at(38.05).bridge("E", "A")
    if not consult_hangs_up_first:
        fs.hangup("D", cause="ATTENDED_TRANSFER")
    fs.at(38.5).hangup("B")
    assert fs.calls == []  # D, the operator's consultation call, is nobody's call
    fs.at(68.1).hangup("A", complete=False)
    fs.hangup("E", complete=False)
    fs.unbridge("E", "A")
    fs.complete("A")
    fs.complete("E")
    (call,) = fs.calls
    # 1002 talked to the client from the bridge (38.05 s), not from answering the operator (23 s).
    assert (call.uuid, call.rung, call.agent, call.talk_seconds) == ("A", ("1001", "1002"), "1002", 30)
    assert call.answered_at - call.started_at == timedelta(seconds=38.05)
    assert binding_after(call).agent == "1002"
    assert fs.tracker.stats.open == 0


def test_attended_transfer_by_att_xfer_from_the_operator_leg():
    # att_xfer runs on the operator's leg B: it originates 1002's leg itself, and when the
    # operator hangs up, uuid-bridges the client with that leg (here the client is the originator).
    fs = FakeSwitch()
    fs.at(0).client_calls("A")
    fs.at(0.02).rings("B", "1001", "A")
    fs.at(2).answer("B")
    fs.at(2.02).bridge("A", "B")
    fs.at(10).unbridge("A", "B")  # the client goes to hold music
    fs.at(10.02).rings("E", "1002", "B")
    fs.at(12).answer("E")
    fs.bridge("B", "E")
    fs.at(20).unbridge("B", "E")
    fs.hangup("B")
    fs.at(20.02).bridge("A", "E")
    fs.at(45).hangup("E")
    fs.hangup("A")
    (call,) = fs.calls
    assert (call.rung, call.agent, call.talk_seconds) == (("1001", "1002"), "1002", 24)


def test_transfer_back_and_forth_last_bridged_agent_wins():
    fs = FakeSwitch()
    fs.at(0).client_calls("A")
    fs.at(0.02).rings("B", "1001", "A")
    fs.at(2).answer("B")
    fs.bridge("A", "B")
    fs.at(20).unbridge("A", "B")
    fs.hangup("B", cause="BLIND_TRANSFER")
    fs.at(20.1).rings("F", "1002", "A")
    fs.at(22).answer("F")
    fs.bridge("A", "F")
    fs.at(40).unbridge("A", "F")
    fs.hangup("F", cause="BLIND_TRANSFER")
    fs.at(40.1).rings("G", "1001", "A")
    fs.at(41).answer("G")
    fs.bridge("A", "G")
    fs.at(101).hangup("G")
    fs.hangup("A")
    (call,) = fs.calls
    assert (call.rung, call.agent, call.talk_seconds) == (("1001", "1002", "1001"), "1001", 60)


def test_transfer_to_voicemail_keeps_the_agent_who_talked():
    fs = FakeSwitch()
    fs.at(0).client_calls("A")
    fs.at(0.02).rings("B", "1001", "A")
    fs.at(2).answer("B")
    fs.bridge("A", "B")
    fs.at(40).unbridge("A", "B")
    fs.hangup("B", cause="BLIND_TRANSFER")
    fs.set("A", transfer_history="x:A:bl_xfer:*98/default/XML")
    fs.at(70).hangup("A")
    (call,) = fs.calls
    assert (call.agent, call.talk_seconds) == ("1001", 38)


# --- finishing ----------------------------------------------------------------------------------

def test_call_waits_for_the_agent_leg_hangup_after_the_client_completed():
    fs = FakeSwitch()
    fs.at(0).client_calls("A")
    fs.at(0.02).rings("B", "1001", "A")
    fs.at(2).answer("B")
    fs.bridge("A", "B")
    fs.at(14).hangup("A")  # HANGUP and HANGUP_COMPLETE of the client first
    assert fs.calls == []
    fs.at(14.02).hangup("B", complete=False)
    (call,) = fs.calls
    assert (call.agent, call.talk_seconds) == ("1001", 12)
    fs.complete("B")  # the leg's last event: nothing more, and no "unknown" either
    assert len(fs.calls) == 1
    assert (fs.tracker.stats.unknown, fs.tracker.stats.late, fs.tracker.stats.open) == (0, 0, 0)


def test_lost_agent_leg_hangup_finishes_after_linger_of_event_time():
    fs = FakeSwitch()
    fs.at(0).client_calls("A")
    fs.at(0.02).rings("B", "1001", "A")
    fs.at(2).answer("B")
    fs.bridge("A", "B")
    fs.at(14).hangup("A")  # B's hang-up events are lost
    fs.at(14 + LINGER.total_seconds() - 1).client_calls("other", number="0671112233")
    assert fs.calls == []
    fs.at(14 + LINGER.total_seconds()).set("other", anything="1")
    (call,) = fs.calls
    assert (call.agent, call.talk_seconds, fs.tracker.stats.expired) == ("1001", 12, 1)


def test_flush_finishes_waiting_calls():
    fs = FakeSwitch()
    fs.at(0).client_calls("A")
    fs.at(0.02).rings("B", "1001", "A")
    fs.at(2).answer("B")
    fs.bridge("A", "B")
    fs.at(14).hangup("A")
    (call,) = fs.tracker.flush()
    assert (call.agent, call.talk_seconds) == ("1001", 12)
    assert fs.tracker.flush() == []


# --- what is skipped ------------------------------------------------------------------------------

def test_events_of_unknown_channels_are_counted_and_skipped():
    fs = FakeSwitch()
    for event in ("CHANNEL_ANSWER", "CHANNEL_BRIDGE", "CHANNEL_HANGUP", "CHANNEL_HANGUP_COMPLETE"):
        assert fs.emit(event, "never-created", **{"Call-Direction": "inbound",
                                                  "Caller-Caller-ID-Number": "0501234567"}) == []
    assert (fs.tracker.stats.unknown, fs.tracker.stats.skipped, fs.tracker.stats.open) == (4, 4, 0)


def test_listener_connected_mid_call_records_nothing_rather_than_a_wrong_call():
    fs = FakeSwitch()
    fs.at(0).client_calls("A")
    fs.at(0.02).rings("B", "1001", "A")
    fs.at(2).answer("B")
    fs.bridge("A", "B")
    late = FakeSwitch()  # a second listener that connects now: it sees only the end of the call
    late.channels, late.sequence, late.now = fs.channels, fs.sequence, fs.now
    late.at(30).hangup("A")
    late.hangup("B")
    assert late.calls == []
    assert late.tracker.stats.unknown == 4


def test_late_events_of_finished_channels_are_not_unknown():
    fs = FakeSwitch()
    answered_call(fs)
    fs.emit("CHANNEL_EXECUTE_COMPLETE", "A", Application="park")
    assert (fs.tracker.stats.late, fs.tracker.stats.unknown) == (1, 0)


def test_unrelated_and_ignored_events_are_skipped():
    fs = FakeSwitch()
    fs.emit("BACKGROUND_JOB", "", **{"Job-UUID": "f5b229d9"})
    fs.emit("HEARTBEAT", "")
    fs._channel("L", "loopback/5000-b", "inbound", "0501234567", "5000")
    fs.emit("CHANNEL_CREATE", "L")
    fs.set("L", fsrouter_group="sales")
    fs.hangup("L")
    assert fs.calls == []
    assert (fs.tracker.stats.skipped, fs.tracker.stats.unknown, fs.tracker.stats.open) == (6, 0, 0)


@pytest.mark.parametrize("hostile", [
    "1001,user/evil", "${system(rm -rf /)}", "0501234567\nVariable-X: y",
    "+380501234567|user/1001", "[leg_timeout=1]user/1001", "{origination_uuid=x}0501234567",
    "0501234567'", '"0501234567"', "0501234567^1", "0501234567&x", "9" * 500, "",
])
def test_hostile_caller_id_is_no_client_and_no_call(hostile):
    fs = FakeSwitch()
    fs.at(0).client_calls("A", number=hostile)
    fs.at(0.02).rings("B", "1001", "A")
    fs.at(2).answer("B")
    fs.bridge("A", "B")
    fs.at(60).hangup("B")
    fs.hangup("A")
    fs.at(61).agent_dials("D", "1004", hostile)  # and as the number an agent dialled
    fs.at(70).hangup("D")
    assert fs.calls == []


@pytest.mark.parametrize("dialed", ["1001,1002", "user/1001", "1001@127.0.0.1", "${x}", "1 001"])
def test_dialed_user_must_be_an_agent_exactly(dialed):
    fs = FakeSwitch()
    fs.at(0).client_calls("A")
    fs.at(0.02).rings("B", "1001", "A", dialed=dialed)
    fs.at(2).answer("B")
    fs.bridge("A", "B")
    fs.at(60).hangup("B")
    fs.hangup("A")
    (call,) = fs.calls  # it reached the group: a call, but no agent rang or answered it
    assert (call.agent, call.rung) == (None, ())


def test_whitespace_around_a_value_reads_as_the_wire_reads_it():
    """Both event forms give the readers a value with whitespace around it stripped (plain:
    parse_headers strips every value; json: header_text strips the ones read), so a caller ID
    "0501234567\r" is the client's and a dialed user "1001 " is agent 1001, whichever form."""
    fs = FakeSwitch()
    fs.at(0).client_calls("A", number="0501234567\r")
    fs.at(0.02).rings("B", "1001", "A", dialed="1001 ")
    fs.at(2).answer("B")
    fs.bridge("A", "B")
    fs.at(60).hangup("B")
    fs.hangup("A")
    (call,) = fs.calls
    assert (call.client, call.agent, call.rung) == ("+380501234567", "1001", ("1001",))


def test_malformed_values_never_raise():
    fs = FakeSwitch()
    fs.at(0).client_calls("A")
    fs.channels["A"]["Caller-Channel-Created-Time"] = "yesterday"
    fs.at(0.02).rings("B", "1001", "A")
    fs.channels["B"]["Caller-Channel-Answered-Time"] = "-5"
    fs.emit("CHANNEL_ANSWER", "B", **{"Event-Date-Timestamp": "1e9", "Event-Sequence": "x"})
    fs.emit("CHANNEL_BRIDGE", "A", **{"Bridge-B-Unique-ID": "", "Other-Leg-Unique-ID": ""})
    fs.emit("CHANNEL_ANSWER", "B", **{"Event-Date-Timestamp": "9" * 40})
    fs.emit("CHANNEL_ANSWER", "B", **{"Event-Date-Timestamp": "١٢٣"})  # digits, but not ASCII ones
    fs.tracker.feed({"Event-Name": "CHANNEL_CREATE"})  # no Unique-ID
    fs.tracker.feed({"Event-Name": "CHANNEL_ANSWER", "Unique-ID": 5})
    fs.tracker.feed({"Event-Name": None, "Unique-ID": "B"})
    fs.tracker.feed(["not", "a", "dict"])
    fs.tracker.feed({})
    fs.at(3).answer("B")  # the real values arrive after all
    fs.bridge("A", "B")
    fs.at(10).hangup("B")
    fs.hangup("A")
    assert fs.tracker.stats.malformed == 3
    assert len(fs.calls) == 1 and fs.calls[0].agent == "1001"


HEADER_NAMES = ["Event-Name", "Unique-ID", "Call-Direction", "Channel-Name", "Caller-Caller-ID-Number",
                "Caller-Destination-Number", "Caller-Channel-Created-Time", "Caller-Channel-Answered-Time",
                "Caller-Channel-Hangup-Time", "Event-Date-Timestamp", "Event-Sequence", "Other-Leg-Unique-ID",
                "Bridge-A-Unique-ID", "Bridge-B-Unique-ID", "variable_originator", "variable_dialed_user",
                "variable_fsrouter_group", "variable_user_name", "variable_billsec",
                "variable_originate_disposition"]
EVENTS = ["CHANNEL_CREATE", "CHANNEL_ANSWER", "CHANNEL_BRIDGE", "CHANNEL_UNBRIDGE", "CHANNEL_HANGUP",
          "CHANNEL_HANGUP_COMPLETE", "CHANNEL_EXECUTE_COMPLETE", "BACKGROUND_JOB"]
VALUES = st.one_of(st.sampled_from(["A", "B", "C", "inbound", "outbound", "1001", "0501234567", "0",
                                    "1795536284582664", "1795536299582664", "sales", "SUCCESS"]),
                   st.text(max_size=30), st.integers().map(str), st.none())


@hsettings(max_examples=300, deadline=None)
@given(st.lists(st.fixed_dictionaries({"Event-Name": st.sampled_from(EVENTS)},
                                      optional={name: VALUES for name in HEADER_NAMES[1:]}), max_size=40))
def test_any_event_stream_never_raises(stream):
    tracker = CallTracker(agents=AGENTS, region="UA", max_open=5)
    for headers in stream:
        for call in tracker.feed(headers):
            assert call.client.startswith("+") and call.talk_seconds >= 0
    tracker.flush()
    assert tracker.stats.open <= 5


class Recorder:
    def feed(self, headers):
        self.events.append(dict(headers))
        return []


def transfer_events() -> list[dict]:
    """The events of an attended transfer, as a list to shuffle and damage."""
    fs = FakeSwitch()
    fs.tracker = Recorder()
    fs.tracker.events = []
    start_consultation(fs)
    fs.at(38).unbridge("A", "B")
    fs.unbridge("D", "E")
    fs.hangup("D", cause="ATTENDED_TRANSFER")
    fs.at(38.05).bridge("E", "A")
    fs.at(38.5).hangup("B")
    fs.at(68.1).hangup("A", complete=False)
    fs.hangup("E")
    fs.complete("A")
    return fs.tracker.events


TRANSFER = transfer_events()


@hsettings(max_examples=200, deadline=None)
@given(st.permutations(TRANSFER), st.lists(st.tuples(st.integers(0, len(TRANSFER) - 1),
                                                     st.sampled_from(HEADER_NAMES), VALUES), max_size=8))
def test_real_event_sequences_reordered_and_damaged_never_raise(events, damage):
    events = [dict(e) for e in events]
    for index, name, value in damage:
        events[index][name] = value
    tracker = CallTracker(agents=AGENTS, region="UA")
    calls = [call for headers in events for call in tracker.feed(headers)] + tracker.flush()
    # Only a channel whose CHANNEL_CREATE was seen can be a call, and once.
    assert len(calls) <= sum(e.get("Event-Name") == "CHANNEL_CREATE" for e in events)
    for call in calls:
        assert call.agent in AGENTS | {None} and call.talk_seconds >= 0


def test_undamaged_transfer_events_in_order_give_the_one_call():
    tracker = CallTracker(agents=AGENTS, region="UA")
    (call,) = [call for headers in TRANSFER for call in tracker.feed(headers)]
    assert (call.agent, call.talk_seconds) == ("1002", 30)


# --- Event-Sequence ---------------------------------------------------------------------------------

def sequence(tracker, number):
    tracker.feed({"Event-Name": "HEARTBEAT", "Event-Sequence": str(number)})


def test_sequence_gaps_count_the_numbers_skipped():
    tracker = CallTracker(agents=AGENTS, region="UA")
    for number in (100, 101, 105, 106, 110):
        sequence(tracker, number)
    assert (tracker.stats.sequence_gaps, tracker.stats.sequence_late) == (3 + 3, 0)


def test_a_late_event_fills_its_gap():
    tracker = CallTracker(agents=AGENTS, region="UA")
    for number in (193413, 193420, 193418):  # as in capture 08
        sequence(tracker, number)
    assert (tracker.stats.sequence_gaps, tracker.stats.sequence_late) == (5, 1)


def test_reconnect_resets_the_sequence():
    tracker = CallTracker(agents=AGENTS, region="UA")
    sequence(tracker, 500)
    tracker.reset_sequence()  # FreeSWITCH restarted: numbering starts over
    sequence(tracker, 3)
    sequence(tracker, 4)
    assert (tracker.stats.sequence_gaps, tracker.stats.sequence_late) == (0, 0)


def test_events_without_a_sequence_number_are_no_gap():
    tracker = CallTracker(agents=AGENTS, region="UA")
    for number in ("7", "", "garbage", "8"):
        sequence(tracker, number)
    assert tracker.stats.sequence_gaps == 0


# --- memory -----------------------------------------------------------------------------------------

def test_open_channels_are_bounded_oldest_evicted_first():
    fs = FakeSwitch(max_open=50)
    for n in range(1000):
        fs.at(n).client_calls(f"C{n}")
    assert (fs.tracker.stats.open, fs.tracker.stats.evicted) == (50, 950)
    fs.at(2000).hangup("C0")  # long evicted: unknown now
    fs.at(2000).hangup("C999")  # still followed: a missed call
    assert fs.tracker.stats.unknown == 2
    assert [c.uuid for c in fs.calls] == ["C999"]


def test_memory_pressure_finishes_waiting_calls_rather_than_losing_them():
    fs = FakeSwitch(max_open=3)
    fs.at(0).client_calls("A")
    fs.at(0.02).rings("B", "1001", "A")
    fs.at(2).answer("B")
    fs.bridge("A", "B")
    fs.at(14).hangup("A")  # waits for B
    fs.at(15).client_calls("X", number="0671112233")
    fs.at(16).client_calls("Y", number="0671112234")
    (call,) = fs.calls
    assert (call.uuid, call.agent, fs.tracker.stats.expired, fs.tracker.stats.open) == ("A", "1001", 1, 3)


def test_agents_are_read_lazily_and_at_most_once_per_event():
    reads = []

    def agents():
        reads.append(1)
        return AGENTS

    fs = FakeSwitch(agents=agents)
    fs.at(0).client_calls("A")
    assert reads == []  # nothing to decide yet
    fs.at(0.02).rings("B", "1001", "A")
    fs.at(2).answer("B")
    fs.bridge("A", "B")
    fs.at(30).hangup("B")
    fs.hangup("A")
    assert len(reads) == 2  # the leg's CHANNEL_CREATE, and the client's HANGUP_COMPLETE
    assert fs.calls[0].agent == "1001"
