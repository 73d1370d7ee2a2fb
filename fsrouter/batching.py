"""Group commit in the background: what the event listener hands over is kept in memory and
written by a greenlet of its own, many items to a transaction.

put() is all the listener's path does (no database there, so reading FreeSWITCH's events never
waits for a commit). The greenlet writes what arrived meanwhile in one transaction, at most
`batch` items, at most `max_delay` seconds after the first of them; an item leaves `pending`
once its transaction committed; a failed write is tried again after a growing pause, and
stop() writes what is left. Beyond `max_pending` the oldest item is dropped (logged). The call
writer (esl/writer.py: finished calls) and the live webhook events (http/outbox.py) are the two.

A writer can carry another (carry()): the rider's items are written in the carrier's
transactions, after the carrier's own, so the daemon's call writer commits the live events
with the calls, one lock and one commit for both (two writers on one SQLite connection were two
commits and two turns at the lock per batch).
"""
from __future__ import annotations

from collections import deque

import gevent
import gevent.event
import structlog

log = structlog.get_logger("fsrouter.batching")


class BatchWriter:
    """Subclasses write a batch (_write_batch: True once committed, after calling _committed)."""

    log = log  # the subclass's own logger
    backlog_full = "batch.backlog_full"  # the log event when max_pending drops an item
    first_retry = 0.1  # seconds after a failed write, doubled at each failure...
    last_retry = 5.0  # ... up to this

    def __init__(self, batch: int, max_delay: float, max_pending: int = 200_000):
        self.batch = batch
        self.max_delay = max_delay
        self.max_pending = max_pending
        self.pending: deque = deque()
        self.written = 0
        self.dropped = 0
        self.failures = 0
        self._wake = gevent.event.Event()
        self._greenlet = None
        self._running = False
        self.rider: BatchWriter | None = None  # written in this writer's transactions (carry)
        self.carried = False  # this writer is a rider: the carrier's loop writes its items

    def put(self, item) -> None:
        if len(self.pending) >= self.max_pending:
            self.pending.popleft()
            self.dropped += 1
            self.log.error(self.backlog_full, dropped=self.dropped)
        self.pending.append(item)
        self._wake.set()

    def carry(self, rider: BatchWriter) -> None:
        """Write `rider`'s items in this writer's transactions (after this writer's own, at most
        rider.batch at a time): its put() wakes this loop, and its own loop is never started;
        its flush() and stop() still write on their own."""
        self.rider = rider
        rider._wake = self._wake
        rider.carried = True

    def start(self) -> None:
        self._running = True
        if not self.carried:
            self._greenlet = gevent.spawn(self._loop)

    def stop(self, timeout: float = 5.0) -> None:
        self._running = False
        self._wake.set()
        if self._greenlet is not None:
            self._greenlet.join(timeout)
            self._greenlet.kill(block=False)
        self.flush(timeout)

    def flush(self, timeout: float = 5.0) -> bool:
        with gevent.Timeout(timeout, False):
            while self.pending and self._write_batch():
                pass
        return not self.pending

    def _loop(self) -> None:
        delay = self.first_retry
        while self._running:
            if not self._backlog():
                self._wake.clear()
                self._wake.wait(1.0)
                continue
            if self._backlog() < self.batch:
                gevent.sleep(self.max_delay)  # let what is handed over now join this commit
            if self._write_batch():
                delay = self.first_retry
                gevent.sleep(0)  # routing goes first between two commits
                self._after_commit()
            else:
                gevent.sleep(delay)
                delay = min(delay * 2, self.last_retry)

    def _backlog(self) -> int:
        return len(self.pending) + (len(self.rider.pending) if self.rider is not None else 0)

    def _write_rider(self) -> list:
        """In this writer's transaction: the rider's oldest items, written (_write_items)."""
        if self.rider is None or not self.rider.pending:
            return []
        items = self.rider._next_batch(self.rider.batch)
        self.rider._write_items(items)
        return items

    def _next_batch(self, size: int) -> list:
        """The oldest `size` items (fewer if fewer wait), left in `pending` until committed."""
        return [self.pending[i] for i in range(min(size, len(self.pending)))]

    def _committed(self, item) -> None:
        """`item` (the oldest of its batch still pending) is in the database: it leaves pending."""
        if self.pending and self.pending[0] is item:  # put() may have dropped it meanwhile
            self.pending.popleft()
        self.written += 1

    def _write_batch(self) -> bool:
        raise NotImplementedError

    def _write_items(self, items: list) -> None:
        """A rider's: `items` written in the caller's transaction."""
        raise NotImplementedError

    def _written(self, items: list) -> None:
        """A rider's: `items` are committed (each leaves pending: _committed)."""
        for item in items:
            self._committed(item)

    def _after_commit(self) -> None:
        """Between two batches, once a batch is written (the call writer checkpoints there)."""
