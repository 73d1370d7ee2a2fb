"""The fake FreeSWITCH's transfers (fakefs/transfers.py) against the captures they copy: a blind
transfer (12), an attended one with REFER/Replaces (13) and att_xfer (13b) give a listener the
same CHANNEL events, in the same order, with the same key headers; and played through the real
daemon they tell the live story and teach the binding the replays of the captures do."""
from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from captures import captures_dir
from office import Office
from test_events_replay import events_of, expected_cases, subscribed

from fsrouter.binding_path import BindingPath
from fsrouter.core import live
from fsrouter.esl.frames import event_headers, parse_stream
from fsrouter.fakefs import ATT_XFER, ATTENDED, BLIND, Transfer

CLIENT = "+380671112233"
CASES = {
    BLIND: "12-sip-blind-transfer-inbound-view",
    ATTENDED: "13-sip-attended-transfer-inbound-view",
    ATT_XFER: "13b-sip-attended-transfer-att-xfer-inbound-view",
}


def role(channel_name: str) -> str | None:
    """What a channel is in the call, by its name: the client's, an agent leg, an agent's phone."""
    if channel_name.startswith("sofia/carrier/"):
        return "client"
    leg = re.match(r"sofia/internal/gw\+a(\w+)@", channel_name)
    if leg:
        return f"leg {leg.group(1)}"
    phone = re.match(r"sofia/internal/(\w+)@", channel_name)
    return f"phone {phone.group(1)}" if phone else None  # sofia/agents/...: the rig's test phones


def story(events: list[dict]) -> list[tuple]:
    """The call's CHANNEL events as a listener gets them, each by the roles it names."""
    roles = {e["Unique-ID"]: role(e.get("Channel-Name", "")) for e in events if e.get("Unique-ID")}
    out = []
    for e in subscribed(events):
        own = roles.get(e.get("Unique-ID"))
        if own is None or e["Event-Name"] == "HEARTBEAT" or (own == "leg 5100"):
            continue
        caller = e.get("Caller-Caller-ID-Number")
        out.append((e["Event-Name"], own, e.get("Call-Direction"),
                    roles.get(e.get("Bridge-A-Unique-ID")), roles.get(e.get("Bridge-B-Unique-ID")),
                    roles.get(e.get("variable_originator")) if e["Event-Name"] == "CHANNEL_CREATE" else None,
                    "client" if caller == CLIENT else caller, int(e["Event-Date-Timestamp"])))
    # Two channels torn down in the same microsecond come in either order (11 has the client's
    # HANGUP_COMPLETE first, 12 the leg's): such a run is compared as a set.
    runs: list[list[tuple]] = []
    for item in out:
        if runs and item[0] == runs[-1][-1][0] == "CHANNEL_HANGUP_COMPLETE" and item[-1] == runs[-1][-1][-1]:
            runs[-1].append(item)
        else:
            runs.append([item])
    return [x[:-1] for run in runs for x in sorted(run)]


def play(tmp_path, kind: str):
    """A client bound to 1003 calls; 1003 answers and passes them on to 1001 as `kind` says."""
    office = Office(tmp_path)
    try:
        BindingPath(office.store).set_manual_binding(CLIENT, "1003", datetime.now(UTC))
        office.fake.agent("1003", answers_after=1, talk=3, transfer=Transfer(kind, "1001"))
        office.fake.agent("1001", answers_after=1, talk=12.6)
        with office.daemon.hub.subscribe() as page:
            handle = office.fake.place_call(caller=CLIENT, group="sales", router=office.router)
            assert handle.wait(15), "the call never ended"
            office.settle()
            transitions = page.get(1.0)
        sent = [event_headers(f) for e in office.fake.bus.history for f in parse_stream(e.data)
                if f.content_type == "text/event-plain"]
        return handle, sent, transitions, office.store.calls(), office.binding(CLIENT, "auto")
    finally:
        office.close()


@pytest.mark.parametrize("kind", [BLIND, ATTENDED, ATT_XFER])
def test_fake_transfer_events_are_shaped_like_the_capture(tmp_path, kind):
    captured = story(events_of(captures_dir() / f"{CASES[kind]}.fs-to-client.raw"))
    _, sent, _, _, _ = play(tmp_path, kind)
    assert story(sent) == captured


@pytest.mark.parametrize("kind", [BLIND, ATTENDED, ATT_XFER])
def test_fake_transfer_tells_the_live_story_and_teaches_the_binding(tmp_path, kind):
    handle, _, transitions, calls, learned = play(tmp_path, kind)
    assert (handle.answered_by, handle.transferred_to) == ("1001", ["1001"])
    kinds = [(t.kind, t.agent, t.from_agent, t.hop) for t in transitions if t.call_uuid == handle.uuid]
    blind_leg = [("ringing", "1001", None, 0), ("answered", "1001", None, 0)] if kind == BLIND else []
    assert kinds == [("ringing", "1003", None, 0), ("answered", "1003", None, 0), *blind_leg,
                     ("transferred", "1001", "1003", 1), ("ended", "1001", None, 0)]
    assert next(t.route for t in transitions if t.kind == live.ANSWERED) == "sticky"
    (call,) = calls
    expected = expected_cases()[CASES[kind]]
    assert (call.client, call.agent, list(call.rung), call.talk_seconds) == (
        CLIENT, "1001", expected["calls"][0]["rung"], expected["calls"][0]["talk_seconds"])
    assert learned == expected["bindings"][CLIENT] == "1001"


@pytest.mark.parametrize("kind", [BLIND, ATTENDED, ATT_XFER])
def test_a_transfer_to_an_extension_of_no_agent_is_told_live_and_the_record_stays_the_agents(tmp_path, kind):
    """1003 passes the client to 1050, a phone no agent has: the story says so (its events go to
    the group's supervisors), while the call's record and its learning stay with 1003."""
    office = Office(tmp_path)
    try:
        office.fake.agent("1003", answers_after=1, talk=3, transfer=Transfer(kind, "1050"))
        office.fake.agent("1050", answers_after=1, talk=12.6)
        assert office.store.agent("1050") is None
        with office.daemon.hub.subscribe() as page:
            handle = office.fake.place_call(caller=CLIENT, group="sales", router=office.router)
            assert handle.wait(15), "the call never ended"
            office.settle()
            transitions = [t for t in page.get(1.0) if t.call_uuid == handle.uuid]
        told = [(t.kind, t.agent, t.from_agent, t.hop) for t in transitions if t.kind != live.RINGING]
        blind_answer = [("answered", "1050", None, 0)] if kind == BLIND else []
        assert told[:1] == [("answered", "1003", None, 0)]
        assert told[1:-1] == [*blind_answer, ("transferred", "1050", "1003", 1)]
        assert told[-1][:2] == ("ended", "1003")
        (call,) = office.store.calls()
        assert call.agent == "1003" and "1050" not in call.handled_by
    finally:
        office.close()
