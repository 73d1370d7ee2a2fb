"""Webhooks through the durable outbox: bodies and signatures as a local receiver sees them, events
written in the transaction of their change, retries with backoff, and nothing lost across a
daemon restart with deliveries still pending."""
from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime, timedelta, timezone

import gevent
import peewee
import pytest
from click.testing import CliRunner
from http_fakes import Receiver
from office import Office, wait_until

from fsrouter.binding_path import BindingPath
from fsrouter.cli import main
from fsrouter.config import ConfigError, load_config
from fsrouter.core import live, webhooks
from fsrouter.core.model import Call
from fsrouter.core.settings import Settings
from fsrouter.http.outbox import DEAD, PENDING, SENT, LiveEvents, Outbox, Sender, chains
from fsrouter.service import Service
from fsrouter.store import Store
from fsrouter.wiring import build_daemon

SECRET = "whsec-test"
CLIENT = "+380501234567"
T0 = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.stop()


@pytest.fixture
def store(tmp_path, receiver):
    store = Store.open(f"sqlite:///{tmp_path / 'w.db'}")
    store.add_group("sales")
    for ext in ("1001", "1002"):
        store.add_agent(ext, f"Agent {ext}", groups=["sales"])
    store.webhook_urls = (receiver.url + "/hook",)
    yield store
    store.close()


def sender_for(store, **kw):
    options = {"poll": 0.02, "base_delay": 0.05, "max_delay": 0.2, "jitter": False}
    options.update(kw)
    return Sender(Outbox(store), SECRET, **options)


def deliver_all(sender, timeout=5.0):
    with gevent.Timeout(timeout, False):
        while sender.outbox.count(PENDING):
            sender.run_once()
            gevent.sleep(0.02)
    sender.pool.join(timeout)


def inbound(agent="1001", talk=30.0, uuid="call-1", **kw):
    return Call("inbound", CLIENT, agent, T0, T0 + timedelta(seconds=talk + 5), talk, agent is not None, uuid=uuid,
                group="sales", answered_at=T0 + timedelta(seconds=5) if agent else None,
                rung=("1002", "1001") if agent else ("1001", "1002"),
                outcome="answered" if agent else "missed", handled_by=(agent,) if agent else (), **kw)


def told(kind, seq, agent=None, at=5.0, uuid="call-1", call=None, **kw):
    """One live transition of an inbound call of group sales, `at` seconds into it."""
    return live.Transition(kind, uuid, T0 + timedelta(seconds=at), "inbound", CLIENT, agent=agent, group="sales",
                           seq=seq, call=call, **kw)


def write_live(store, *transitions):
    """The transitions through the daemon's LiveEvents into the outbox; the bodies written, in order."""
    writer = LiveEvents(Service(store, cache_ttl=0.0))
    for t in transitions:
        writer.put(t)
    assert writer.flush() and not writer.pending
    return [json.loads(r.body) for r in Outbox(store).entries(limit=None)]


# -- what is written -------------------------------------------------------------------------------

def test_an_event_body_is_compact_json_keys_sorted_in_utf8():
    event = webhooks.Event("id-1", "call.ringing", datetime(2024, 5, 1, 9, 30, 2, tzinfo=UTC),
                           {"client": "+380671234567", "name": "Олена <b>", "z": 1, "a": [12.0, None]})
    assert event.body() == ('{"at":"2024-05-01T09:30:02.000000Z","data":{"a":[12.0,null],"client":"+380671234567",'
                            '"name":"Олена <b>","z":1},"id":"id-1","type":"call.ringing"}').encode()


def test_an_event_body_with_what_orjson_refuses_is_still_json():
    """A lone surrogate (a CRM's name decoded leniently) or an integer past 64 bits: orjson refuses
    them, json writes them escaped to ASCII; the body still reads back to the same data."""
    data = {"name": "a\ud800b", "n": 2 ** 70}
    event = webhooks.Event("id-2", "call.ringing", datetime(2024, 5, 1, tzinfo=UTC), data)
    assert json.loads(event.body())["data"] == data


def test_recorded_call_writes_binding_changed_in_its_transaction_and_no_call_event(store):
    BindingPath(store).set_manual_binding(CLIENT, "1002", T0 - timedelta(days=1))  # bound: 1002
    Outbox(store).purge((PENDING,))
    BindingPath(store).record_call(inbound(sticky_agent=None, recording="/rec/call-1.wav"), Settings())
    rows = Outbox(store).entries()
    # call.answered and call.ended are the live story's (below): told as they happen, not here.
    assert [r.event_type for r in rows] == ["binding.changed"]
    assert json.loads(rows[0].body)["data"] == {
        "client": CLIENT, "source": "auto", "old_agent": None, "new_agent": "1001",
        "why": "answered inbound call, talked 30s", "kind": "learned", "expires_at": None, "call_uuid": "call-1",
        "bound_agent": "1002"}  # the manual binding still routes first: 1002 stays responsible


def test_live_answered_and_ended_bodies(store):
    BindingPath(store).set_manual_binding(CLIENT, "1002", T0 - timedelta(days=1))  # bound: 1002
    Outbox(store).purge((PENDING,))
    call = inbound(sticky_agent=None, recording="/rec/call-1.wav")
    answered, ended = write_live(store, told("answered", 1, "1001"), told("ended", 2, "1001", at=35, call=call))
    assert (answered["type"], ended["type"]) == ("call.answered", "call.ended")
    assert answered["data"] == {"call_uuid": "call-1", "direction": "inbound", "client": CLIENT, "group": "sales",
                                "agent": "1001", "bound_agent": "1002", "agent_was_bound": False,
                                "route": None, "answered_at": "2024-06-01T12:00:05.000000Z", "seq": 1,
                                "notify": "agent", "recipients": [{"ext": "1001", "crm_id": None}]}
    assert answered["at"] == "2024-06-01T12:00:05.000000Z"
    assert ended["data"]["talk_seconds"] == 30.0 and ended["data"]["recording"] == "/rec/call-1.wav"
    assert (ended["data"]["started_at"], ended["data"]["ended_at"]) == ("2024-06-01T12:00:00.000000Z",
                                                                          "2024-06-01T12:00:35.000000Z")
    assert (ended["data"]["answered"], ended["data"]["outcome"], ended["data"]["bound_agent"]) == (
        True, "answered", "1002")


def test_missed_call_names_the_bound_agent_and_who_was_rung_and_tells_the_whole_group(store):
    call = inbound(agent=None, sticky_agent="1001", route="none")
    missed, _ = write_live(store, told("missed", 1, "1002", at=40, call=call), told("ended", 2, at=40, call=call))
    assert missed["type"] == "call.missed"
    assert missed["data"]["bound_agent"] == "1001" and missed["data"]["rung"] == ["1001", "1002"]
    assert (missed["data"]["notify"], [r["ext"] for r in missed["data"]["recipients"]]) == ("group", ["1001", "1002"])


def test_the_bound_agent_answering_is_flagged(store):
    (ringing, answered) = write_live(store, told("ringing", 1, "1001", at=0), told("answered", 2, "1001", route="sticky"))
    assert answered["data"]["agent_was_bound"] is True and answered["data"]["bound_agent"] == "1001"
    assert ringing["type"] == "call.ringing" and ringing["data"]["recipients"] == [{"ext": "1001", "crm_id": None}]


def test_an_answer_by_an_extension_of_no_known_agent_tells_the_groups_supervisors(store):
    store.set_group_options("sales", supervisors=["1009", "1010"])
    store.add_agent("1003", "Agent 1003")
    store.set_agent_crm_id("1003", "u-3")  # the CRM's user, for a CRM that assigns by its own ids
    answered, handed = write_live(store, told("answered", 1, "1999"),
                                  told("transferred", 2, "1003", from_agent="1999", hop=1))
    assert (answered["data"]["notify"], answered["data"]["recipients"]) == (
        "supervisors", [{"ext": "1009", "crm_id": None}, {"ext": "1010", "crm_id": None}])
    assert (handed["data"]["notify"], handed["data"]["recipients"]) == ("agent", [{"ext": "1003", "crm_id": "u-3"}])


def test_transferred_call_sends_one_event_per_hand_over(store):
    bodies = write_live(store, told("answered", 1, "1001", route="sticky"),
                        told("transferred", 2, "1002", from_agent="1001", hop=1, at=20),
                        told("transferred", 3, "1003", from_agent="1002", hop=2, at=40))
    hops = [b["data"] for b in bodies if b["type"] == "call.transferred"]
    assert [(h["from_agent"], h["to_agent"], h["bound_agent"], h["hop"]) for h in hops] == [
        ("1001", "1002", "1001", 1), ("1002", "1003", "1001", 2)]


def test_a_call_recovered_from_a_cdr_tells_its_story_at_its_end(store):
    # The catch-up recovers calls nobody listened to: their answer or miss, then their end.
    answered, nobody = inbound(), inbound(agent=None, uuid="call-2")
    assert [(t.kind, t.seq, t.agent) for t in live.story_of_finished(answered)] == [
        ("answered", 1, "1001"), ("ended", 2, "1001")]
    assert [(t.kind, t.seq, t.agent) for t in live.story_of_finished(nobody)] == [
        ("missed", 1, "1002"), ("ended", 2, None)]
    bodies = write_live(store, *live.story_of_finished(nobody))
    assert [(b["type"], b["data"]["notify"]) for b in bodies] == [("call.missed", "group"), ("call.ended", "group")]


def test_tracker_tells_transfers_and_the_recording_path_off_the_events():
    from test_events_rules import FakeSwitch

    transitions = []
    fs = FakeSwitch(on_transition=transitions.append)
    fs.at(0).client_calls("A")
    fs.set("A", fsrouter_recording="/var/lib/freeswitch/recordings/A.wav")
    fs.at(0.02).rings("B", "1001", "A")
    fs.at(2).answer("B")
    fs.bridge("A", "B")
    fs.at(20).unbridge("A", "B")
    fs.hangup("B", cause="BLIND_TRANSFER")
    fs.at(20.1).rings("F", "1002", "A")
    fs.at(22).answer("F")
    fs.bridge("A", "F")
    fs.at(40).hangup("F")
    fs.hangup("A")
    (call,) = fs.calls
    assert call.handled_by == ("1001", "1002")
    assert call.recording == "/var/lib/freeswitch/recordings/A.wav"
    assert [(t.kind, t.agent) for t in transitions] == [
        ("ringing", "1001"), ("answered", "1001"), ("ringing", "1002"), ("answered", "1002"),
        ("transferred", "1002"), ("ended", "1002")]
    events = [webhooks.live_event(t, None, ("agent", [t.agent])) for t in transitions]
    assert [e.type for e in events] == ["call.ringing", "call.answered", "call.ringing", "call.answered",
                                        "call.transferred", "call.ended"]
    assert events[-1].data["recording"] == "/var/lib/freeswitch/recordings/A.wav"


def test_the_same_story_told_twice_has_the_same_event_ids(store):
    story = (told("ringing", 1, "1001", at=0), told("answered", 2, "1001"), told("ended", 3, "1001", at=35,
                                                                                 call=inbound()))
    first = write_live(store, *story)
    again = write_live(store, *story)  # a replay: the rows are there already
    assert [b["id"] for b in again] == [b["id"] for b in first] and len(first) == 3
    other = webhooks.live_event(told("answered", 2, "1001", uuid="call-2"), None, ("agent", ["1001"]))
    assert other.id not in {b["id"] for b in first}


def test_a_calls_events_are_due_together_in_order_and_wait_while_an_earlier_one_is_claimed_or_backing_off(store):
    write_live(store, told("ringing", 1, "1001", at=0), told("answered", 2, "1001"),
               told("ringing", 1, "1002", at=0, uuid="call-2"))
    box = Outbox(store)
    due = box.due(datetime.now(UTC), 10)
    # call-1's answered comes with its ringing, after it; call-2's ringing does not wait for call-1.
    assert [(json.loads(e.body)["data"]["call_uuid"], e.event_type) for e in due] == [
        ("call-1", "call.ringing"), ("call-1", "call.answered"), ("call-2", "call.ringing")]
    assert [[e.event_type for e in chain] for chain in chains(due, 10)] == [
        ["call.ringing", "call.answered"], ["call.ringing"]]
    assert [[e.event_type for e in chain] for chain in chains(due, 1)] == [["call.ringing", "call.answered"]]
    first = due[0]
    box.failed(first, "HTTP 503", datetime.now(UTC) + timedelta(minutes=5), dead=False)  # backing off
    assert [e.event_type for e in box.due(datetime.now(UTC), 10)] == ["call.ringing"]  # call-2's; answered waits
    assert box.claim(box.due(datetime.now(UTC), 10)[0], datetime.now(UTC) + timedelta(minutes=1))
    box.delivered(first, datetime.now(UTC))
    assert [e.event_type for e in box.due(datetime.now(UTC), 10)] == ["call.answered"]


def test_a_chain_stops_at_its_first_failure_and_the_rest_follow_in_order_after_the_backoff(store, receiver):
    write_live(store, told("ringing", 1, "1001", at=0), told("answered", 2, "1001"), told("ended", 3, "1001", at=40))
    receiver.status = 503
    sender = sender_for(store, base_delay=0.3, max_delay=0.3)
    assert sender.run_once() == 3  # one chain: the three rows
    sender.pool.join(5)
    assert receiver.refused == 1  # the first failed; the two behind it were not posted
    (failed, *rest) = Outbox(store).entries(limit=None)
    assert failed.attempts == 1 and [e.attempts for e in rest] == [0, 0]
    assert Outbox(store).due(datetime.now(UTC), 10) == []  # they wait behind it
    receiver.status = 200
    deliver_all(sender)
    assert [e["type"] for e in receiver.events()] == ["call.ringing", "call.answered", "call.ended"]


def test_the_sender_keeps_one_connection_open_per_url_across_deliveries(store, receiver):
    for n in range(30):
        write_live(store, told("ringing", 1, "1001", at=0, uuid=f"call-{n}"))
    sender = sender_for(store, concurrency=1)
    deliver_all(sender)
    assert len(receiver.events()) == 30
    assert sender.connections.opened == 1


def test_many_calls_events_go_out_side_by_side_each_calls_in_order(store, receiver):
    for n in range(40):
        write_live(store, told("ringing", 1, "1001", at=0, uuid=f"call-{n}"), told("answered", 2, "1001", uuid=f"call-{n}"),
                   told("ended", 3, "1001", at=40, uuid=f"call-{n}"))
    real_handle = receiver.handle
    monkey_slow = {"now": 0, "most": 0}

    def slow(environ):  # each answer takes 20 ms: posted one at a time, 120 would take 2.4 s
        monkey_slow["now"] += 1
        monkey_slow["most"] = max(monkey_slow["most"], monkey_slow["now"])
        gevent.sleep(0.02)
        monkey_slow["now"] -= 1
        return real_handle(environ)

    receiver.handle = slow
    sender = sender_for(store, concurrency=16)
    started = time.monotonic()
    deliver_all(sender, timeout=10)
    assert time.monotonic() - started < 1.5
    assert monkey_slow["most"] > 4  # side by side
    seen: dict[str, list[str]] = {}
    for event in receiver.events():
        seen.setdefault(event["data"]["call_uuid"], []).append(event["type"])
    assert len(seen) == 40 and all(kinds == ["call.ringing", "call.answered", "call.ended"] for kinds in seen.values())


def test_group_set_supervisors(store):
    db = store.db.database
    run = lambda *args: CliRunner().invoke(main, ["--db", f"sqlite:///{db}", *args])
    out = run("group", "set", "sales", "--supervisor", "1009", "--supervisor", "1010")
    assert out.exit_code == 0 and "supervisors: 1009, 1010" in out.output
    assert store.group("sales").supervisors == ("1009", "1010")
    bad = run("group", "set", "sales", "--supervisor", "10;09")
    assert bad.exit_code != 0 and "bad supervisor extension" in bad.output and "Traceback" not in bad.output
    assert store.group("sales").supervisors == ("1009", "1010")  # nothing half-written
    assert "supervisors: none" in run("group", "set", "sales", "--supervisor", "").output
    assert store.group("sales").supervisors == ()


def test_no_event_without_its_change_a_failed_transaction_writes_neither(store, monkeypatch):
    def boom(*a, **k):
        raise peewee.OperationalError("disk full")

    monkeypatch.setattr(store, "apply_binding_changes", boom)
    with pytest.raises(peewee.OperationalError):
        BindingPath(store).record_call(inbound(), Settings())
    assert store.calls() == [] and Outbox(store).entries() == []


def test_manual_binding_set_and_removed_are_binding_changed_events(store):
    BindingPath(store).set_manual_binding(CLIENT, "1001", T0, why="CRM said so")
    BindingPath(store).set_manual_binding(CLIENT, "1001", T0)  # no change of agent: no event
    BindingPath(store).set_manual_binding(CLIENT, "1002", T0)
    BindingPath(store).remove_bindings(CLIENT, ("manual",))
    data = [json.loads(r.body)["data"] for r in Outbox(store).entries()]
    assert [(d["old_agent"], d["new_agent"], d["why"]) for d in data] == [
        (None, "1001", "CRM said so"), ("1001", "1002", "set by hand"), ("1002", None, "removed")]


def test_without_webhook_urls_nothing_is_written(store):
    store.webhook_urls = ()
    BindingPath(store).record_call(inbound(), Settings())
    BindingPath(store).set_manual_binding(CLIENT, "1002", T0)
    assert write_live(store, told("answered", 1, "1001")) == []


def test_imported_calls_send_no_webhooks(store, tmp_path):
    from fsrouter.service import Service

    Service(store).import_calls([{"started_at": "2024-05-01T09:30:00Z", "direction": "inbound",
                                  "client": "0501234567", "agent": "1001", "talk_seconds": "95"}])
    assert Outbox(store).entries() == []


# -- delivery --------------------------------------------------------------------------------------

def test_webhook_body_and_signature_are_right(store, receiver):
    BindingPath(store).set_manual_binding(CLIENT, "1001", T0, why="by hand")
    sender = sender_for(store)
    deliver_all(sender)
    (got,) = receiver.received
    headers, body = got["headers"], got["body"]
    row = Outbox(store).entries((SENT,))[0]
    assert body == row.body.encode()  # the stored bytes, exactly
    event = json.loads(body)
    assert event["type"] == "binding.changed" and event["id"] == headers["x-fsrouter-delivery"]
    assert headers["idempotency-key"] == event["id"] and headers["x-fsrouter-event"] == "binding.changed"
    assert headers["content-type"] == "application/json"
    assert headers["x-fsrouter-signature"] == webhooks.signature(SECRET, headers["x-fsrouter-timestamp"], body)
    now = time.time()
    assert webhooks.verify(SECRET, headers["x-fsrouter-timestamp"], body, headers["x-fsrouter-signature"], now=now)
    assert not webhooks.verify("other secret", headers["x-fsrouter-timestamp"], body,
                               headers["x-fsrouter-signature"], now=now)
    assert not webhooks.verify(SECRET, headers["x-fsrouter-timestamp"], body + b" ", headers["x-fsrouter-signature"],
                               now=now)
    assert abs(int(headers["x-fsrouter-timestamp"]) - time.time()) < 60
    assert row.state == SENT and row.attempts == 1


def test_a_refusing_receiver_is_retried_with_backoff_then_given_up(store, receiver):
    receiver.status = 503
    BindingPath(store).set_manual_binding(CLIENT, "1001", T0)
    sender = sender_for(store, max_attempts=3)
    assert sender.delay(1) == 0.05 and sender.delay(2) == 0.1 and sender.delay(10) == 0.2
    started = time.monotonic()
    with gevent.Timeout(5, False):
        while Outbox(store).count(DEAD) == 0:
            sender.run_once()
            gevent.sleep(0.01)
    (row,) = Outbox(store).entries((DEAD,))
    assert row.attempts == 3 and row.last_error == "HTTP 503" and receiver.refused == 3
    assert time.monotonic() - started >= 0.05 + 0.1  # waited between the attempts
    receiver.status = 200
    assert Outbox(store).retry() == 1  # `fsrouter outbox retry`
    deliver_all(sender)
    assert len(receiver.received) == 1 and Outbox(store).count(SENT) == 1


def test_a_claimed_row_is_not_sent_twice(store):
    BindingPath(store).set_manual_binding(CLIENT, "1001", T0)
    box = Outbox(store)
    (entry,) = box.due(datetime.now(UTC), 10)
    assert box.claim(entry, datetime.now(UTC) + timedelta(minutes=1))
    assert not box.claim(entry, datetime.now(UTC) + timedelta(minutes=1))  # another node read it too
    assert box.due(datetime.now(UTC), 10) == []


def test_two_daemons_claim_and_deliver_each_outbox_row_once(store_url, receiver):
    """Two nodes' senders, each on its own connection to one database (conftest's store_url:
    SQLite, then PostgreSQL), read the same due rows: each row is claimed by one of them only,
    and every event reaches the receiver once."""
    with Store.open(store_url, webhook_urls=(receiver.url + "/hook",)) as one, Store.open(store_url) as two:
        one.add_group("sales")
        one.add_agent("1001", "Anna", groups=["sales"])
        for n in range(12):
            BindingPath(one).set_manual_binding(f"+3805012345{n:02d}", "1001", T0)
        boxes = Outbox(one), Outbox(two)
        now = datetime.now(UTC)
        due_one, due_two = (box.due(now, 100) for box in boxes)
        assert [e.id for e in due_one] == [e.id for e in due_two] and len(due_one) == 12
        until = now + timedelta(minutes=1)
        for mine, theirs in zip(due_one, due_two):
            assert [boxes[0].claim(mine, until), boxes[1].claim(theirs, until)].count(True) == 1
        assert boxes[0].due(now, 100) == boxes[1].due(now, 100) == []

        assert boxes[0].retry() == 12  # due again now: both daemons' senders go for them at once
        senders = sender_for(one), sender_for(two)
        with gevent.Timeout(10, False):
            while boxes[0].count(PENDING):
                gevent.joinall([gevent.spawn(sender.run_once) for sender in senders])
                gevent.sleep(0.02)
        for sender in senders:
            sender.pool.join(5)
        ids = [event["id"] for event in receiver.events()]
        assert len(ids) == len(set(ids)) == 12
        assert boxes[1].count(SENT) == 12


def test_webhook_urls_need_a_secret(tmp_path):
    path = tmp_path / "fsrouter.toml"
    path.write_text('webhook_urls = ["https://crm.example/hook"]\n')
    path.chmod(0o600)
    with pytest.raises(ConfigError, match="webhook_secret"):
        load_config(str(path), environ={})


# -- the daemon --------------------------------------------------------------------------------------

def test_live_call_through_the_daemon_reaches_the_receiver(tmp_path, receiver):
    office = Office(tmp_path, webhook_urls=(receiver.url + "/hook",), webhook_secret=SECRET)
    try:
        BindingPath(office.store).set_manual_binding(CLIENT, "1002", datetime.now(UTC))
        office.fake.agent("1002", answers_after=1, talk=15)
        office.call("0501234567")
        events = receiver.wait_for(4)
        types = [e["type"] for e in events]
        assert types[0] == "binding.changed" and {"call.answered", "call.ended"} <= set(types)
        answered = next(e for e in events if e["type"] == "call.answered")["data"]
        assert (answered["agent"], answered["bound_agent"], answered["agent_was_bound"]) == ("1002", "1002", True)
        assert answered["route"] == "sticky"
    finally:
        office.close()


def test_a_live_calls_events_reach_the_receiver_as_they_happen_not_at_hang_up(tmp_path, receiver):
    office = Office(tmp_path, webhook_urls=(receiver.url + "/hook",), webhook_secret=SECRET)
    try:
        office.fake.agent("1002", answers_after=1, talk=600)  # 600 FreeSWITCH s: 3 s at the test's scale
        placed = time.monotonic()
        handle = office.fake.place_call(caller="0501234567", group="sales", router=office.router)
        answered = receiver.wait_for(1, timeout=5, kind="call.answered")
        got_at = time.monotonic()
        assert not handle.done.is_set(), "call.answered came at hang-up, not when the agent answered"
        assert got_at - placed < 1.5  # the answer came 5 ms after the call was placed
        assert handle.wait(15)
        office.settle()
        assert receiver.wait_for(1, kind="call.ended")
        types = [e["type"] for e in receiver.events() if e["type"].startswith("call.")]
        # In the order told, each once: 1002's phone rang (the others have none on the fake), 1002
        # answered, the end.
        assert types == ["call.ringing", "call.answered", "call.ended"]
        assert [e["data"]["agent"] for e in receiver.events("call.ringing")] == ["1002"]
        assert answered[0]["data"]["recipients"] == [{"ext": "1002", "crm_id": None}]
        seqs = [e["data"]["seq"] for e in receiver.events() if e["type"].startswith("call.")]
        assert seqs == sorted(seqs)
    finally:
        office.close()


def test_nothing_is_lost_across_a_daemon_restart_with_a_pending_outbox(tmp_path, receiver):
    receiver.status = 503  # the CRM is down
    office = Office(tmp_path, webhook_urls=(receiver.url + "/hook",), webhook_secret=SECRET)
    office.fake.agent("1001", answers_after=1, talk=12)
    office.call("0501234567")
    office.call("0671112233")
    assert wait_until(lambda: receiver.refused >= 2, 15), receiver.refused
    assert receiver.received == []
    office.daemon.stop()
    pending = Outbox(office.store).entries()
    assert len(pending) >= 6 and all(e.state == PENDING for e in pending)

    receiver.status = 200  # the CRM is back; a new daemon on the same database
    daemon = build_daemon(office.config, one_connection=True, cache_ttl=0.0)
    daemon.start()
    try:
        # Each row is due when its backoff says (the more refusals it met on a slow machine, the
        # later): give the new daemon until the last of them, and then some.
        last_due = max(e.next_at for e in pending)
        patience = max(0.0, (last_due - datetime.now(UTC)).total_seconds()) + 15
        got = receiver.wait_for(len(pending), timeout=patience)
        assert sorted(e["id"] for e in got) == sorted(e.event_id for e in pending)
        # The receiver has a row before the sender, which marks it sent once the answer is back.
        assert wait_until(lambda: Outbox(office.store).count(PENDING) == 0, 10)
    finally:
        daemon.stop()
        office.fake.stop()
        office.store.close()


# -- the CLI -----------------------------------------------------------------------------------------

def test_outbox_list_retry_purge_commands(store, tmp_path):
    BindingPath(store).set_manual_binding(CLIENT, "1001", T0)
    db = store.db.database
    run = lambda *args: CliRunner().invoke(main, ["--db", f"sqlite:///{db}", *args])
    listed = run("outbox", "list", "--json")
    assert listed.exit_code == 0, listed.output
    (row,) = json.loads(listed.output)
    assert (row["type"], row["state"], row["attempts"]) == ("binding.changed", "pending", 0)
    assert "binding.changed" in run("outbox", "list").output
    assert run("outbox", "retry").output.startswith("1 delivery")
    Outbox(store).delivered(Outbox(store).entries()[0], datetime.now(UTC))
    assert "purged 1 event" in run("outbox", "purge").output
    assert run("outbox", "list").output.strip() == "the outbox is empty"


def test_agent_set_crm_id(store):
    db = store.db.database
    run = lambda *args: CliRunner().invoke(main, ["--db", f"sqlite:///{db}", *args])
    assert run("agent", "set", "1001", "--crm-id", "u-7").output.strip() == "agent 1001: CRM id u-7"
    assert store.agents()["1001"].crm_id == "u-7"
    taken = run("agent", "set", "1002", "--crm-id", "u-7")
    assert taken.exit_code == 1 and "already agent 1001's" in taken.output
    assert run("agent", "set", "1001", "--crm-id", "").output.strip() == "agent 1001: no CRM id"
    assert run("agent", "set", "1001").exit_code == 2


def test_a_delivery_cut_off_by_stop_is_tried_again_at_the_next_start(store, receiver, monkeypatch):
    real_handle = receiver.handle
    monkeypatch.setattr(receiver, "handle", lambda environ: (gevent.sleep(5), real_handle(environ))[1])
    BindingPath(store).record_call(inbound(), Settings())
    sender = sender_for(store)
    sender.start()
    assert wait_until(lambda: sender._in_flight, 5), "no delivery started"
    sender.stop(timeout=0.3)  # the receiver has not answered: the delivery is cut off
    assert Outbox(store).count(PENDING) == len(Outbox(store).entries())
    again = sender_for(store)  # the next start
    assert again.run_once() >= 1, "the cut-off delivery waits for its old claim to run out"
    again.pool.kill()


def sender_in_a_burst(store, monkeypatch, behind):
    """A started sender whose listener has been behind (`behind`) for longer than BURST_AFTER,
    and a call's first event written then: the sender's to stop."""
    import fsrouter.http.outbox as outbox_module
    monkeypatch.setattr(outbox_module, "YIELD_AT_MOST", 1.0)
    monkeypatch.setattr(outbox_module, "BURST_AFTER", 0.02)
    sender = sender_for(store, behind=behind, poll=0.01)
    sender.start()
    gevent.sleep(0.1)
    write_live(store, told("ringing", 1, "1001", at=0))
    sender.wake()
    return sender


def test_the_sender_waits_while_freeswitchs_events_wait_unread_then_sends(store, receiver, monkeypatch):
    behind = {"now": True}  # behind at every look
    sender = sender_in_a_burst(store, monkeypatch, lambda: behind["now"])
    try:
        gevent.sleep(0.3)
        assert receiver.received == [] and sender.yielded > 0  # the events are read first
        behind["now"] = False
        assert receiver.wait_for(1, timeout=0.5)
        behind["now"] = True
        gevent.sleep(0.1)
        write_live(store, told("answered", 2, "1001"))
        sender.wake()
        # Never put off for ever: YIELD_AT_MOST later it sends anyway.
        assert len(receiver.wait_for(2, timeout=2)) == 2
    finally:
        sender.stop(timeout=1)


def test_due_rows_are_read_off_the_state_id_index_not_sorted_whole(store):
    """With a backlog, sorting every due row each round was 18% of the daemon's CPU (bench, live)."""
    box = Outbox(store)
    now = box.table.next_at.db_value(datetime.now(UTC))
    plan = " ".join(str(row) for row in store.db.execute_sql(
        "EXPLAIN QUERY PLAN " + box._due_sql, (PENDING, now, PENDING, now, 64)).fetchall())
    assert "TEMP B-TREE" not in plan and "state_id" in plan


def test_the_sender_does_not_wait_for_a_listener_behind_only_for_a_moment(store, receiver):
    write_live(store, told("ringing", 1, "1001", at=0))
    sender = sender_for(store, behind=lambda: True)  # behind at the first look: no burst yet
    assert sender._yield_to_events() is None and sender.yielded == 0
    assert sender.run_once() == 1
    sender.pool.join(2)
    assert len(receiver.received) == 1


@pytest.mark.parametrize("name", ["", "0000-1234|ringing|0", "+380671234567|learned|é"])
def test_event_ids_are_the_uuid5_of_what_they_name(name):
    assert webhooks.event_id(name) == str(uuid.uuid5(webhooks._NAMESPACE, name))


@pytest.mark.parametrize("at", [datetime(2024, 5, 1, 9, 30, 2, tzinfo=UTC),
                                datetime(2024, 5, 1, 12, 30, 2, 7, tzinfo=timezone(timedelta(hours=3)))])
def test_event_times_are_utc_to_the_microsecond_with_a_z(at):
    assert webhooks.iso(at) == at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_a_moment_drained_in_a_burst_does_not_end_the_senders_wait(store, receiver, monkeypatch):
    """A reader in a burst drains its socket for a moment now and then (one look in twenty in the
    bench's blast): the sender goes on waiting until the listener is not behind at several looks."""
    looks = {"n": 0}

    def behind() -> bool:  # every fifth look finds the socket drained
        looks["n"] += 1
        return looks["n"] % 5 != 0

    sender = sender_in_a_burst(store, monkeypatch, behind)
    try:
        gevent.sleep(0.4)
        assert receiver.received == [] and sender.yielded > 10
    finally:
        sender.stop(timeout=1)


def test_outside_a_burst_one_look_not_behind_is_caught_up(store, receiver):
    """Before the wait one look decides: at 100 calls/s the listener is behind for moments."""
    looks = iter([False, True, True, True])  # not behind now, behind again at the next looks
    sender = sender_for(store, behind=lambda: next(looks))
    sender._behind_since = time.monotonic() - 0.1  # behind for a moment, no burst yet
    sender._yield_to_events()
    assert sender._behind_since is None and sender.yielded == 0
