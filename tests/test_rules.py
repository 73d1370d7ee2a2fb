"""Rules: how calls create and change learned bindings, and when a binding is current."""
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from fsrouter.core.model import AUTO, INBOUND, MANUAL, OUTBOUND, Binding, Call
from fsrouter.core.rules import is_current, learn, qualifies
from fsrouter.core.settings import Settings

CLIENT = "+380501234567"
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
DEFAULT = Settings()


def call(direction=INBOUND, agent="1001", talk=60.0, answered=None, ended=T0, uuid=None):
    if answered is None:
        answered = agent is not None and talk > 0
    return Call(direction=direction, client=CLIENT, agent=agent, started_at=ended - timedelta(seconds=talk + 5),
                ended_at=ended, talk_seconds=talk, answered=answered, uuid=uuid)


def learned(agent="1001", at=T0, uuid=None):
    return Binding(client=CLIENT, agent=agent, source=AUTO, at=at, call_uuid=uuid)


# --- inbound ---------------------------------------------------------------------------------

def test_inbound_answered_call_with_min_talk_binds_answering_agent():
    result = learn(call(INBOUND, "1001", talk=10.0), DEFAULT, None)
    assert result is not None
    assert (result.client, result.agent, result.source, result.at) == (CLIENT, "1001", AUTO, T0)
    assert result.expires_at is None
    assert "inbound" in result.why


def test_inbound_talk_exactly_min_talk_binds():
    # Decision: the rule says talk time >= min_talk, so exactly min_talk binds.
    assert qualifies(call(INBOUND, talk=10.0), DEFAULT)
    assert not qualifies(call(INBOUND, talk=9.999), DEFAULT)
    s = Settings(min_talk=timedelta(seconds=30))
    assert qualifies(call(INBOUND, talk=30.0), s) and not qualifies(call(INBOUND, talk=29.9), s)


def test_inbound_call_replaces_learned_binding_to_other_agent():
    old = learned("1002", at=T0 - timedelta(days=1))
    result = learn(call(INBOUND, "1001", ended=T0), DEFAULT, old)
    assert result.agent == "1001" and result.at == T0


def test_inbound_call_to_same_agent_refreshes_binding_time():
    old = learned("1001", at=T0 - timedelta(days=20))
    assert learn(call(INBOUND, "1001", ended=T0), DEFAULT, old).at == T0


def test_inbound_call_shorter_than_min_talk_changes_nothing():
    old = learned("1002", at=T0 - timedelta(days=1))
    assert learn(call(INBOUND, "1001", talk=9.0), DEFAULT, old) is None
    assert learn(call(INBOUND, "1001", talk=9.0), DEFAULT, None) is None
    assert learn(call(INBOUND, "1001", talk=0.0), DEFAULT, None) is None


def test_unanswered_inbound_call_changes_nothing():
    old = learned("1002", at=T0 - timedelta(days=1))
    unanswered = call(INBOUND, agent=None, talk=0.0, answered=False)
    assert not qualifies(unanswered, DEFAULT)
    assert learn(unanswered, DEFAULT, old) is None
    assert learn(unanswered, DEFAULT, None) is None


# --- outbound --------------------------------------------------------------------------------

def test_outbound_call_binds_even_unanswered():
    result = learn(call(OUTBOUND, "1003", talk=0.0, answered=False), DEFAULT, learned("1001", T0 - timedelta(1)))
    assert result.agent == "1003" and result.source == AUTO
    assert "not answered" in result.why


def test_outbound_call_binds_when_answered_briefly():
    assert learn(call(OUTBOUND, "1003", talk=2.0, answered=True), DEFAULT, None).agent == "1003"


def test_outbound_requires_answer_needs_answer_and_min_talk():
    s = Settings(outbound_requires_answer=True)
    assert not qualifies(call(OUTBOUND, talk=0.0, answered=False), s)
    assert not qualifies(call(OUTBOUND, talk=9.0, answered=True), s)
    assert not qualifies(call(OUTBOUND, talk=60.0, answered=False), s)  # no answer, whatever the timer says
    assert qualifies(call(OUTBOUND, talk=10.0, answered=True), s)
    assert learn(call(OUTBOUND, "1003", talk=60.0, answered=True), s, None).agent == "1003"


def test_outbound_call_without_agent_changes_nothing():
    assert learn(call(OUTBOUND, agent=None, talk=0.0), DEFAULT, None) is None


def test_unknown_direction_changes_nothing():
    assert not qualifies(call("internal"), DEFAULT)


# --- learn_from ------------------------------------------------------------------------------

def test_learn_from_inbound_ignores_outbound_calls():
    s = Settings(learn_from="inbound")
    assert learn(call(OUTBOUND, talk=60.0, answered=True), s, None) is None
    assert learn(call(INBOUND, talk=60.0), s, None) is not None


def test_learn_from_outbound_ignores_inbound_calls():
    s = Settings(learn_from="outbound")
    assert learn(call(INBOUND, talk=600.0), s, None) is None
    assert learn(call(OUTBOUND, talk=0.0, answered=False), s, None) is not None


def test_learn_from_both_is_default_and_learns_both_directions():
    assert DEFAULT.learn_from == "both"
    assert learn(call(INBOUND), DEFAULT, None) is not None
    assert learn(call(OUTBOUND), DEFAULT, None) is not None


# --- out-of-order events ---------------------------------------------------------------------

def test_later_ended_call_wins_when_processed_first():
    early = call(INBOUND, "1001", ended=T0)
    late = call(INBOUND, "1002", ended=T0 + timedelta(seconds=3))
    after_late = learn(late, DEFAULT, None)
    assert learn(early, DEFAULT, after_late) is None  # the earlier-ended call, processed later, loses
    # and in processing order it is the same answer
    assert learn(late, DEFAULT, learn(early, DEFAULT, None)).agent == "1002"


def test_same_call_seen_twice_changes_nothing_the_second_time():
    c = call(INBOUND, "1001", uuid="abc")
    first = learn(c, DEFAULT, None)
    assert learn(c, DEFAULT, first) is None


def test_calls_ending_at_the_same_instant_give_one_answer_in_any_order():
    # Decision: a tie on ended_at is broken by agent, then uuid -- arbitrary but order-independent.
    a = call(INBOUND, "1001", ended=T0, uuid="a")
    b = call(INBOUND, "1002", ended=T0, uuid="b")
    ab = learn(b, DEFAULT, learn(a, DEFAULT, None)) or learn(a, DEFAULT, None)
    ba = learn(a, DEFAULT, learn(b, DEFAULT, None)) or learn(b, DEFAULT, None)
    assert ab == ba and ab.agent == "1002"


def test_learning_never_overwrites_manual_binding():
    # learn only ever produces a learned binding; a manual binding given as `current` is not
    # compared with (and so not replaced): the store keeps the manual one in its own slot.
    manual = Binding(client=CLIENT, agent="1009", source=MANUAL, at=T0 + timedelta(days=1))
    result = learn(call(INBOUND, "1001", ended=T0), DEFAULT, manual)
    assert result.source == AUTO and result.agent == "1001"
    assert manual.agent == "1009"


def test_learn_keeps_call_uuid_for_the_record():
    assert learn(call(uuid="u-1"), DEFAULT, None).call_uuid == "u-1"


# --- is_current: look-back and expiry --------------------------------------------------------

def test_learned_binding_inside_lookback_routes():
    assert is_current(learned(at=T0 - timedelta(days=29)), DEFAULT, T0)


def test_learned_binding_outside_lookback_does_not_route():
    assert not is_current(learned(at=T0 - timedelta(days=30, seconds=1)), DEFAULT, T0)
    assert not is_current(learned(at=T0 - timedelta(days=2)), Settings(lookback=timedelta(days=1)), T0)


def test_lookback_boundary_is_inclusive():
    # Decision: a binding whose last call ended exactly `lookback` ago still routes.
    assert is_current(learned(at=T0 - timedelta(days=30)), DEFAULT, T0)


def test_lookback_zero_means_forever():
    s = Settings(lookback=timedelta(0))
    assert is_current(learned(at=T0 - timedelta(days=3650)), s, T0)


def test_manual_binding_never_expires_without_expiry():
    manual = Binding(client=CLIENT, agent="1001", source=MANUAL, at=T0 - timedelta(days=3650))
    assert is_current(manual, DEFAULT, T0)
    assert is_current(manual, Settings(lookback=timedelta(days=1)), T0)  # look-back is for learned only


def test_manual_binding_with_expiry_stops_routing_after_it():
    manual = Binding(client=CLIENT, agent="1001", source=MANUAL, at=T0, expires_at=T0 + timedelta(days=7))
    assert is_current(manual, DEFAULT, T0 + timedelta(days=6, hours=23))
    assert not is_current(manual, DEFAULT, T0 + timedelta(days=7))  # expiry is exclusive
    assert not is_current(manual, DEFAULT, T0 + timedelta(days=8))


@pytest.mark.parametrize("source", [MANUAL, AUTO])
def test_binding_from_the_future_is_current(source):
    b = Binding(client=CLIENT, agent="1001", source=source, at=T0 + timedelta(minutes=1))
    assert is_current(b, DEFAULT, T0)


def test_learned_binding_refreshed_by_new_call_routes_again():
    old = learned(at=T0 - timedelta(days=40))
    assert not is_current(old, DEFAULT, T0)
    refreshed = learn(call(INBOUND, "1001", ended=T0 - timedelta(hours=1)), DEFAULT, old)
    assert is_current(refreshed, DEFAULT, T0)


def test_learn_does_not_mutate_current():
    old = learned("1002", at=T0 - timedelta(days=1))
    snapshot = replace(old)
    learn(call(INBOUND, "1001"), DEFAULT, old)
    assert old == snapshot
