"""The listener's loss windows, as they happen: opened when the subscription ends or the daemon
starts after a gap, closed at the first event once the listener is subscribed again, kept in the
store (one row per window, core/loss.py), one warning each, counted for /metrics.

Every time here is FreeSWITCH's: the Event-Date-Timestamp of the events, moved on by the wall
clock between two of them (now()). The CDR times the catch-up compares a window with are
FreeSWITCH's too, so the two agree even when fsrouter runs on another host with a clock of its
own. A window opens at the last event received (for a daemon that was stopped or killed, at the
mark it keeps in the store every few seconds while subscribed: a SIGKILL costs at most that much
margin, never a missed call, since a call the listener did record is skipped by its uuid), and
closes at the first event after the new subscription: HEARTBEAT comes every 20 s on a quiet
switch, and that first event also names the switch (Core-UUID), so the window knows whether
FreeSWITCH itself restarted.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta

import structlog

from ..core.loss import DAEMON_START, DISCONNECT, why_closed

log = structlog.get_logger("fsrouter.listener")

MARK_EVERY = 5.0  # seconds between two marks while subscribed: a killed daemon's window opens this early
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_DIGITS = 17


def _event_us(headers: Mapping) -> int | None:
    """The event's Event-Date-Timestamp (microseconds since the epoch), or None."""
    text = headers.get("Event-Date-Timestamp")
    if not (isinstance(text, str) and text.isascii() and text.isdigit()) or len(text) > _MAX_DIGITS or text == "0":
        return None
    return int(text)


class LossWatch:
    def __init__(self, store_call: Callable, node: str, wall: Callable[[], datetime] = lambda: datetime.now(UTC),
                 monotonic: Callable[[], float] = time.monotonic, unwritten: Callable[[], Iterable] = tuple):
        self._store_call = store_call  # store_call(fn) runs fn(store) where the store may be used
        self.node = node
        # Calls the listener finished that are not in the store yet (the writer's queue): a mark
        # never passes their end, or a SIGKILL would lose them outside any window.
        self.unwritten = unwritten
        self.wall = wall
        self.monotonic = monotonic
        self.windows = 0  # windows closed since the daemon started (/metrics)
        self.core_uuid = ""  # the switch the listener was last subscribed to
        # FreeSWITCH's time as the last event that carried one told it (microseconds), and
        # monotonic() then; the datetimes are made when asked for, not at each of the switch's
        # events (making them per event was 2% of the daemon's samples in an ingestion blast).
        self._fs: tuple[int, float] | None = None
        self._seen: float | None = None  # monotonic() at the last event
        self._wall_seen: datetime | None = None  # the wall clock then, while no event had a time
        self._closing = False  # subscribed again: the next event closes the open window
        self._marked_at: float | None = None

    def now(self) -> datetime:
        """FreeSWITCH's time now: the last event's, plus the wall time since (before any event,
        the wall clock)."""
        return self._fs_time_at(self.monotonic()) if self._fs is not None else self.wall()

    def _fs_time_at(self, monotonic: float) -> datetime:
        us, seen = self._fs
        return _EPOCH + timedelta(microseconds=us, seconds=max(0.0, monotonic - seen))

    @property
    def _last_event(self) -> datetime | None:
        """FreeSWITCH's time at the last event received (now() as it was then)."""
        if self._seen is None:
            return None
        return self._fs_time_at(self._seen) if self._fs is not None else self._wall_seen

    def started(self) -> None:
        """The daemon starts: the time since its predecessor's last mark is a window."""
        mark = self._store_call(lambda store: store.listener_mark(self.node))
        if mark is None:
            return  # the first start on this database: nobody was listening before
        at, self.core_uuid = mark
        self._store_call(lambda store: store.start_loss_window(self.node, at, DAEMON_START, "fsrouter was not running"))

    def subscribed(self) -> None:
        self._closing = True

    def unsubscribed(self, detail: str) -> None:
        """The subscription ended while the daemon goes on."""
        self._closing = False
        opened = self._last_event or self.now()
        self._store_call(lambda store: store.start_loss_window(self.node, opened, DISCONNECT, detail))

    def event(self, headers: Mapping) -> None:
        """Every event: FreeSWITCH's time, and after a new subscription the end of the window."""
        us, self._seen = _event_us(headers), self.monotonic()
        if us is not None:
            self._fs = (us, self._seen)
        elif self._fs is None:
            self._wall_seen = self.wall()
        core_uuid = headers.get("Core-UUID")
        core_uuid = core_uuid if isinstance(core_uuid, str) else ""
        if self._closing:
            self._closing = False
            self._close(core_uuid)
        if core_uuid and core_uuid != self.core_uuid:
            self.core_uuid = core_uuid
            self.mark(force=True)

    def _close(self, core_uuid: str) -> None:
        closed_at = self._last_event
        window = self._store_call(lambda store: store.close_loss_window(self.node, closed_at))
        self.mark(force=True)
        if window is None:
            return
        why = why_closed(window.why, self.core_uuid, core_uuid)
        if why != window.why:
            self._store_call(lambda store: store.set_loss_window_why(window.id, why))
        self.windows += 1
        log.warning("events.loss_window", window=window.id, why=why, detail=window.detail,
                    not_subscribed_from=window.opened_at.isoformat(), to=window.closed_at.isoformat(),
                    seconds=round((window.closed_at - window.opened_at).total_seconds(), 3))

    def mark(self, force: bool = False) -> None:
        """While subscribed: the listener is known subscribed, and every call that ended before
        is in the store, up to now (at most every MARK_EVERY)."""
        now = self.monotonic()
        if not force and self._marked_at is not None and now - self._marked_at < MARK_EVERY:
            return
        # Up to the last event read, not now: events still waiting in the socket's buffer (a loaded
        # host) are not in the store either (a 300 s soak lost two calls that ended 3 s before a
        # mark taken at now()).
        if self._fs is None:
            return
        self._marked_at = now
        at = min([self._fs_time_at(self._fs[1]), *(call.ended_at for call in list(self.unwritten()))])
        self._store_call(lambda store: store.set_listener_mark(self.node, at, self.core_uuid))


class SafeLossWatch(LossWatch):
    """The daemon's LossWatch: a step that fails (the database away) is one warning line, never
    an exception into the listener's events or the daemon's start and stop."""

    def _safely(self, step: Callable, *args) -> None:
        try:
            step(*args)
        except Exception as exc:
            log.warning("events.loss_window_not_saved", step=step.__name__, error=str(exc)[:200])

    def started(self) -> None:
        self._safely(super().started)

    def unsubscribed(self, detail: str) -> None:
        self._safely(super().unsubscribed, detail)

    def event(self, headers: Mapping) -> None:
        self._safely(super().event, headers)

    def mark(self, force: bool = False) -> None:
        self._safely(super().mark, force)
