"""Webhooks through the durable outbox: bodies and signatures as a local receiver sees them, events
written in the transaction of their change, retries with backoff, and nothing lost across a
daemon restart with deliveries still pending."""
from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import gevent
import peewee
import pytest
from click.testing import CliRunner
from http_fakes import Receiver
from office import Office, wait_until

from fsrouter.binding_path import BindingPath
from fsrouter.cli import main
from fsrouter.config import ConfigError, load_config
from fsrouter.core import webhooks
from fsrouter.core.model import Call
from fsrouter.core.settings import Settings
from fsrouter.daemon import Daemon
from fsrouter.http.outbox import DEAD, PENDING, SENT, Outbox, Sender
from fsrouter.store import Store

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


# -- what is written -------------------------------------------------------------------------------

def test_answered_call_writes_answered_ended_and_binding_changed_in_its_transaction(store):
    BindingPath(store).set_manual_binding(CLIENT, "1002", T0 - timedelta(days=1))  # bound: 1002
    Outbox(store).purge((PENDING,))
    BindingPath(store).record_call(inbound(sticky_agent=None, recording="/rec/call-1.wav"), Settings())
    rows = Outbox(store).entries()
    assert [r.event_type for r in rows] == ["call.answered", "call.ended", "binding.changed"]
    answered, ended, changed = (json.loads(r.body) for r in rows)
    assert answered["data"] == {"call_uuid": "call-1", "direction": "inbound", "client": CLIENT, "group": "sales",
                                "agent": "1001", "bound_agent": "1002", "agent_was_bound": False,
                                "route": None, "answered_at": "2024-06-01T12:00:05.000000Z"}
    assert ended["data"]["talk_seconds"] == 30.0 and ended["data"]["recording"] == "/rec/call-1.wav"
    assert changed["data"] == {"client": CLIENT, "source": "auto", "old_agent": None, "new_agent": "1001",
                               "why": "answered inbound call, talked 30s", "kind": "learned", "expires_at": None,
                               "call_uuid": "call-1"}


def test_missed_call_names_the_bound_agent_and_who_was_rung(store):
    BindingPath(store).record_call(inbound(agent=None, sticky_agent="1001", route="none"), Settings())
    (missed,) = [json.loads(r.body) for r in Outbox(store).entries() if r.event_type == "call.missed"]
    assert missed["data"]["bound_agent"] == "1001" and missed["data"]["rung"] == ["1001", "1002"]


def test_the_bound_agent_answering_is_flagged(store):
    BindingPath(store).record_call(inbound(agent="1001", sticky_agent="1001", route="sticky"), Settings())
    answered = json.loads(Outbox(store).entries()[0].body)
    assert answered["data"]["agent_was_bound"] is True


def test_transferred_call_sends_one_event_per_hand_over():
    call = Call("inbound", CLIENT, "1003", T0, T0 + timedelta(minutes=2), 60, True, uuid="c",
                handled_by=("1001", "1002", "1003"))
    events = webhooks.call_events(call, bound_agent="1001")
    hops = [e.data for e in events if e.type == "call.transferred"]
    assert [(h["from_agent"], h["to_agent"], h["bound_agent"]) for h in hops] == [("1001", "1002", "1001"),
                                                                                ("1002", "1003", "1001")]


def test_tracker_reads_transfers_and_the_recording_path_off_the_events():
    from test_events_rules import FakeSwitch

    fs = FakeSwitch()
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
    assert [e.type for e in webhooks.call_events(call, "1001")] == ["call.answered", "call.transferred",
                                                                     "call.ended"]


def test_same_call_recorded_twice_has_the_same_event_ids(store):
    BindingPath(store).record_call(inbound(), Settings())
    BindingPath(store).record_call(inbound(), Settings())
    ids = [r.event_id for r in Outbox(store).entries() if r.event_type.startswith("call.")]
    assert len(ids) == 2  # the second time, the rows were already there


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
    assert Outbox(store).entries() == []


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
    assert webhooks.verify(SECRET, headers["x-fsrouter-timestamp"], body, headers["x-fsrouter-signature"])
    assert not webhooks.verify("other secret", headers["x-fsrouter-timestamp"], body,
                               headers["x-fsrouter-signature"])
    assert not webhooks.verify(SECRET, headers["x-fsrouter-timestamp"], body + b" ", headers["x-fsrouter-signature"])
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
    daemon = Daemon(office.config, office.service)
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
