"""The daemon's sweep of expired bindings: each binding that stopped routing by time is reported
once (history, binding.changed), by whichever daemon on the database gets to it first."""
from __future__ import annotations

import gevent
import structlog

from .service import Service

log = structlog.get_logger("fsrouter.daemon")


class ExpirySweep:
    """Reports, once, each binding that stopped routing by time (Service.report_expired): every
    `every` seconds (a minute: an expiry is news for the CRM, not for the call being routed),
    page by page under the database lock, letting it go between pages so calls are routed
    meanwhile. Idempotent across daemons on one database: the first to report an expiry wins."""

    def __init__(self, service: Service, db_lock, every: float = 60.0):
        self.service = service
        self.db_lock = db_lock
        self.every = every
        self.reported = 0
        self.failures = 0
        self._greenlet = None

    def start(self) -> None:
        self._greenlet = gevent.spawn(self._loop)

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill(block=False)

    def _loop(self) -> None:
        while True:
            gevent.sleep(self.every)
            self.run_once()

    def run_once(self) -> int:
        try:
            with self.db_lock:
                found = self.service.report_expired(pause=self._let_others_in)
        except Exception as exc:  # the database away or locked: the next sweep tries again
            self.failures += 1
            log.warning("bindings.expiry_sweep_failed", error=type(exc).__name__, detail=str(exc)[:200])
            return 0
        self.reported += found
        if found:
            log.info("bindings.expired", reported=found)
        return found

    def _let_others_in(self) -> None:
        self.db_lock.release()
        try:
            gevent.sleep(0)
        finally:
            self.db_lock.acquire()
