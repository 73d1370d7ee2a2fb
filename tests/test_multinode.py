"""Several FreeSWITCH nodes, each with its own fsrouter, on one PostgreSQL database.

Two real Daemons in this process, each with its own fake FreeSWITCH (or both listening to one),
its own store connection and its own event socket, against a fresh schema on the PostgreSQL
server at tests/databases.py's PG_URL (dropped afterwards). Checked: the binding is that of the call that ended
later whichever node wrote first, one call seen by two nodes is one record, a node routes
with the other one gone, and each daemon counts and logs its own Event-Sequence gaps.
"""
from __future__ import annotations

import io
import itertools
import random
from contextlib import contextmanager
from datetime import UTC, datetime

import gevent
import pytest
import structlog
from databases import postgres_schema_url
from office import AGENTS, settle
from structlog.testing import capture_logs

from fsrouter.config import Config
from fsrouter.core.model import AUTO
from fsrouter.esl.events import CallTracker
from fsrouter.esl.sequence_watch import SequenceGapWatch
from fsrouter.fakefs import FakeFreeSWITCH
from fsrouter.store import Store
from fsrouter.wiring import build_daemon

CLIENT = "+380501234567"


@pytest.fixture
def pg_url():
    """A fresh schema on the local PostgreSQL server, set up with group sales and four agents."""
    with postgres_schema_url("fsrouter_multinode") as url:
        with Store.open(url) as setup:
            setup.add_group("sales")
            for ext in AGENTS:
                setup.add_agent(ext, f"Agent {ext}", dial_string=f"user/{ext}@127.0.0.1", groups=["sales"])
        yield url


class Node:
    """One FreeSWITCH (fake) and its own fsrouter, with its own connection to the shared database."""

    def __init__(self, url: str, fake: FakeFreeSWITCH | None = None):
        self.own_fake = fake is None
        self.fake = fake or FakeFreeSWITCH(time_scale=0.005).start()
        config = Config(database=url, esl_port=self.fake.esl_address[1], listen_port=0, drain_timeout=5.0)
        self.daemon = build_daemon(config, one_connection=True, cache_ttl=0.0)
        self.store = self.daemon.service.store
        self.daemon.start()
        assert self.daemon.listener.connected.wait(5), "the listener never connected"
        self.closed = False

    def call(self, caller: str = CLIENT):
        handle = self.fake.place_call(caller=caller, router=self.daemon.outbound.address)
        assert handle.wait(15), "the call never ended"
        return handle

    def only_answers(self, ext: str, talk: float = 15) -> None:
        for other in AGENTS:
            if other == ext:
                self.fake.agent(other, answers_after=1, talk=talk)
            else:
                self.fake.agent(other, never_answers=True)

    def pause_writer(self, monkeypatch) -> None:
        """Finished calls wait in this node's memory (a slow node, a database hiccup)."""
        monkeypatch.setattr(self.daemon.writer, "_write_batch", lambda: False)

    def resume_writer(self, monkeypatch) -> None:
        monkeypatch.delattr(self.daemon.writer, "_write_batch")
        assert self.daemon.writer.flush(10), "the paused calls were not written"

    def settle(self) -> None:
        settle(self.daemon)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.daemon.stop()
        if self.own_fake:
            self.fake.stop()
        self.store.close()


@pytest.fixture
def cooperative_psycopg():
    """As `fsrouter run` does on PostgreSQL: psycopg2 waits through gevent. Here it also keeps
    one node's writer, waiting on a row lock the other node's open transaction holds, from
    blocking the process that both nodes share (in production each node is its own process)."""
    import psycopg2.extensions
    from psycogreen.gevent import patch_psycopg

    patch_psycopg()
    yield
    psycopg2.extensions.set_wait_callback(None)


@pytest.fixture
def nodes(pg_url, cooperative_psycopg):
    made = []

    def make(fake=None):
        made.append(Node(pg_url, fake))
        return made[-1]

    yield make
    for node in reversed(made):
        node.close()


def learned(store, client=CLIENT):
    return store.bindings_for(client).get(AUTO)


def test_the_later_ended_call_wins_whichever_node_writes_first_and_a_node_routes_alone(nodes, monkeypatch):
    a, b = nodes(), nodes()
    a.only_answers("1001")
    b.only_answers("1002")
    b.pause_writer(monkeypatch)
    first = b.call()  # ends first, answered by 1002 on node B; B keeps it in memory
    second = a.call()  # ends later, answered by 1001 on node A, written at once
    a.settle()
    assert (first.answered_by, second.answered_by) == ("1002", "1001")
    assert (learned(a.store).agent, learned(a.store).call_uuid) == ("1001", second.uuid)
    b.resume_writer(monkeypatch)  # the earlier-ended call arrives last: it must not win
    bound = learned(b.store)
    assert (bound.agent, bound.call_uuid) == ("1001", second.uuid)
    records = a.store.calls(client=CLIENT)
    assert sorted(c.uuid for c in records) == sorted([first.uuid, second.uuid])
    assert [(c["from_agent"], c["to_agent"]) for c in a.store.binding_changes()] == [(None, "1001")]
    # Node A goes away entirely: node B still routes the client to 1001 from the shared database.
    a.close()
    b.fake.agent("1001", answers_after=1, talk=15)
    third = b.call()
    assert third.answered_by == "1001"
    assert (third.variables["fsrouter_route"], third.variables["fsrouter_reason"]) == ("sticky", "auto")


def test_two_daemons_seeing_one_call_record_it_once(nodes):
    a = nodes()
    b = nodes(fake=a.fake)  # a second fsrouter on the same switch's event socket
    a.only_answers("1003")
    handle = a.call()
    a.settle()
    b.settle()
    assert a.daemon.writer.written == b.daemon.writer.written == 1  # both saw it and wrote it
    (record,) = a.store.calls()
    assert (record.uuid, record.agent) == (handle.uuid, "1003")
    assert learned(a.store).agent == "1003"
    assert len(a.store.binding_changes()) == 1


def test_crossing_calls_on_both_nodes_at_once_leave_the_latest_ended_call_bound(nodes, monkeypatch):
    a, b = nodes(), nodes()
    a.only_answers("1001", talk=12)
    b.only_answers("1002", talk=14)
    b.pause_writer(monkeypatch)  # node B's calls are all processed after node A's
    rng = random.Random(4)
    handles = []

    def place(node):
        for _ in range(5):
            gevent.sleep(rng.uniform(0, 0.05))
            handles.append(node.fake.place_call(caller=CLIENT, router=node.daemon.outbound.address))

    gevent.joinall([gevent.spawn(place, a), gevent.spawn(place, b)], raise_error=True)
    assert all(h.wait(15) for h in handles)
    a.settle()
    b.resume_writer(monkeypatch)
    b.settle()
    records = a.store.calls(client=CLIENT)
    assert len(records) == len({c.uuid for c in records}) == 10
    latest = max((c for c in records if c.agent), key=lambda c: (c.ended_at, c.agent, c.uuid))
    bound = learned(a.store)
    assert (bound.agent, bound.call_uuid, bound.at) == (latest.agent, latest.uuid, latest.ended_at)
    # The history is one chain of changes, in the order the calls ended, ending at the binding.
    changes = a.store.binding_changes()
    assert changes[-1]["to_agent"] == bound.agent
    assert all(p["to_agent"] == n["from_agent"] for p, n in itertools.pairwise(changes))
    assert [c["at"] for c in changes] == sorted(c["at"] for c in changes)


@contextmanager
def all_logs():
    """Every line, whatever level an earlier CLI test left structlog filtering at."""
    structlog.reset_defaults()
    with capture_logs() as logs:
        yield logs


def test_each_daemon_counts_and_logs_its_own_event_sequence_gaps(nodes):
    a, b = nodes(), nodes()
    for node in (a, b):
        node.daemon.gap_watch.interval = 3600.0
        node.only_answers("1004")
        node.call()
        node.settle()
    a_gaps, a_warnings = a.daemon.tracker.stats.sequence_gaps, a.daemon.gap_watch.warnings
    b.daemon.gap_watch._quiet_until = None  # not quiet now (the daemon's listener holds this watch)
    b.fake.drop_events(10_000)  # node B's listener reads too slowly: the whole call is lost
    with all_logs() as logs:
        lost = b.call()
        b.fake.bus._drop = 0
        gevent.sleep(0.1)
        b.call()  # the next events arrive, after the gap
        b.settle()
    assert len(b.fake.bus.dropped) > 20
    assert b.daemon.tracker.stats.sequence_gaps >= len(b.fake.bus.dropped)
    warnings = [e for e in logs if e["event"] == "events.sequence_gap"]
    # One warning (rate-limited), at the first event after the gap, counting at least the lost ones.
    assert len(warnings) == 1 and warnings[0]["new_gaps"] >= len(b.fake.bus.dropped)
    assert (a.daemon.tracker.stats.sequence_gaps, a.daemon.gap_watch.warnings) == (a_gaps, a_warnings)
    assert lost.uuid not in {c.uuid for c in b.store.calls()}
    # The repair of docs/operations.md: the lost call from FreeSWITCH's CDR file, via calls import.
    started = datetime.now(UTC)
    cdr = io.StringIO("started_at,direction,client,agent,talk_seconds\n"
                      f'"{started:%Y-%m-%dT%H:%M:%SZ}","inbound","{CLIENT}","1004","15"\n')
    assert b.daemon.service.import_calls_csv(cdr).calls == 1
    assert len(b.store.calls(client=CLIENT)) == 4


def test_the_gap_warning_is_rate_limited_and_carries_the_counts():
    now = [0.0]
    tracker = CallTracker(agents=(), region="UA")
    watch = SequenceGapWatch(tracker.stats, interval=60.0, clock=lambda: now[0])

    def event(seq):
        tracker.feed({"Event-Name": "HEARTBEAT", "Event-Sequence": str(seq)})
        return watch.check()

    with all_logs() as logs:
        assert [event(s) for s in (1, 2, 3)] == [False] * 3  # no gap, no warning
        assert event(10) is True  # 6 numbers skipped
        assert [event(s) for s in (12, 20)] == [False, False]  # within the minute: counted, not logged
        now[0] = 61.0
        assert event(21) is True  # a minute on: the gaps counted meanwhile, in one warning
        now[0] = 200.0
        assert event(22) is False  # no new gap: nothing to say
    # Gaps alone are no loss (every healthy switch shows them): debug, never info or warning.
    assert [(e["new_gaps"], e["total_gaps"], e["log_level"]) for e in logs] == [(6, 6, "debug"),
                                                                               (1 + 7, 14, "debug")]
    assert watch.warnings == 2


def test_the_gap_line_is_a_warning_only_when_events_of_unseen_channels_arrive():
    now = [0.0]
    tracker = CallTracker(agents=(), region="UA")
    watch = SequenceGapWatch(tracker.stats, interval=60.0, clock=lambda: now[0])
    with all_logs() as logs:
        tracker.feed({"Event-Name": "HEARTBEAT", "Event-Sequence": "1"})
        tracker.feed({"Event-Name": "CHANNEL_ANSWER", "Event-Sequence": "9", "Unique-ID": "never-created"})
        assert watch.check() is True
    assert tracker.stats.unknown == 1
    assert [(e["event"], e["log_level"], e["new_unknown_channel_events"]) for e in logs] == [
        ("events.unknown_channels", "warning", 1)]
