"""The listener's loss windows, as they happen: opened when the subscription ends or the daemon
starts after a gap, closed when the listener is subscribed again, kept in the store (one row per
window, core/loss.py), one warning each, counted for /metrics.

The start of a window is the last moment the listener is known to have been subscribed: its
last event for a dropped connection; for a daemon that was stopped or killed, the mark it keeps
in the store every few seconds while subscribed (so a SIGKILL costs at most that much margin,
never a missed call: a call the listener did record is skipped by its uuid).
"""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

import structlog

from ..core.loss import DAEMON_START, DISCONNECT, LossWindow, why_closed

log = structlog.get_logger("fsrouter.listener")

MARK_EVERY = 5.0  # seconds between two marks while subscribed: a killed daemon's window opens this early


class LossWatch:
    def __init__(self, store_call: Callable, node: str, clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 monotonic: Callable[[], float] = time.monotonic):
        self._store_call = store_call  # store_call(fn) runs fn(store) where the store may be used
        self.node = node
        self.clock = clock
        self.monotonic = monotonic
        self.windows = 0  # windows closed since the daemon started (/metrics)
        self.core_uuid = ""  # the switch the listener was last subscribed to
        self._last_event: datetime | None = None
        self._closed: LossWindow | None = None  # closed at the last subscription, its cause not yet checked
        self._marked_at: float | None = None

    def started(self) -> None:
        """The daemon starts: the time since its predecessor's last mark is a window."""
        mark = self._store_call(lambda store: store.listener_mark(self.node))
        if mark is None:
            return  # the first start on this database: nobody was listening before
        at, self.core_uuid = mark
        self._store_call(lambda store: store.start_loss_window(self.node, at, DAEMON_START, "fsrouter was not running"))

    def subscribed(self) -> None:
        now = self.clock()
        window = self._store_call(lambda store: store.close_loss_window(self.node, now))
        self._last_event = now
        self.mark(force=True)
        if window is None:
            return
        self.windows += 1
        self._closed = window
        log.warning("events.loss_window", window=window.id, why=window.why, detail=window.detail,
                    not_subscribed_from=window.opened_at.isoformat(), to=window.closed_at.isoformat(),
                    seconds=round((window.closed_at - window.opened_at).total_seconds(), 3))

    def unsubscribed(self, detail: str) -> None:
        """The subscription ended while the daemon goes on."""
        opened = self._last_event or self.clock()
        self._store_call(lambda store: store.start_loss_window(self.node, opened, DISCONNECT, detail))

    def event(self, headers: Mapping) -> None:
        """Every event: the time of the last one, and the switch that sent it."""
        self._last_event = self.clock()
        core_uuid = headers.get("Core-UUID")
        if isinstance(core_uuid, str) and core_uuid and core_uuid != self.core_uuid:
            closed, self._closed = self._closed, None
            if closed is not None:
                why = why_closed(closed.why, self.core_uuid, core_uuid)
                if why != closed.why:
                    self._store_call(lambda store: store.set_loss_window_why(closed.id, why))
                    log.info("events.loss_window_cause", window=closed.id, why=why,
                             core_uuid_before=self.core_uuid, core_uuid=core_uuid)
            self.core_uuid = core_uuid
            self.mark(force=True)
        else:
            self._closed = None

    def mark(self, force: bool = False) -> None:
        """While subscribed: the listener is known subscribed now (at most every MARK_EVERY)."""
        now = self.monotonic()
        if not force and self._marked_at is not None and now - self._marked_at < MARK_EVERY:
            return
        self._marked_at = now
        at = self.clock()
        self._store_call(lambda store: store.set_listener_mark(self.node, at, self.core_uuid))
