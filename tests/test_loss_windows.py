"""Loss windows (core/loss.py, esl/loss.py): when the listener was not subscribed, why, one warning
each; which calls a window touches."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import structlog
from structlog.testing import capture_logs

from fsrouter.core.loss import DAEMON_START, DISCONNECT, FREESWITCH_RESTART, LossWindow, touches, window_of
from fsrouter.core.model import OUTBOUND, Call
from fsrouter.esl.loss import MARK_EVERY, LossWatch
from fsrouter.store import Store

T0 = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)


class Clock:
    def __init__(self):
        self.at, self.mono = T0, 0.0

    def advance(self, seconds: float) -> None:
        self.at += timedelta(seconds=seconds)
        self.mono += seconds


def watch(store, clock):
    return LossWatch(lambda fn: fn(store), "n1", wall=lambda: clock.at, monotonic=lambda: clock.mono)


def event(w, clock, core="core-1"):
    """An event FreeSWITCH sends now (its Event-Date-Timestamp in microseconds)."""
    us = (clock.at - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
    w.event({"Event-Name": "HEARTBEAT", "Core-UUID": core, "Event-Date-Timestamp": str(us)})


def call(start_s: float, end_s: float) -> Call:
    return Call(direction=OUTBOUND, client="+380672223344", agent="1004", started_at=T0 + timedelta(seconds=start_s),
                ended_at=T0 + timedelta(seconds=end_s), uuid=f"u{start_s}-{end_s}")


def test_a_window_touches_calls_that_ended_started_or_ran_through_it():
    w = LossWindow(1, "n1", T0 + timedelta(seconds=100), T0 + timedelta(seconds=200), DISCONNECT)
    assert [touches(w, call(*c)) for c in [(10, 50), (10, 150), (120, 150), (150, 300), (10, 300), (250, 300)]] == [
        False, True, True, True, True, False]
    # The edges are widened by 2 s (two clocks); an open window takes everything since it opened.
    assert touches(w, call(10, 98.5)) and touches(w, call(201.5, 300))
    assert touches(LossWindow(2, "n1", T0, None, DISCONNECT), call(10_000, 10_001))
    assert window_of(call(10, 50), [w]) is None


def test_a_killed_daemons_window_opens_at_its_last_mark_and_warns_once(tmp_path):
    store, clock = Store.open(f"sqlite:///{tmp_path}/w.db"), Clock()
    first = watch(store, clock)
    first.started()  # the first start on this database: no window
    first.subscribed()
    event(first, clock)
    for _ in range(12):  # 60 s subscribed, an event and a mark every MARK_EVERY
        clock.advance(5)
        event(first, clock)
        first.mark()
    last_mark = clock.at
    clock.advance(MARK_EVERY - 0.1)  # SIGKILL just before the next mark, then 30 s away
    clock.advance(30)
    second = watch(store, clock)
    structlog.reset_defaults()
    with capture_logs() as logs:
        second.started()
        second.subscribed()
        event(second, clock)  # the first event after subscribing closes the window
        event(second, clock)
    [window] = store.loss_windows("n1")
    assert (window.why, window.opened_at, window.closed_at) == (DAEMON_START, last_mark, clock.at)
    assert [e["event"] for e in logs if e["log_level"] == "warning"] == ["events.loss_window"]
    assert second.windows == 1


def test_a_dropped_connection_opens_from_the_last_event_and_a_new_core_uuid_names_a_restart(tmp_path):
    store, clock = Store.open(f"sqlite:///{tmp_path}/w.db"), Clock()
    w = watch(store, clock)
    w.started()
    w.subscribed()
    event(w, clock)
    clock.advance(3)
    event(w, clock)
    last_event = clock.at
    clock.advance(7)
    w.unsubscribed("connection closed")
    clock.advance(10)
    w.subscribed()
    event(w, clock, core="core-2")  # another switch answered
    [window] = store.loss_windows("n1")
    assert (window.opened_at, window.closed_at, window.why, window.detail) == (
        last_event, clock.at, FREESWITCH_RESTART, "connection closed")
    # A second drop from the same (new) switch is a plain disconnect.
    w.unsubscribed("stream broken")
    w.subscribed()
    event(w, clock, core="core-2")
    assert [x.why for x in store.loss_windows("n1")] == [FREESWITCH_RESTART, DISCONNECT]


def test_a_daemon_that_dies_while_not_subscribed_keeps_its_window_open(tmp_path):
    store, clock = Store.open(f"sqlite:///{tmp_path}/w.db"), Clock()
    w = watch(store, clock)
    w.started()
    w.subscribed()
    event(w, clock)
    w.unsubscribed("connection closed")
    clock.advance(60)
    again = watch(store, clock)
    again.started()  # the open window goes on from its own start
    again.subscribed()
    event(again, clock)
    [window] = store.loss_windows("n1")
    assert (window.why, window.opened_at, window.closed_at) == (DISCONNECT, T0, T0 + timedelta(seconds=60))


def test_windows_are_dated_by_freeswitchs_clock_not_fsrouters(tmp_path):
    # fsrouter's host clock is 10 minutes behind FreeSWITCH's: the window is in FreeSWITCH's time,
    # the time of the CDRs it is compared with.
    store, clock = Store.open(f"sqlite:///{tmp_path}/w.db"), Clock()
    w = watch(store, clock)
    w.started()
    w.subscribed()
    fs = Clock()
    fs.at = clock.at + timedelta(minutes=10)
    event(w, fs)
    clock.advance(2)
    fs.advance(2)
    assert w.now() == fs.at
    w.unsubscribed("connection closed")
    [window] = store.loss_windows("n1")
    assert window.opened_at == fs.at - timedelta(seconds=2)  # the last event's time


def test_a_mark_never_passes_a_call_the_writer_has_not_written(tmp_path):
    # The database was away: the listener's writer still holds a call that ended at T0+10 s.
    # A SIGKILL now must leave a window that takes it (the catch-up recovers it from its CDR).
    store, clock = Store.open(f"sqlite:///{tmp_path}/w.db"), Clock()
    waiting = [call(5, 10)]
    w = LossWatch(lambda fn: fn(store), "n1", wall=lambda: clock.at, monotonic=lambda: clock.mono,
                  unwritten=lambda: waiting)
    w.subscribed()
    event(w, clock)
    clock.advance(60)
    event(w, clock)
    w.mark(force=True)
    assert store.listener_mark("n1")[0] == T0 + timedelta(seconds=10)
    waiting.clear()
    w.mark(force=True)
    assert store.listener_mark("n1")[0] == clock.at


def test_a_mark_goes_no_further_than_the_last_event_read(tmp_path):
    # Events may wait unread in the socket's buffer: the calls they end are not in the store.
    store, clock = Store.open(f"sqlite:///{tmp_path}/w.db"), Clock()
    w = watch(store, clock)
    w.subscribed()
    w.mark(force=True)  # no event read yet: no mark
    assert store.listener_mark("n1") is None
    event(w, clock)
    read = clock.at
    clock.advance(4)
    w.mark(force=True)
    assert store.listener_mark("n1")[0] == read


def test_the_daemons_loss_watch_writes_on_the_call_writers_connection_under_its_lock(tmp_path):
    """Not on the routing connection: there SQLite's one writer made the mark meet "database is
    locked" behind the writer's commits, and wait out the busy timeout with every greenlet held."""
    from fsrouter.config import Config
    from fsrouter.wiring import build_daemon

    daemon = build_daemon(Config(database=f"sqlite:///{tmp_path / 'l.db'}", esl_port=1, listen_port=0))
    try:
        lock = daemon.writer.db_lock
        seen = daemon.loss._store_call(lambda store: (store, lock._is_owned()))
        assert seen == (daemon.writer.service.store, True)
        assert daemon.writer.service.store is not daemon.service.store
    finally:
        daemon.writer.service.store.close()
        daemon.service.store.close()
