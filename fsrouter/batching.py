"""Group commit in the background: what the event listener hands over is kept in memory and
written by a greenlet of its own, many items to a transaction.

put() is all the listener's path does (no database there, so reading FreeSWITCH's events never
waits for a commit). The greenlet writes what arrived meanwhile in one transaction, at most
`batch` items, at most `max_delay` seconds after the first of them; an item leaves `pending`
once its transaction committed; a failed write is tried again after a growing pause, and
stop() writes what is left. Beyond `max_pending` the oldest item is dropped (logged). The call
writer (esl/writer.py: finished calls) and the live webhook events (http/outbox.py) are the two.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections import deque

import gevent
import gevent.event
import structlog

log = structlog.get_logger("fsrouter.batching")


class BatchWriter(ABC):
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

    def put(self, item) -> None:
        if len(self.pending) >= self.max_pending:
            self.pending.popleft()
            self.dropped += 1
            self.log.error(self.backlog_full, dropped=self.dropped)
        self.pending.append(item)
        self._wake.set()

    def start(self) -> None:
        self._running = True
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
            if not self.pending:
                self._wake.clear()
                self._wake.wait(1.0)
                continue
            if len(self.pending) < self.batch:
                gevent.sleep(self.max_delay)  # let what is handed over now join this commit
            if self._write_batch():
                delay = self.first_retry
                gevent.sleep(0)  # routing goes first between two commits
                self._after_commit()
            else:
                gevent.sleep(delay)
                delay = min(delay * 2, self.last_retry)

    def _next_batch(self, size: int) -> list:
        """The oldest `size` items (fewer if fewer wait), left in `pending` until committed."""
        return [self.pending[i] for i in range(min(size, len(self.pending)))]

    def _committed(self, item) -> None:
        """`item` (the oldest of its batch still pending) is in the database: it leaves pending."""
        if self.pending and self.pending[0] is item:  # put() may have dropped it meanwhile
            self.pending.popleft()
        self.written += 1

    @abstractmethod
    def _write_batch(self) -> bool:
        """Write the oldest pending items (_next_batch) in one transaction; True once committed."""

    def _after_commit(self) -> None:
        """Between two batches, once a batch is written (the call writer checkpoints there)."""
