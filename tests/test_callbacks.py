"""callback.done: an agent calls back a client whose call was missed, and the CRM hears of it."""
from __future__ import annotations

import json

import pytest
from test_missed import ANNA, BORYS, call, missed

from fsrouter.binding_path import BindingPath
from fsrouter.core.missed import closed_by
from fsrouter.core.model import INBOUND, OUTBOUND
from fsrouter.core.settings import Settings
from fsrouter.core.webhooks import CALLBACK_DONE, callback_done
from fsrouter.http.outbox import Outbox
from fsrouter.store import Store


@pytest.fixture
def store(tmp_path):
    store = Store.open(f"sqlite:///{tmp_path / 'cb.db'}")
    store.add_group("sales")
    for ext in ("1001", "1002"):
        store.add_agent(ext, f"Agent {ext}", groups=["sales"])
    store.webhook_urls = ("http://127.0.0.1:9/hook",)
    yield store
    store.close()


def types(store):
    return [r.event_type for r in Outbox(store).entries()]


def test_an_agents_call_to_the_client_closes_their_open_missed_calls():
    history = [missed(ANNA, 0), missed(ANNA, 5), missed(BORYS, 6)]
    back = call(OUTBOUND, ANNA, "1002", 20, talk=30)
    rows = closed_by(back, history)
    assert [r.call.uuid for r in sorted(rows, key=lambda r: r.call.started_at)] == [
        history[0].uuid, history[1].uuid]
    assert all(r.callback_agent == "1002" and r.client_answered for r in rows)


def test_a_missed_call_already_called_back_is_not_closed_again():
    history = [missed(ANNA, 0), call(OUTBOUND, ANNA, "1001", 3, answered=False)]
    assert closed_by(call(OUTBOUND, ANNA, "1002", 20), history) == []


def test_a_call_that_closes_nothing_gives_nothing():
    history = [missed(ANNA, 0)]
    assert closed_by(missed(ANNA, 9), history) == []  # the client tries again: still waiting
    assert closed_by(call(OUTBOUND, ANNA, "1002", 20), []) == []


def test_callback_done_event_names_the_missed_call_and_who_called_back():
    first = missed(ANNA, 0, group="sales", sticky_agent="1003")
    back = call(OUTBOUND, ANNA, "1002", 20, answered=False)
    (row,) = closed_by(back, [first])
    event = callback_done(row)
    assert event.type == CALLBACK_DONE
    body = json.loads(event.body())
    assert body["data"] == {
        "call_uuid": back.uuid, "client": ANNA, "agent": "1002", "client_answered": False,
        "missed_call_uuid": first.uuid, "missed_at": "2024-05-01T09:00:00.000000Z",
        "missed_group": "sales", "missed_sticky_agent": "1003",
        "callback_after_seconds": 20 * 60 - 30}
    assert callback_done(row).id == event.id  # recorded twice, delivered once


def test_the_client_answered_on_calling_again_closes_as_answered_again_not_a_callback():
    (row,) = closed_by(call(INBOUND, ANNA, "1001", 9, talk=40), [missed(ANNA, 0)])
    assert row.closed_by == "answered_again"


# -- written with the call that closes it, in its transaction -----------------------------------------

def test_recording_an_agents_callback_writes_callback_done_to_the_outbox(store):
    first = missed(ANNA, 0, group="sales")
    BindingPath(store).record_call(first, Settings())
    assert CALLBACK_DONE not in types(store)
    back = call(OUTBOUND, ANNA, "1002", 20, answered=False)
    BindingPath(store).record_call(back, Settings())
    (row,) = [r for r in Outbox(store).entries() if r.event_type == CALLBACK_DONE]
    data = json.loads(row.body)["data"]
    assert (data["missed_call_uuid"], data["agent"], data["call_uuid"]) == (first.uuid, "1002", back.uuid)


def test_a_second_callback_sends_no_second_callback_done(store):
    BindingPath(store).record_call(missed(ANNA, 0), Settings())
    BindingPath(store).record_call(call(OUTBOUND, ANNA, "1002", 20), Settings())
    BindingPath(store).record_call(call(OUTBOUND, ANNA, "1001", 40), Settings())
    assert types(store).count(CALLBACK_DONE) == 1


def test_the_same_callback_recorded_twice_gives_one_callback_done(store):
    BindingPath(store).record_call(missed(ANNA, 0), Settings())
    back = call(OUTBOUND, ANNA, "1002", 20)
    BindingPath(store).record_call(back, Settings())
    BindingPath(store).record_call(back, Settings())
    assert types(store).count(CALLBACK_DONE) == 1
