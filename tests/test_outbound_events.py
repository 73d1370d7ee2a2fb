"""What FreeSWITCH sends a routed call's socket: only the events the router reads.

`myevents` subscribes an outbound socket to some twenty kinds of its channel's events, each 5-10 KB;
the router reads two (CHANNEL_EXECUTE_COMPLETE, CHANNEL_HANGUP) and takes the others away with
`nixevent` in the same write, before the first bridge.
"""
from __future__ import annotations

from datetime import UTC, datetime

from fsrouter.binding_path import BindingPath
from fsrouter.fakefs.calls import MYEVENTS

CLIENT = "0501234567"
READ = {"CHANNEL_EXECUTE_COMPLETE", "CHANNEL_HANGUP"}


def test_a_routed_call_gets_only_the_events_the_router_reads(office):
    BindingPath(office.store).set_manual_binding("+380501234567", "1002", datetime.now(UTC))
    office.fake.agent("1002", never_answers=True)
    office.fake.agent("1001", answers_after=1, talk=3)
    call = office.call(CLIENT)
    assert (call.answered_by, call.variables["fsrouter_route"]) == ("1001", "fallback")
    assert call.events_sent and set(call.events_sent) <= READ, call.events_sent
    assert call.blocking_round_trips == 0  # the nixevent went in the first write
    nix = next(c for c in call.parsed if c.name == "nixevent")
    assert set(nix.arg.split()) == MYEVENTS - READ


def test_without_nixevent_myevents_sends_every_kind_of_its_channel(office):
    from fsrouter.esl import session
    office.fake.agent("1001", answers_after=1, talk=3)
    original = session.RouterSession.own_events
    session.RouterSession.own_events = lambda self: self.send_nowait("myevents")
    try:
        call = office.call(CLIENT)
    finally:
        session.RouterSession.own_events = original
    assert call.answered_by == "1001"
    assert set(call.events_sent) - READ  # CHANNEL_STATE, CHANNEL_EXECUTE, CHANNEL_BRIDGE...
    assert set(call.events_sent) <= MYEVENTS


def test_the_router_times_connect_reply_to_first_bridge_and_logs_it_after_the_write(office):
    import structlog
    from structlog.testing import capture_logs
    office.fake.agent("1001", answers_after=1, talk=3)
    structlog.reset_defaults()  # whatever level an earlier CLI test left structlog filtering at
    with capture_logs() as logs:
        call = office.call(CLIENT)
    (own,) = office.daemon.outbound_stats.first_bridge_seconds
    assert 0 < own < 1 and call.answered_by == "1001"
    (route,) = [e for e in logs if e["event"] == "call.route"]
    assert route["first_bridge_ms"] == round(own * 1000, 3) >= route["decision_ms"]


def test_a_stop_waits_for_the_late_events_of_the_calls_it_drained(tmp_path):
    import gevent
    from office import Office
    office = Office(tmp_path)
    try:
        office.fake.agent("1001", answers_after=1, talk=3)
        # The event socket lags 0.5 s behind the outbound socket (a loaded FreeSWITCH or box).
        for conn in office.fake.inbound.connections:
            conn.deliver = lambda data, real=conn.deliver: gevent.spawn_later(0.5, real, data)
        call = office.fake.place_call(caller=CLIENT, router=office.router)
        assert call.wait(15)
        office.daemon.stop()  # SIGTERM now: the call is over, its last events are on their way
        assert [c.agent for c in office.store.calls()] == ["1001"], "the finished call was never written"
    finally:
        office.fake.stop()
        office.store.close()
