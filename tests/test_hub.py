"""The live hub: transitions reach every subscriber in order, a slow one never blocks the publisher."""
from datetime import UTC, datetime

import gevent

from fsrouter.core.live import ANSWERED, ENDED, RINGING, Transition
from fsrouter.core.model import INBOUND
from fsrouter.hub import Hub

AT = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)


def transition(kind, uuid="c1", agent="1001", seq=1):
    return Transition(kind, uuid, AT, INBOUND, "+380671112233", agent=agent, seq=seq)


def test_every_subscriber_gets_every_transition_in_order():
    hub = Hub()
    first, second = hub.subscribe(), hub.subscribe()
    story = [transition(RINGING, seq=1), transition(ANSWERED, seq=2), transition(ENDED, seq=3)]
    for t in story:
        hub.publish(t)
    assert first.get(0) == story
    assert second.get(0) == story
    assert first.get(0) == []


def test_a_subscriber_sees_only_what_it_accepts():
    hub = Hub()
    mine = hub.subscribe(lambda t: t.agent == "1002")
    hub.publish(transition(RINGING, agent="1001"))
    hub.publish(transition(RINGING, agent="1002"))
    assert [t.agent for t in mine.get(0)] == ["1002"]


def test_a_stalled_subscriber_loses_its_oldest_transitions_and_is_told():
    hub = Hub(capacity=2)
    slow = hub.subscribe()
    for n in range(5):
        hub.publish(transition(RINGING, uuid=f"c{n}"))
    assert [t.call_uuid for t in slow.get(0)] == ["c3", "c4"]
    assert slow.dropped == 3


def test_get_waits_for_the_next_transition():
    hub = Hub()
    sub = hub.subscribe()
    gevent.spawn_later(0.01, hub.publish, transition(RINGING))
    assert [t.kind for t in sub.get(1.0)] == [RINGING]


def test_calls_in_progress_end_with_their_call():
    hub = Hub()
    hub.publish(transition(RINGING, uuid="a"))
    hub.publish(transition(ANSWERED, uuid="a", seq=2))
    hub.publish(transition(RINGING, uuid="b"))
    assert [[t.kind for t in story] for story in hub.calls()] == [[RINGING, ANSWERED], [RINGING]]
    hub.publish(transition(ENDED, uuid="a", seq=3))
    assert [story[0].call_uuid for story in hub.calls()] == ["b"]


def test_a_closed_subscription_gets_nothing_more():
    hub = Hub()
    with hub.subscribe() as sub:
        pass
    hub.publish(transition(RINGING))
    assert sub.get(0) == []


def test_calls_the_listener_stopped_following_are_no_longer_in_progress():
    hub = Hub()
    hub.publish(transition(RINGING, uuid="a"))
    hub.forget_in_progress()
    assert list(hub.calls()) == []
    hub.publish(transition(RINGING, uuid="b"))
    assert [story[0].call_uuid for story in hub.calls()] == ["b"]


def test_a_call_whose_end_was_never_told_leaves_the_calls_in_progress_after_stale_after():
    from datetime import timedelta
    hub = Hub(stale_after=timedelta(hours=12))
    lost = Transition(RINGING, "lost", AT, INBOUND, "+380671112233", agent="1001", seq=1)
    talking = Transition(ANSWERED, "long", AT + timedelta(hours=1), INBOUND, "+380671112299", agent="1002", seq=2)
    hub.publish(lost)
    hub.publish(talking)
    hub.publish(Transition(RINGING, "new", AT + timedelta(hours=11), INBOUND, "+380671112244", agent="1003", seq=1))
    assert [story[0].call_uuid for story in hub.calls()] == ["lost", "long", "new"]
    hub.publish(Transition(RINGING, "later", AT + timedelta(hours=12, minutes=30), INBOUND, "+380671112255",
                           agent="1004", seq=1))
    assert [story[0].call_uuid for story in hub.calls()] == ["long", "new", "later"] and hub.forgotten == 1
