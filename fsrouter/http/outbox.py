"""The durable outbox: webhook events waiting in the database, and the greenlets that write the
live call events into it and send them.

The store writes an event (one row per webhook URL) in the same transaction as the change it
reports (Store._notify), so an event exists exactly when its change does; the call events are the
listener's live transitions, written by LiveEvents as they happen. The Sender posts each
row in the background, never in a call's way: a row is claimed by moving its next_at forward
(compare-and-swap, so two daemons on one PostgreSQL never send a row at the same time), posted
with its signature, then marked sent, or given another try after an exponential backoff (with
jitter, capped), or marked dead after `max_attempts`. Rows survive a restart and an outage of the
receiver; `fsrouter outbox list|retry|purge` shows and manages them. A call's events are sent in
the order they were written: a row is due only with every earlier pending row of its call for the
same URL (none in flight elsewhere, none backing off), and a call's rows due together are posted
one after the other by one greenlet (a chain); other events carry their id and time, in no set
order. Chains go out side by side, over connections kept open per URL (client.KeepAlive).
"""
from __future__ import annotations

import random
import time
from collections import OrderedDict
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import gevent
import gevent.event
import gevent.pool
import structlog

from ..batching import BatchWriter
from ..core import live, webhooks
from . import client as http_client

log = structlog.get_logger("fsrouter.http.outbox")

PENDING, SENT, DEAD = "pending", "sent", "dead"
COALESCE = 0.01  # seconds the sender lets wake-ups gather before a round (see Sender._loop)
# While a burst of FreeSWITCH's events waits unread (Sender's `behind`, for BURST_AFTER seconds
# on end), the sender waits too, YIELD_AT_MOST seconds at most in a row: the events are in a
# socket buffer and then in FreeSWITCH's queue for this listener, which drops what overflows it;
# the webhooks are in the database and lose nothing by waiting. A burst (a reconnect's backlog,
# the bench's ingestion blast) is read first; a reader behind for a moment is no burst. Measured
# at 100 calls/s (bench "live"): waiting whenever the reader was behind made webhooks 7 s late;
# after 50 ms behind, the rows' outbox-to-receiver time spiked to 0.5-0.85 s; a reader 0.5 s
# behind has missed the 1 s target already, so waiting then costs the target nothing more.
BURST_AFTER = 0.5
YIELD_AT_MOST = 1.0
# A reader in a burst drains its socket for a moment now and then: in the bench's blast, one look
# in twenty found 2-6 KB unread between looks of 70-390 KB. Once the sender waits for a burst, the
# listener is taken as caught up only when it is not behind at CAUGHT_UP_LOOKS looks, COALESCE
# apart; with one look deciding, the sender left its wait at the first such moment and posted
# through a third of the blast (8,044 of 22,500 events, 12% of the daemon's samples, py-spy).
# Not before the wait: asking for three looks there too took every moment behind at 100 calls/s
# for a burst (webhook delay p50 0.2 -> 0.5 s, bench "live").
CAUGHT_UP_LOOKS = 3
STATES = (PENDING, SENT, DEAD)


@dataclass(frozen=True)
class Entry:
    id: int
    event_id: str
    event_type: str
    target: str
    state: str
    attempts: int
    created_at: datetime
    next_at: datetime
    last_error: str
    sent_at: datetime | None
    body: str
    in_order: str | None = None  # the call whose events go out in order (None: any order)

    def as_dict(self) -> dict:
        return {"id": self.id, "event_id": self.event_id, "type": self.event_type, "url": self.target,
                "state": self.state, "attempts": self.attempts, "created_at": webhooks.iso(self.created_at),
                "next_at": webhooks.iso(self.next_at), "last_error": self.last_error,
                "sent_at": webhooks.iso(self.sent_at)}


def _entry(row) -> Entry:
    return Entry(row.id, row.event_id, row.event_type, row.target, row.state, row.attempts, row.created_at,
                 row.next_at, row.last_error or "", row.sent_at, row.body, row.in_order)


def chains(entries: list[Entry], most: int) -> list[list[Entry]]:
    """Due rows (Outbox.due's, oldest first) as chains to post, at most `most` of them: the rows
    of one call for one URL, in the order written, posted one after the other; any other row a
    chain of its own."""
    found: dict[tuple, list[Entry]] = {}
    for entry in entries:
        key = (entry.in_order, entry.target) if entry.in_order is not None else (entry.id,)
        chain = found.get(key)
        if chain is not None:
            chain.append(entry)
        elif len(found) < most:
            found[key] = [entry]
    return list(found.values())


class Outbox:
    """The outbox table's queries (the rows are written by Store._notify)."""

    def __init__(self, store):
        self.store = store
        self.table = store.m.Outbox
        # The sender's queries run for every batch of deliveries: written once, as SQL (building
        # them with peewee cost more than running them).
        q, table = store.db.param, f'"{self.table._meta.table_name}"'
        self._columns = ("id", "event_id", "event_type", "target", "state", "attempts", "created_at", "next_at",
                         "last_error", "sent_at", "body", "in_order")
        # Pending rows are walked in id order on the (state, id) index, up to the LIMIT. next_at
        # is compared through COALESCE so that no index on it is taken instead: SQLite, without
        # statistics, took (state, next_at) (dropped since by migration 8) and sorted every due
        # row (EXPLAIN QUERY PLAN: "USE TEMP B-TREE FOR ORDER BY"; due() was 18% of the
        # daemon's CPU with a backlog). tests/test_webhooks.py checks the plan.
        self._due_sql = (
            f'SELECT {", ".join(f"o.{c}" for c in self._columns)} FROM {table} o '
            f"WHERE o.state = {q} AND COALESCE(o.next_at, o.next_at) <= {q} AND (o.in_order IS NULL OR NOT EXISTS ("
            f"SELECT 1 FROM {table} e WHERE e.in_order = o.in_order AND e.target = o.target "
            f"AND e.state = {q} AND e.next_at > {q} AND e.id < o.id)) ORDER BY o.id LIMIT {q}")
        self._table_sql = table

    def count(self, state: str = PENDING) -> int:
        return self.table.select().where(self.table.state == state).count()

    def entries(self, states=(PENDING, DEAD), limit: int | None = 100) -> list[Entry]:
        t = self.table
        query = t.select().where(t.state.in_(list(states))).order_by(t.id)
        if limit:
            query = query.limit(limit)
        return [_entry(row) for row in query]

    def due(self, now: datetime, limit: int) -> list[Entry]:
        """Pending rows whose time has come, oldest first, but no call event while an earlier one
        of its call (for the same URL) is pending and not due (claimed, or backing off): that
        earlier one is in the same answer, before it, so a call's events go out in the order
        written (see chains())."""
        t = self.table
        to_db, to_time = t.next_at.db_value, t.next_at.python_value
        rows = self.store.db.execute_sql(self._due_sql, (PENDING, to_db(now), PENDING, to_db(now), limit)).fetchall()
        return [Entry(i, event_id, kind, target, state, attempts, to_time(created), to_time(next_at), error or "",
                      to_time(sent), body, in_order)
                for i, event_id, kind, target, state, attempts, created, next_at, error, sent, body, in_order in rows]

    def claim(self, entry: Entry, until: datetime) -> bool:
        """Take the row for one delivery attempt, unless someone else did since it was read."""
        t = self.table
        return t.update(next_at=until).where(t.id == entry.id, t.state == PENDING,
                                             t.next_at == entry.next_at).execute() == 1

    def claim_many(self, entries: list[Entry], now: datetime, until: datetime) -> list[Entry]:
        """claim() for a batch, in two statements: take those still due (not claimed meanwhile:
        a claim moves next_at past now), then read back which carry this claim's `until`."""
        if not entries:
            return []
        ids, db, q, to_db = [entry.id for entry in entries], self.store.db, self.store.db.param, self.table.next_at.db_value
        marks = ", ".join([q] * len(ids))
        db.execute_sql(f"UPDATE {self._table_sql} SET next_at = {q} WHERE state = {q} AND next_at <= {q} "
                       f"AND id IN ({marks})", (to_db(until), PENDING, to_db(now), *ids))
        mine = {i for (i,) in db.execute_sql(f"SELECT id FROM {self._table_sql} WHERE next_at = {q} AND id IN ({marks})",
                                             (to_db(until), *ids)).fetchall()}
        return [entry for entry in entries if entry.id in mine]

    def release(self, entry: Entry, until: datetime, now: datetime) -> bool:
        """Give back a claim (`until`) whose delivery was cut off: the row is due again now."""
        t = self.table
        return t.update(next_at=now).where(t.id == entry.id, t.state == PENDING, t.next_at == until).execute() == 1

    def delivered(self, entry: Entry, now: datetime) -> None:
        t = self.table
        t.update(state=SENT, sent_at=now, attempts=entry.attempts + 1, last_error="").where(t.id == entry.id).execute()

    def delivered_many(self, entries: list[Entry], now: datetime) -> None:
        q = self.store.db.param
        self.store.db.execute_sql(
            f"UPDATE {self._table_sql} SET state = {q}, sent_at = {q}, attempts = attempts + 1, last_error = '' "
            f"WHERE id IN ({', '.join([q] * len(entries))})",
            (SENT, self.table.sent_at.db_value(now), *(entry.id for entry in entries)))

    def failed(self, entry: Entry, error: str, next_at: datetime, dead: bool) -> None:
        t = self.table
        t.update(state=DEAD if dead else PENDING, attempts=entry.attempts + 1, last_error=error[:500],
                 next_at=next_at).where(t.id == entry.id).execute()

    def retry(self, ids=None, now: datetime | None = None) -> int:
        """Pending and dead rows (those of `ids`) are tried again now, dead ones from attempt 0."""
        t = self.table
        now = now or datetime.now(UTC)
        with self.store.transaction():
            where = [t.state.in_([PENDING, DEAD])]
            if ids:
                where.append(t.id.in_(list(ids)))
            t.update(state=PENDING, attempts=0).where(*where, t.state == DEAD).execute()
            return t.update(next_at=now).where(*where, t.state == PENDING).execute()

    def purge(self, states=(SENT,), older_than: timedelta | None = None, now: datetime | None = None) -> int:
        t = self.table
        query = t.delete().where(t.state.in_(list(states)))
        if older_than is not None:
            query = query.where(t.created_at < (now or datetime.now(UTC)) - older_than)
        return query.execute()


class Sender:
    """Posts due outbox rows in the background; see the module doc.

    Each round claims the rows of at most `concurrency` chains (as many as greenlets are free)
    and posts each chain from a greenlet of its own. At 100 calls/s, four greenlets taking four
    rows a round, each POST on a new connection, sent 200 events/s against the 500/s written: the
    delay grew to 27 s (p50) in 15 s of calls (bench/README.md, "Live call events").
    """

    def __init__(self, outbox: Outbox, secret: str, lock=None, timeout: float = 5.0, poll: float = 1.0,
                 base_delay: float = 1.0, max_delay: float = 600.0, max_attempts: int = 50,
                 concurrency: int = 16, keep_sent: timedelta = timedelta(days=7),
                 on_result: Callable[[str], None] | None = None, jitter: bool = True,
                 wake: gevent.event.Event | None = None, connections: http_client.KeepAlive | None = None,
                 claim_rows: int = 256, behind: Callable[[], bool] | None = None):
        self.outbox = outbox
        self.secret = secret
        self.lock = lock if lock is not None else nullcontext()
        self.timeout = timeout
        self.poll = poll
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.max_attempts = max_attempts
        self.keep_sent = keep_sent
        self.on_result = on_result
        self.jitter = jitter
        self.pool = gevent.pool.Pool(max(1, concurrency))
        self.connections = connections if connections is not None else http_client.KeepAlive(max_idle=max(1, concurrency))
        self.claim_rows = claim_rows  # rows read per round at most (the chains of as many calls)
        self.behind = behind  # True while the event listener has events waiting unread
        self.yielded = 0  # looks at the event stream while putting rounds off for it
        self._behind_since: float | None = None  # the first look that found the listener behind
        self.pending = 0  # rows waiting, as last counted
        self.sent = 0
        self.failures = 0
        # Set by whoever wrote events (the stores' on_event, made before this sender): send now.
        self._wake = wake if wake is not None else gevent.event.Event()
        self._greenlet = None
        self._running = False
        self._in_flight: dict[int, tuple[Entry, datetime]] = {}  # id -> (row, claimed until)
        # Delivered rows not marked sent yet: marked together by the next run_once (one UPDATE
        # for many rows: a commit per row held up everything else on SQLite).
        self._delivered: list[Entry] = []
        self._counted_at = 0.0
        self._pruned_at = 0.0

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._running = True
        self._greenlet = gevent.spawn(self._loop)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop taking rows; deliveries under way get `timeout` to finish; an unfinished one gives
        its claim back and is tried again at the next start."""
        self._running = False
        self._wake.set()
        if self._greenlet is not None:
            self._greenlet.join(timeout)
            self._greenlet.kill(block=False)
        self.pool.join(timeout)
        self.pool.kill(block=True, timeout=1.0)
        self._mark_delivered()
        # Deliveries cut off here give their claim back, so the next start (or another node) tries
        # them at once rather than when the claim would have run out.
        self._release(list(self._in_flight.values()))
        self._in_flight.clear()
        self.connections.close()

    # -- the loop ------------------------------------------------------------------------------------
    def _loop(self) -> None:
        errors = 0
        while self._running:
            self._wake.clear()
            self._yield_to_events()
            try:
                self.run_once()
                errors = 0
            except Exception as exc:  # the database is away: try again later, calls go on
                errors += 1
                log.warning("outbox.read_failed", error=str(exc)[:200])
                gevent.sleep(min(self.poll * 2 ** errors, 30.0))
                continue
            if self._wake.wait(self.poll):
                # What else is done or written meanwhile joins this round: one claim and one mark
                # for many rows rather than a round per row (a call event waits at most this).
                gevent.sleep(COALESCE)

    def _yield_to_events(self) -> None:
        """Once the event listener has been behind at every look for BURST_AFTER seconds, wait
        while it stays behind (YIELD_AT_MOST seconds at most); a moment behind holds nothing."""
        if self.behind is None:
            return
        if not self.behind():
            self._behind_since = None
            return
        now = time.monotonic()
        if self._behind_since is None:
            self._behind_since = now
        if now - self._behind_since < BURST_AFTER:
            return
        deadline = now + YIELD_AT_MOST
        while self._running and time.monotonic() < deadline:
            if not self.behind() and self._caught_up():
                self._behind_since = None
                return
            self.yielded += 1
            gevent.sleep(COALESCE)

    def _caught_up(self) -> bool:
        """Not behind at CAUGHT_UP_LOOKS looks in a row, COALESCE apart (the first just taken)."""
        for _ in range(CAUGHT_UP_LOOKS - 1):
            gevent.sleep(COALESCE)
            if self.behind():
                return False
        return True

    def run_once(self) -> int:
        """Claim the chains that are due (as many as the pool can take) and start posting them;
        how many rows started."""
        self._mark_delivered()  # first: a call's next event is due once the one before is sent
        now = datetime.now(UTC)
        started = 0
        free = self.pool.free_count()
        if free:
            with self.lock:
                # Rows of a few more calls than slots: most chains are one or two rows, and each
                # row read costs (due() was 4% of the daemon's CPU reading 256 a round).
                taken = chains(self.outbox.due(now, min(self.claim_rows, 4 * free)), free)
                rows = [entry for chain in taken for entry in chain]
                # A claim lasts as long as its longest chain could take to post, and has its own
                # `until` (to the microsecond), so it reads back only its own rows.
                longest = max((len(chain) for chain in taken), default=1)
                until = now + timedelta(seconds=(self.timeout + 1) * longest + 30,
                                        microseconds=random.randrange(1_000_000))
                mine = {entry.id for entry in self.outbox.claim_many(rows, now, until)}
            for chain in taken:
                # Another node took some of these since they were read: a chain goes out up to
                # the first row it lost (the rest are due again behind that one, in order).
                claimed = []
                for entry in chain:
                    if entry.id not in mine:
                        break
                    claimed.append(entry)
                lost = chain[len(claimed):]
                self._release([(entry, until) for entry in lost if entry.id in mine])
                if not claimed:
                    continue
                for entry in claimed:
                    self._in_flight[entry.id] = (entry, until)
                self.pool.spawn(self._deliver_chain, claimed, until)
                started += len(claimed)
        clock = time.monotonic()
        if clock - self._counted_at >= min(self.poll, 2.0):
            with self.lock:
                self.pending = self.outbox.count(PENDING)
            self._counted_at = clock
        if clock - self._pruned_at >= 600:
            with self.lock:
                self.outbox.purge((SENT,), older_than=self.keep_sent)
            self._pruned_at = clock
        return started

    def _deliver_chain(self, chain: list[Entry], until: datetime) -> None:
        """A call's rows one after the other; at the first that fails, the rest give their claim
        back (due again behind it, in order, once its backoff is over)."""
        for n, entry in enumerate(chain):
            if not self._deliver(entry):
                rest = chain[n + 1:]
                for later in rest:
                    self._in_flight.pop(later.id, None)
                self._release([(later, until) for later in rest])
                return

    def _deliver(self, entry: Entry) -> bool:
        body = entry.body.encode("utf-8")
        error = ""
        try:
            with gevent.Timeout(self.timeout + 1.0):
                response = self.connections.request(
                    "POST", entry.target, body=body, timeout=self.timeout, max_body=64 * 1024,
                    headers=webhooks.headers(entry.event_id, entry.event_type, body, self.secret, now=time.time()))
            if not response.ok:
                error = f"HTTP {response.status}"
        except http_client.HttpError as exc:
            error = str(exc)
        except gevent.Timeout:
            error = f"no answer within {self.timeout:g}s"
        now = datetime.now(UTC)
        self._in_flight.pop(entry.id, None)  # from here on the row's fate is written (or its claim runs out)
        if not error:
            # Marked by the next round, with the others: no wait here for the database's lock,
            # which the call writer holds through its batches (the pool's slot is free at once).
            self._delivered.append(entry)
            self.sent += 1
            self._result("sent")
            # debug: one line per event at 500 events/s was a tenth of the sender's CPU; the
            # metric fsrouter_webhook_deliveries_total{result="sent"} counts them.
            log.debug("webhook.sent", event_type=entry.event_type, event_id=entry.event_id, url=entry.target)
            self._wake.set()  # more may be waiting behind this one
            return True
        attempts = entry.attempts + 1
        dead = attempts >= self.max_attempts
        try:
            with self.lock:
                self.outbox.failed(entry, error, now + timedelta(seconds=self.delay(attempts)), dead)
        except Exception as exc:  # the claim runs out and the row is tried again: the id dedupes
            log.warning("outbox.update_failed", id=entry.id, error=str(exc)[:200])
            return False
        self.failures += 1
        self._result("dead" if dead else "failed")
        log.warning("webhook.failed", event_type=entry.event_type, event_id=entry.event_id,
                    url=entry.target, attempt=attempts, error=error[:200], dead=dead)
        return False

    def _release(self, claims: list[tuple[Entry, datetime]]) -> None:
        if not claims:
            return
        now = datetime.now(UTC)
        for entry, until in claims:
            try:
                with self.lock:
                    self.outbox.release(entry, until, now)
            except Exception as exc:  # the claim simply runs out: the row is tried again later
                log.warning("outbox.release_failed", id=entry.id, error=str(exc)[:200])

    def _mark_delivered(self) -> None:
        done, self._delivered = self._delivered, []
        if not done:
            return
        try:
            with self.lock:
                self.outbox.delivered_many(done, datetime.now(UTC))
        except Exception as exc:  # marked at the next round (or their claims run out: the ids dedupe)
            self._delivered = done + self._delivered
            log.warning("outbox.update_failed", ids=len(done), error=str(exc)[:200])

    def delay(self, attempts: int) -> float:
        """Seconds before attempt `attempts + 1`: base * 2^(attempts-1), capped, with jitter."""
        delay = min(self.max_delay, self.base_delay * 2 ** max(0, attempts - 1))
        return delay * random.uniform(0.75, 1.25) if self.jitter else delay

    def _result(self, result: str) -> None:
        if self.on_result is not None:
            self.on_result(result)


class LiveEvents(BatchWriter):
    """The listener's call transitions (core/live.py) into the outbox as webhook events.

    Group commit (batching.BatchWriter): put() is all the event's path does; a greenlet writes
    what arrived meanwhile in one transaction (at most `batch`, at most `max_delay` seconds after
    the first of them), in the order told, on the connection given (the daemon's call writer's:
    one writer on SQLite) under `lock`; the sender is woken by the store.

    Each event says who the client was bound to when the call came (the sticky leg's agent,
    else the ownership rule's holder, Service.holder_of: read once per call, at its first
    transition, so the binding this call teaches does not change it) and who should act on it
    (core.webhooks.recipients).
    """

    log = log
    backlog_full = "webhooks.backlog_full"
    first_retry, last_retry = 0.05, 2.0

    def __init__(self, service, lock=None, batch: int = 64, max_delay: float = 0.02,
                 max_pending: int = 200_000, remembered: int = 100_000):
        super().__init__(batch, max_delay, max_pending)
        self.service = service
        self.lock = lock if lock is not None else nullcontext()
        self._bound: OrderedDict[str, str | None] = OrderedDict()  # call uuid -> bound agent
        self._remembered = remembered

    def _write_batch(self) -> bool:
        told = self._next_batch(self.batch)
        store = self.service.store
        try:
            with self.lock, store.transaction():
                agents, groups = self.service.agents(), self.service.groups()
                events = [self._event(t, agents, groups) for t in told]
                store.add_events(events)
        except Exception as exc:  # the database is away: kept, and tried again
            self.failures += 1
            log.warning("webhooks.write_failed", uuid=told[0].call_uuid, events=len(told), error=str(exc)[:200],
                        pending=len(self.pending))
            return False
        for t in told:
            self._committed(t)
            if t.kind == live.ENDED:
                self._bound.pop(t.call_uuid, None)
        return True

    def _event(self, t: live.Transition, agents, groups) -> webhooks.Event:
        group = groups.get(t.group) if t.group else None
        sticky = t.call.sticky_agent if t.call is not None else (t.agent if t.route == "sticky" else None)
        if sticky or t.call_uuid not in self._bound:
            self._bound[t.call_uuid] = sticky or (self.service.holder_of(t.client, t.group, t.at) if t.client
                                                  else None)
            if len(self._bound) > self._remembered:
                self._bound.popitem(last=False)
        return webhooks.live_event(t, self._bound[t.call_uuid], webhooks.recipients(t, agents, group), agents)
