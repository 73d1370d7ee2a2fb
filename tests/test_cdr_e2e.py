"""Nothing forgotten while fsrouter was away, end to end: the fake FreeSWITCH ends calls and writes
their CDRs (fakefs/cdr.py) while the daemon's event socket is cut, or while the daemon is not
running at all; once it is back, every binding the rules require is there and no call is
recorded twice (each call is written by exactly one of the listener and the catch-up)."""
from __future__ import annotations

import csv

import gevent
import pytest
from office import AGENTS, hears, settle, wait_until

from fsrouter.config import Config
from fsrouter.core.cdr import call_from_cdr
from fsrouter.core.loss import DAEMON_START, DISCONNECT, FREESWITCH_RESTART
from fsrouter.daemon import Daemon
from fsrouter.fakefs import FakeFreeSWITCH
from fsrouter.store import Store
from fsrouter.wiring import build_daemon

SCALE = 0.005  # 1 s of FreeSWITCH time is 5 ms: the catch-up's 60 s settle passes in 0.3 s


class Site:
    """The store, the fake FreeSWITCH writing CDRs to cdr/, and a daemon reading them. The daemon
    dates windows by FreeSWITCH's time (its events'), which runs 1/SCALE times faster here."""

    def __init__(self, tmp_path):
        self.url = f"sqlite:///{tmp_path}/site.db"
        self.store = Store.open(self.url)
        self.store.add_group("sales")
        for ext in AGENTS:
            self.store.add_agent(ext, f"Agent {ext}", dial_string=f"user/{ext}@127.0.0.1", groups=["sales"])
        self.cdr_dir = tmp_path / "cdr"
        self.fake = FakeFreeSWITCH(time_scale=SCALE, cdr_dir=self.cdr_dir).start()
        self.config = Config(database=self.url, esl_port=self.fake.esl_address[1], listen_port=0,
                             drain_timeout=2.0, cdr_dir=str(self.cdr_dir), node="site")
        self.daemons: list[Daemon] = []
        self.daemon: Daemon | None = None
        self.start()

    def start(self) -> None:
        daemon = build_daemon(self.config, one_connection=True, cache_ttl=0.0)
        daemon.start()
        self.daemon = daemon
        self.daemons.append(daemon)
        assert daemon.listener.connected.wait(5), "the listener never connected"

    def stop(self) -> None:
        self.daemon.stop()
        self.daemon = None

    def only_answers(self, ext: str, talk: float = 15) -> None:
        for other in AGENTS:
            self.fake.agent(other, answers_after=1, talk=talk) if other == ext else self.fake.agent(
                other, never_answers=True)

    def client_calls(self, caller: str, router=None):
        # With the daemon down, FreeSWITCH's `socket` finds nobody at the router's address.
        handle = self.fake.place_call(caller=caller, router=router or self.daemon.outbound.address)
        assert handle.wait(15), "the call never ended"
        self.settle()
        return handle

    def agent_calls(self, ext: str, client: str, answered: bool):
        handle = self.fake.agent_calls_out(ext, client, answered=answered, talk=12)
        assert handle.wait(15), "the agent's call never ended"
        self.settle()
        return handle

    def settle(self) -> None:
        """While the daemon listens: until what the fake sent is heard and written."""
        if self.daemon is not None and self.daemon.listener.connected.is_set():
            assert hears(self.daemon, self.fake) and settle(self.daemon)

    def catch_up(self) -> int:
        """Past the settle time, one pass of the catch-up (the daemon's own loop runs every 5 s)."""
        self.fake.clock.sleep(self.daemon.catchup.settle.total_seconds() + 1)
        self.settle()  # the daemon's FreeSWITCH time (its last event's) moves on past the settle time
        return self.daemon.catchup.poll()

    def binding(self, client: str):
        b = self.store.bindings_for(client).get("auto")
        return b.agent if b else None

    def written_once(self) -> bool:
        """Every call the fake wrote a CDR of is in the store once, written by exactly one path."""
        cdr_uuids = [next(csv.reader([line.decode()]))[5] for _, line in self.fake.bus.cdr.lines]
        stored = {c.uuid for c in self.store.calls()}
        by_listener = sum(d.writer.written for d in self.daemons)
        by_catchup = sum(d.catchup.stats.recovered for d in self.daemons)
        return (len(set(cdr_uuids)) == len(cdr_uuids) and set(cdr_uuids) <= stored
                and by_listener + by_catchup == len(stored))

    def close(self) -> None:
        if self.daemon is not None:
            self.daemon.stop()
        self.fake.stop()
        self.store.close()


@pytest.fixture
def site(tmp_path):
    site = Site(tmp_path)
    yield site
    site.close()


def test_the_fake_writes_cdr_lines_shaped_like_freeswitchs(site):
    site.only_answers("1002", talk=12)
    site.client_calls("+380671112233")
    site.agent_calls("1004", "+380672223344", answered=False)
    lines = site.fake.bus.cdr.lines
    assert [name for name, _ in lines] == ["fsrouter_in.csv", "fsrouter_out.csv"]
    for name, line in lines:
        # As pass 2's lines: quoted cells, a comma between, "\n" at the end, ISO start, digits.
        assert line.startswith(b'"') and line.endswith(b'"\n') and b'","' in line
        cells = next(csv.reader([line.decode()]))
        assert len(cells) == 12 and cells[0].endswith("Z") and cells[6].isdigit() and cells[8].isdigit()
    inbound = call_from_cdr(next(csv.reader([lines[0][1].decode()])), AGENTS, "UA")
    assert (inbound.agent, inbound.talk_seconds, inbound.group) == ("1002", 12.0, "sales")
    # The listener made the same call of the same call's events.
    recorded = {c.uuid: c for c in site.store.calls()}[inbound.uuid]
    assert (recorded.agent, recorded.ended_at, recorded.started_at) == (inbound.agent, inbound.ended_at,
                                                                         inbound.started_at)


def test_calls_that_ended_while_the_event_socket_was_cut_are_recovered_once(site):
    site.only_answers("1001", talk=15)
    site.client_calls("+380671110001")  # seen live
    site.fake.inbound.stop()  # the event socket goes away (a reload, a dropped slow listener)
    assert wait_until(lambda: not site.daemon.listener.connected.is_set(), 10)
    site.only_answers("1003", talk=15)
    site.client_calls("+380671110002")  # routed (the outbound socket is up), never heard
    site.agent_calls("1004", "+380672220001", answered=True)
    site.agent_calls("1002", "+380672220002", answered=False)
    site.fake.inbound.start()
    assert site.daemon.listener.connected.wait(10), "no reconnect"
    assert hears(site.daemon, site.fake)
    assert site.catch_up() == 3
    assert {c: site.binding(c) for c in ("+380671110001", "+380671110002", "+380672220001", "+380672220002")} == {
        "+380671110001": "1001", "+380671110002": "1003", "+380672220001": "1004", "+380672220002": "1002"}
    assert site.written_once()
    [window] = site.store.loss_windows("site")[-1:]
    assert (window.why, window.recovered, window.learned, window.closed_at is not None) == (DISCONNECT, 3, 3, True)
    assert site.catch_up() == 0  # nothing twice


def test_a_call_the_cut_went_through_is_recorded_whole_from_its_cdr(site):
    # 1003 answers and talks 200 s (1 s of wall time); the event socket is cut meanwhile, so the
    # listener misses part of the call's events: the catch-up records it, from its CDR, once.
    site.only_answers("1003", talk=200)
    handle = site.fake.place_call(caller="+380671130001", router=site.daemon.outbound.address)
    assert wait_until(lambda: site.fake.events("CHANNEL_BRIDGE", uuid=handle.uuid), 10)  # talking now
    site.fake.inbound.stop()
    assert wait_until(lambda: not site.daemon.listener.connected.is_set(), 10)
    gevent.sleep(0.2)
    site.fake.inbound.start()
    assert site.daemon.listener.connected.wait(10)
    assert handle.wait(15)
    # The listener stopped following it at the reconnect: the pages no longer show it in progress.
    assert wait_until(lambda: not list(site.daemon.hub.calls()), 5)
    assert site.catch_up() == 1
    [record] = [c for c in site.store.calls() if c.uuid == handle.uuid]
    assert (record.agent, record.talk_seconds >= 199, record.answered) == ("1003", True, True)
    assert site.binding("+380671130001") == "1003"
    assert site.written_once()


def test_calls_that_ended_while_the_daemon_was_stopped_are_recovered_once(site):
    site.agent_calls("1001", "+380672230001", answered=True)  # seen live
    site.stop()
    # fsrouter is down: agents still call out; a client's call finds no router (the dialplan's own
    # fallback) and is recorded as the missed call it is.
    site.agent_calls("1002", "+380672230001", answered=True)
    site.agent_calls("1003", "+380672230002", answered=False)
    site.client_calls("+380671120001", router=("127.0.0.1", 9))
    site.start()
    assert hears(site.daemon, site.fake)
    assert site.catch_up() == 3
    # The later-ended call wins: 1002's, recovered, over 1001's, recorded live.
    assert (site.binding("+380672230001"), site.binding("+380672230002")) == ("1002", "1003")
    missed = [c for c in site.store.calls() if c.client == "+380671120001"]
    assert [(c.outcome, c.agent) for c in missed] == [("missed", None)]
    assert site.written_once()
    window = site.store.loss_windows("site")[-1]
    assert (window.why, window.recovered) == (DAEMON_START, 3)


def test_a_freeswitch_restart_is_named_as_such(site):
    # The listener knows its switch by the Core-UUID of the events (a HEARTBEAT every 20 s).
    assert hears(site.daemon, site.fake)
    site.fake.restart(down_for=0.3)
    assert wait_until(lambda: not site.daemon.listener.connected.is_set(), 10)
    assert site.daemon.listener.connected.wait(10)
    assert hears(site.daemon, site.fake)
    assert wait_until(lambda: site.store.loss_windows("site")[-1].why == FREESWITCH_RESTART, 5)
    assert site.daemon.loss.windows == 1
