"""The call records' writer: finished calls (from the call tracker) into the store, in group
commits, kept in memory while the database is away."""
from __future__ import annotations

import sqlite3
import time

import gevent
import peewee
import structlog

from ..batching import BatchWriter
from ..service import Service

log = structlog.get_logger("fsrouter.daemon")


def _wal_checkpoint(path: str) -> None:
    """Runs in a thread: copies the WAL into the database file without blocking anyone."""
    conn = sqlite3.connect(path, timeout=5)
    try:
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
    finally:
        conn.close()


class CallWriter(BatchWriter):
    """Writes finished calls through the service, keeping them while the database is away.

    Group commit (batching.BatchWriter): the calls that finished meanwhile are written in one
    transaction (at most `batch` of them, so the loop, which routes calls too, is never held for
    long), at most `max_delay` seconds after the first of them finished. A call leaves `pending`
    only once its transaction committed; stop() writes whatever is left.
    """

    log = log
    backlog_full = "calls.backlog_full"
    first_retry, last_retry = 0.1, 5.0

    def __init__(self, service: Service, db_lock, max_pending: int = 200_000, batch: int = 16,
                 max_delay: float = 0.05, own_connection: bool = False):
        super().__init__(batch, max_delay, max_pending)
        self.service = service
        self.db_lock = db_lock
        self.commits = 0
        self.bindings_changed = 0
        self._failing = False
        # SQLite: a WAL checkpoint (copy into the database file, then fsync) ran inside whichever
        # commit crossed 1,000 pages and held the whole loop for up to 20 ms. On a connection of
        # its own, the writer turns that off and checkpoints from a thread instead (sqlite3 lets
        # the GIL go while it works), at most once a second.
        self._checkpoint_path = None
        self._checkpointed = 0.0
        store = service.store
        if own_connection and store.is_sqlite and store.db.database not in ("", ":memory:"):
            store.db.execute_sql("PRAGMA wal_autocheckpoint=0")
            self._checkpoint_path = store.db.database

    def stop(self, timeout: float) -> None:
        super().stop(timeout)
        self._checkpoint(force=True)

    def _after_commit(self) -> None:
        self._checkpoint()

    def _checkpoint(self, force: bool = False) -> None:
        if self._checkpoint_path is None or (not force and time.monotonic() - self._checkpointed < 1.0):
            return
        self._checkpointed = time.monotonic()
        try:
            gevent.get_hub().threadpool.apply(_wal_checkpoint, (self._checkpoint_path,))
        except Exception as exc:  # the next commit's data is safe in the WAL anyway
            log.warning("calls.checkpoint_failed", error=str(exc)[:200])

    def _write_batch(self) -> bool:
        # After a failure, one call at a time: the calls before one that cannot be written get in.
        size = 1 if self._failing else self.batch
        calls = self._next_batch(size)
        store = self.service.store
        try:
            with self.db_lock, store.transaction():
                learned = []
                for call in calls:
                    learned.append(self.service.record_call(call))
                    gevent.sleep(0)  # a call routed now does not wait for the whole batch
        except Exception as exc:
            self.failures += 1
            self._failing = True
            if isinstance(exc, (peewee.OperationalError, peewee.InterfaceError)) and not store.is_sqlite:
                # As the store does outside a transaction: a dead server connection is dropped so
                # the next attempt opens a fresh one.
                try:
                    store.db.close()
                except peewee.PeeweeException:
                    pass
            log.warning("calls.write_failed", uuid=calls[0].uuid, calls=len(calls), error=str(exc)[:200],
                        pending=len(self.pending))
            return False
        self.commits += 1
        self._failing = False
        for n, (call, binding) in enumerate(zip(calls, learned)):
            if n % 4 == 3:
                gevent.sleep(0)  # a batch's log lines too leave room for the calls being routed
            self._committed(call)
            log.info("call.recorded", uuid=call.uuid, direction=call.direction, client=call.client,
                     agent=call.agent, talk_seconds=call.talk_seconds, outcome=call.outcome)
            if binding is not None:
                self.bindings_changed += 1
                log.info("binding.learned", uuid=call.uuid, client=binding.client, agent=binding.agent,
                         why=binding.why)
        return True
