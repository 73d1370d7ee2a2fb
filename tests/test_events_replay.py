"""Replay: bytes recorded from a real FreeSWITCH 1.10.12, through fsrouter's own frame parser,
call tracker and learning rules, give exactly the calls and bindings of expected.json.

The captures live beside the clone (../shared/esl-captures, or $FSROUTER_CAPTURES). Without them
these tests fail: they are the only check against the real thing, so they must not go quiet.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from captures import captures_dir

from fsrouter.core import live
from fsrouter.core.model import INBOUND, OUTBOUND
from fsrouter.core.rules import learn
from fsrouter.core.settings import Settings
from fsrouter.esl.events import CallTracker
from fsrouter.esl.frames import event_headers, parse_stream
from fsrouter.esl.inbound import CHANNEL_KINDS

AGENTS = {"1001", "1002", "1003", "1004"}
REGION = "UA"
SIP_CASES = [
    "08-sip-call-sticky-timeout-then-group-inbound-view",
    "09-sip-agent-outbound-calls",
    "11-sip-call-answered-12s-inbound-view",
    "12-sip-blind-transfer-inbound-view",
    "13-sip-attended-transfer-inbound-view",
    "13b-sip-attended-transfer-att-xfer-inbound-view",
]


def events_of(path: Path) -> list[dict]:
    """The event header dicts a listener receives: plain events decoded as greenswitch does,
    JSON events (set B's 08) as their object; replies and api responses are not events."""
    events = []
    for frame in parse_stream(path.read_bytes()):
        if frame.content_type == "text/event-plain":
            events.append(event_headers(frame))
        elif frame.content_type == "text/event-json":
            events.append(json.loads(frame.body))
    return events


def subscribed(events: list[dict]) -> list[dict]:
    """What the daemon's listener receives of the same calls: only the kinds its `event plain`
    line names (the captures subscribed to more: CHANNEL_EXECUTE_COMPLETE, CHANNEL_HANGUP ...)."""
    kinds = set(CHANNEL_KINDS.split())
    return [e for e in events if e.get("Event-Name") in kinds]


def replay(path: Path, everything: bool = False, **options) -> tuple[list, CallTracker]:
    """The calls the tracker makes of a capture's events: those the listener subscribes to, or
    with `everything`, every event the capture holds."""
    calls, _, tracker = replay_live(path, everything, **options)
    return calls, tracker


def replay_live(path: Path, everything: bool = False, **options) -> tuple[list, list, CallTracker]:
    """replay(), and the live transitions told on the way, in the order they were told."""
    transitions: list[live.Transition] = []
    tracker = CallTracker(agents=lambda: AGENTS, region=REGION, on_transition=transitions.append, **options)
    events = events_of(path) if everything else subscribed(events_of(path))
    calls = [call for headers in events for call in tracker.feed(headers)]
    calls += tracker.flush()  # nothing may be left waiting at the end of a capture
    return sorted(calls, key=lambda c: (c.started_at, c.uuid)), transitions, tracker


def summary(call) -> dict:
    """The fields expected.json states for a call of its direction."""
    out = {"direction": call.direction, "client": call.client, "agent": call.agent,
           "talk_seconds": call.talk_seconds}
    if call.direction == INBOUND:
        out["rung"] = list(call.rung)
    return out


def learned_bindings(calls) -> dict[str, str]:
    settings, current = Settings(), {}
    for call in calls:
        binding = learn(call, settings, current.get(call.client))
        if binding is not None:
            current[call.client] = binding
    return {client: binding.agent for client, binding in current.items()}


def expected_cases() -> dict:
    return json.loads((captures_dir() / "expected.json").read_text())["cases"]


def test_every_expected_case_is_replayed():
    assert sorted(expected_cases()) == SIP_CASES


EVENTS = pytest.mark.parametrize("everything", [False, True], ids=["listeners-events", "every-captured-event"])


def test_the_listener_subscribes_to_fewer_kinds_than_the_captures_hold():
    # 12-13b were recorded with the listener's own subscription: nothing to leave out there.
    for case in SIP_CASES[:3]:
        events = events_of(captures_dir() / f"{case}.fs-to-client.raw")
        assert 0 < len(subscribed(events)) < len(events)


@EVENTS
@pytest.mark.parametrize("case", SIP_CASES)
def test_sip_capture_gives_exactly_the_expected_calls(case, everything):
    calls, tracker = replay(captures_dir() / f"{case}.fs-to-client.raw", everything)
    assert [summary(c) for c in calls] == expected_cases()[case]["calls"]
    # Every channel of the capture was followed from CREATE to HANGUP_COMPLETE, and no call
    # needed the linger fallback: all agent legs' hang-ups were there.
    assert (tracker.stats.unknown, tracker.stats.late, tracker.stats.malformed) == (0, 0, 0)
    assert (tracker.stats.expired, tracker.stats.evicted, tracker.stats.open) == (0, 0, 0)


@EVENTS
@pytest.mark.parametrize("case", SIP_CASES)
def test_sip_capture_teaches_exactly_the_expected_bindings(case, everything):
    calls, _ = replay(captures_dir() / f"{case}.fs-to-client.raw", everything)
    assert learned_bindings(calls) == expected_cases()[case]["bindings"]


@EVENTS
@pytest.mark.parametrize("case", SIP_CASES)
def test_sip_capture_gives_exactly_the_expected_transfers(case, everything):
    # As fsrouter's call.transferred webhooks state them (the live `transferred` transitions);
    # captures without transfers list none.
    _, transitions, _ = replay_live(captures_dir() / f"{case}.fs-to-client.raw", everything)
    transfers = [{"client": t.client, "from_agent": t.from_agent, "to_agent": t.agent, "hop": t.hop}
                 for t in transitions if t.kind == live.TRANSFERRED]
    assert transfers == expected_cases()[case].get("transfers", [])


# The live story of each SIP capture, as FreeSWITCH's events tell it: (kind, agent, from_agent,
# hop, route, the time of the event that caused it). The client's channel is each call's uuid.
LIVE_STORIES = {
    "08-sip-call-sticky-timeout-then-group-inbound-view": [  # a socket script, not fsrouter: no route
        ("ringing", "1001", None, 0, None, "16:02:53.182661"),  # the 1001 leg's CHANNEL_CREATE
        ("ringing", "1002", None, 0, None, "16:02:56.022660"),  # the group: both legs at once
        ("ringing", "1003", None, 0, None, "16:02:56.022660"),
        ("answered", "1003", None, 0, None, "16:02:56.062659"),  # the client's CHANNEL_BRIDGE
        ("ended", "1003", None, 0, None, "16:03:00.082686"),  # the client's hang-up
    ],
    "09-sip-agent-outbound-calls": [  # two calls of agent 1004: the answered one, the abandoned one
        ("answered", "1004", None, 0, None, "16:03:16.642699"),  # the agent channel's CHANNEL_BRIDGE
        ("ended", "1004", None, 0, None, "16:03:19.662677"),
        ("ended", "1004", None, 0, None, "16:03:20.042669"),  # ORIGINATOR_CANCEL: never answered
    ],
    "11-sip-call-answered-12s-inbound-view": [
        ("ringing", "1001", None, 0, None, "16:04:44.682659"),
        ("ringing", "1003", None, 0, None, "16:04:46.022667"),
        ("answered", "1003", None, 0, None, "16:04:46.042681"),
        ("ended", "1003", None, 0, None, "16:04:58.062662"),
    ],
    "12-sip-blind-transfer-inbound-view": [
        # fsrouter's multiset shows on the client's channel only from its next event on: the
        # sticky leg's CREATE comes first, so its ringing cannot say "sticky" yet; its answer does.
        ("ringing", "1003", None, 0, None, "08:15:44.764289"),
        ("answered", "1003", None, 0, "sticky", "08:15:44.803189"),
        ("ringing", "1001", None, 0, None, "08:15:47.903199"),  # the client's channel dials 1001
        ("answered", "1001", None, 0, None, "08:15:47.903199"),  # a transfer's leg: no route
        ("transferred", "1001", "1003", 1, None, "08:15:47.903199"),
        ("ended", "1001", None, 0, None, "08:16:00.483189"),
    ],
    "13-sip-attended-transfer-inbound-view": [
        ("ringing", "1003", None, 0, None, "08:16:30.163222"),
        ("answered", "1003", None, 0, "sticky", "08:16:30.183208"),
        # 1003's consultation call to 1001 is 1003's, not the client's: no ringing for the client.
        ("transferred", "1001", "1003", 1, None, "08:16:34.363215"),  # the uuid_bridge to 1001's leg
        ("ended", "1001", None, 0, None, "08:16:47.003203"),
    ],
    "13b-sip-attended-transfer-att-xfer-inbound-view": [
        ("ringing", "1003", None, 0, None, "08:17:09.083201"),
        ("answered", "1003", None, 0, "sticky", "08:17:09.123198"),
        ("transferred", "1001", "1003", 1, None, "08:17:13.483242"),  # CHANNEL_BRIDGE on 1001's leg
        ("ended", "1001", None, 0, None, "08:17:26.063223"),
    ],
}


@EVENTS
@pytest.mark.parametrize("case", SIP_CASES)
def test_sip_capture_tells_the_live_story_in_freeswitchs_order(case, everything):
    calls, transitions, _ = replay_live(captures_dir() / f"{case}.fs-to-client.raw", everything)
    story = [(t.kind, t.agent, t.from_agent, t.hop, t.route, t.at.strftime("%H:%M:%S.%f")) for t in transitions]
    assert story == LIVE_STORIES[case]
    # Each call's transitions are numbered from 1 in the order told, and in time order.
    for call in calls:
        own = [t for t in transitions if t.call_uuid == call.uuid]
        assert [t.seq for t in own] == list(range(1, len(own) + 1))
        assert [t.at for t in own] == sorted(t.at for t in own)
        assert {(t.client, t.direction) for t in own} == {(call.client, call.direction)}


@EVENTS
@pytest.mark.parametrize("case", SIP_CASES)
def test_the_finished_record_is_the_one_the_live_story_ends_with(case, everything):
    calls, transitions, _ = replay_live(captures_dir() / f"{case}.fs-to-client.raw", everything)
    ended = [t for t in transitions if t.kind == live.ENDED]
    assert sorted((t.call for t in ended), key=lambda c: (c.started_at, c.uuid)) == calls
    for t in ended:
        assert t.call.agent == t.agent
        if t.direction == INBOUND:
            # The record's agent is the story's last connected agent, its hand-overs the story's.
            connected = [x.agent for x in transitions if x.call_uuid == t.call_uuid
                         and x.kind in (live.ANSWERED, live.TRANSFERRED)]
            assert t.agent == (connected[-1] if connected else None)
            assert t.call.handled_by == tuple(dict.fromkeys(connected))


def test_capture_13b_att_xfer_keeps_the_client_whose_caller_id_was_swapped():
    path = captures_dir() / "13b-sip-attended-transfer-att-xfer-inbound-view.fs-to-client.raw"
    hangups = [e for e in events_of(path) if e["Event-Name"] == "CHANNEL_HANGUP_COMPLETE"
               and e.get("Caller-Orig-Caller-ID-Number") == "+380671112233"
               and e["Channel-Name"].startswith("sofia/carrier/")]
    # The bytes really do say 1001 on the client's channel at its end ...
    assert [e["Caller-Caller-ID-Number"] for e in hangups] == ["1001"]
    (call,), _ = replay(path)
    # ... and the call is still the client's inbound call, not agent 1001's call to 5100.
    assert (call.direction, call.client, call.agent, call.uuid) == (
        INBOUND, "+380671112233", "1001", hangups[0]["Unique-ID"])


def test_capture_08_call_record_in_full():
    (call,), _ = replay(captures_dir() / "08-sip-call-sticky-timeout-then-group-inbound-view.fs-to-client.raw")
    assert (call.group, call.route, call.outcome, call.answered) == ("sales", None, "answered", True)
    assert call.uuid == "30ed2904-96ba-44f0-abf4-d77778e8eaac"  # the client's (carrier) channel
    assert call.started_at.isoformat() == "2026-11-24T16:02:53.082673+00:00"
    # 1003's leg answered at .042668 and hung up at 16:03:00.082686: billsec 4 on that leg.
    assert call.answered_at.isoformat() == "2026-11-24T16:02:56.042668+00:00"
    assert call.ended_at.isoformat() == "2026-11-24T16:03:00.082686+00:00"
    assert call.started_at.tzinfo is not None


def test_capture_11_talk_needs_the_agent_leg_hangup_that_comes_after_the_client_finished():
    path = captures_dir() / "11-sip-call-answered-12s-inbound-view.fs-to-client.raw"
    tracker = CallTracker(agents=AGENTS, region=REGION)
    finished_by = []
    for headers in events_of(path):
        for call in tracker.feed(headers):
            finished_by.append((headers["Event-Name"], headers["Channel-Name"], call))
    ((event, channel, call),) = finished_by
    # The client's HANGUP_COMPLETE finishes it: the agent leg's CHANNEL_HANGUP came just before.
    assert (event, channel) == ("CHANNEL_HANGUP_COMPLETE", "sofia/carrier/0501234567@127.0.0.1")
    assert (call.agent, call.talk_seconds, call.client) == ("1003", 12, "+380501234567")


def test_capture_09_outbound_records():
    calls, _ = replay(captures_dir() / "09-sip-agent-outbound-calls.fs-to-client.raw")
    abandoned, answered = calls
    assert (abandoned.direction, abandoned.answered, abandoned.outcome) == (OUTBOUND, False, "missed")
    assert abandoned.answered_at is None
    assert (answered.answered, answered.outcome, answered.talk_seconds) == (True, "answered", 3)
    # Both are the agent phone's own channel, not the test phones' sofia/agents/... channels.
    assert {c.uuid for c in calls} == {"c13cbbe4-882a-4b07-9177-bb36e3f329ac",
                                      "c8f4423e-b530-4f7c-9196-314c6ee254af"}


def test_sequence_gaps_in_a_capture_are_the_unsubscribed_events():
    # 08 subscribed to nine CHANNEL events; FreeSWITCH numbered every other event it fired
    # (CHANNEL_STATE, CHANNEL_CALLSTATE, ...) too. One HANGUP_COMPLETE (193418) arrived after
    # 193420: counted as late, and no longer as missing.
    _, tracker = replay(captures_dir() / "08-sip-call-sticky-timeout-then-group-inbound-view.fs-to-client.raw",
                        everything=True)
    events = events_of(captures_dir() / "08-sip-call-sticky-timeout-then-group-inbound-view.fs-to-client.raw")
    numbers = [int(e["Event-Sequence"]) for e in events]
    assert tracker.stats.sequence_late == 1
    assert tracker.stats.sequence_gaps == (max(numbers) - min(numbers) + 1) - len(set(numbers))


# --- every other inbound-view capture: no exception, and only what the rules say -------------

LOOPBACK_ONLY = [  # every channel is a loopback leg: the default ignore_channels drops them all
    "01-inbound-answered-talk4s", "02-inbound-agent-no-answer", "03-outbound-by-agent-unanswered",
    "05b-trap-events-inbound-view", "06-outbound-socket-sticky-then-fallback-inbound-view",
    "07-outbound-socket-originate-timeout-and-group-inbound-view",
]


def other_inbound_captures() -> list[str]:
    names = [f"{name}.fs-to-client.raw" for name in LOOPBACK_ONLY]
    set_b = captures_dir() / "set-b-independent-build"
    names += sorted(f"set-b-independent-build/{p.name}" for p in set_b.glob("*inbound*.fs-to-client.raw"))
    return names


def test_other_inbound_captures_are_all_there():
    names = other_inbound_captures()
    assert len(names) == len(LOOPBACK_ONLY) + 8  # set B: 01 02 03 04 04b 04c 07b-observer 08-json
    assert all((captures_dir() / name).is_file() for name in names)


@pytest.mark.parametrize("ignore", [("loopback/",), ()], ids=["default", "follow-loopback"])
def test_other_inbound_captures_replay_cleanly(ignore):
    for name in other_inbound_captures():
        calls, tracker = replay(captures_dir() / name, ignore_channels=ignore)
        stats = tracker.stats
        assert (stats.unknown, stats.late, stats.malformed, stats.expired, stats.open) == (0, 0, 0, 0, 0), name
        if ignore:
            # Nothing but loopback legs (set A) or loopback legs plus, in set B's 07b, a SIP
            # caller 1000 that is neither an agent nor a client: no call at all.
            assert calls == [], name


@pytest.mark.parametrize("case, route", [
    ("05b-trap-events-inbound-view", "sticky"),
    ("06-outbound-socket-sticky-then-fallback-inbound-view", "fallback"),
    ("07-outbound-socket-originate-timeout-and-group-inbound-view", None),
])
def test_socket_calls_followed_over_loopback_are_missed_group_calls(case, route):
    # Followed anyway, the client's loopback/5000-b channel reached group 'sales'; its legs were
    # loopback/ring, busy, talkNms: no agent's phone, so no agent answered it. The route is what
    # the router set on the channel (07's router set none).
    (call,), _ = replay(captures_dir() / f"{case}.fs-to-client.raw", ignore_channels=())
    assert (call.direction, call.client, call.group, call.route) == (INBOUND, "+380671112233", "sales", route)
    assert (call.agent, call.rung, call.outcome, call.talk_seconds) == (None, (), "missed", 0)


def test_direct_loopback_calls_are_no_calls_even_when_followed():
    # 01/02: a client's caller ID on a loopback channel bridged straight to loopback/talk or
    # ring: no fsrouter_group and no agent leg. 03: caller 1004 dialled 'ring', not a client.
    for case in LOOPBACK_ONLY[:3]:
        calls, _ = replay(captures_dir() / f"{case}.fs-to-client.raw", ignore_channels=())
        assert calls == [], case


def test_a_missed_call_tells_missed_then_ended_at_the_clients_hang_up():
    # 06 followed over loopback: the client's call reached group 'sales' and no agent answered.
    path = captures_dir() / "06-outbound-socket-sticky-then-fallback-inbound-view.fs-to-client.raw"
    (call,), transitions, _ = replay_live(path, ignore_channels=())
    assert [(t.kind, t.seq, t.call_uuid, t.client, t.group) for t in transitions] == [
        ("missed", 1, call.uuid, "+380671112233", "sales"), ("ended", 2, call.uuid, "+380671112233", "sales")]
    assert {t.at for t in transitions} == {call.ended_at} and transitions[0].call == call
