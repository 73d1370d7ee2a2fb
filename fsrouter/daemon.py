"""`fsrouter run`: the outbound-socket router and the event listener in one gevent process.

The routing decision and learning happen in the service; this module only wires the sockets to
it, keeps calls ringing when the database is not there, and handles signals and systemd.
"""
from __future__ import annotations

import gc
import signal
import socket
import sqlite3
import time
from collections import deque
from urllib.parse import parse_qs, urlsplit

import gevent
import gevent.event
import gevent.lock
import peewee
import structlog

from . import esl  # noqa: F401  (greenswitch header fix)
from .config import Config, default_database_url, load_config
from .core import live
from .core.model import Call
from .core.routing import BUSY
from .esl.catchup import CdrCatchup
from .esl.events import CallTracker
from .esl.inbound import EventListener
from .esl.loss import LossWatch
from .esl.outbound import CallRouter, OutboundServer, OutboundStats
from .esl.presence import BusyMap, Presence, Registrations
from .esl.sequence_watch import SequenceGapWatch
from .http.api import Api, ApiServer
from .http.crm import CrmClient
from .http.links import Links
from .http.outbox import LiveEvents, Outbox, Sender
from .http.pages import Pages
from .http.screens import Screens
from .hub import Hub
from .logs import configure_logging
from .metrics import Metrics
from .service import Service
from .store import Store
from .systemd_notify import notify, watchdog_interval

log = structlog.get_logger("fsrouter.daemon")

STOP_EVENTS_WAIT = 3.0  # seconds a stop waits for the last events of the calls it drained


def _wal_checkpoint(path: str) -> None:
    """Runs in a thread: copies the WAL into the database file without blocking anyone."""
    conn = sqlite3.connect(path, timeout=5)
    try:
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
    finally:
        conn.close()


class CallWriter:
    """Writes finished calls through the service, keeping them while the database is away.

    Group commit: the calls that finished meanwhile are written in one transaction (at most
    `batch` of them, so the loop, which routes calls too, is never held for long), at most
    `max_delay` seconds after the first of them finished. A call leaves `pending` only once its
    transaction committed; stop() writes whatever is left.
    """

    def __init__(self, service: Service, db_lock, max_pending: int = 200_000, batch: int = 16,
                 max_delay: float = 0.05, own_connection: bool = False):
        self.service = service
        self.db_lock = db_lock
        self.pending: deque[Call] = deque()
        self.max_pending = max_pending
        self.batch = batch
        self.max_delay = max_delay
        self.written = 0
        self.commits = 0
        self.dropped = 0
        self.failures = 0
        self.bindings_changed = 0
        self._wake = gevent.event.Event()
        self._greenlet = None
        self._running = False
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

    def put(self, call: Call) -> None:
        if len(self.pending) >= self.max_pending:
            self.pending.popleft()
            self.dropped += 1
            log.error("calls.backlog_full", dropped=self.dropped)
        self.pending.append(call)
        self._wake.set()

    def start(self) -> None:
        self._running = True
        self._greenlet = gevent.spawn(self._loop)

    def stop(self, timeout: float) -> None:
        self._running = False
        self._wake.set()
        if self._greenlet is not None:
            self._greenlet.join(timeout)
            self._greenlet.kill(block=False)
        self.flush(timeout)
        self._checkpoint(force=True)

    def flush(self, timeout: float = 5.0) -> bool:
        with gevent.Timeout(timeout, False):
            while self.pending and self._write_batch():
                pass
        return not self.pending

    def _loop(self) -> None:
        delay = 0.1
        while self._running:
            if not self.pending:
                self._wake.clear()
                self._wake.wait(1.0)
                continue
            if len(self.pending) < self.batch:
                gevent.sleep(self.max_delay)  # let the calls finishing now join this commit
            if self._write_batch():
                delay = 0.1
                gevent.sleep(0)  # routing goes first between two commits
                self._checkpoint()
            else:
                gevent.sleep(delay)
                delay = min(delay * 2, 5.0)

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
        calls = [self.pending[i] for i in range(min(size, len(self.pending)))]
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
            if self.pending and self.pending[0] is call:  # put() may have dropped it meanwhile
                self.pending.popleft()
            self.written += 1
            log.info("call.recorded", uuid=call.uuid, direction=call.direction, client=call.client,
                     agent=call.agent, talk_seconds=call.talk_seconds, outcome=call.outcome)
            if binding is not None:
                self.bindings_changed += 1
                log.info("binding.learned", uuid=call.uuid, client=binding.client, agent=binding.agent,
                         why=binding.why)
        return True


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


# SQLite waits for a lock another process holds (a CLI import's write transaction) inside a C
# call, and that stops every greenlet: no call was routed for as long as the lock was held. The
# daemon's connections wait at most this long; a write that finds the database locked fails at
# once and CallWriter retries it with a backoff, while routing goes on (reads never wait in WAL).
SQLITE_BUSY_TIMEOUT = 0.05


def cooperative_url(url: str) -> str:
    """The database URL with SQLite's busy timeout set for the daemon (unless the URL sets one)."""
    if not url.lower().startswith("sqlite") or "timeout" in parse_qs(urlsplit(url).query):
        return url
    return f"{url}{'&' if '?' in url else '?'}timeout={SQLITE_BUSY_TIMEOUT}"


class Daemon:
    def __init__(self, config: Config, service: Service | None = None, hub: Hub | None = None):
        self.config = config
        # One greenlet at a time talks to a connection: a shared one must not see two at once.
        self.db_lock = gevent.lock.RLock()
        if service is None:
            url = cooperative_url(config.database or default_database_url())
            self.service = Service(Store.open(url))
            # The writer has a connection of its own, so a call's decision never waits behind a
            # commit (PostgreSQL's flush, SQLite's WAL append), and the writer can yield mid-batch.
            # The live webhooks are written on it too (SQLite has one writer at a time).
            self.write_lock = gevent.lock.RLock()
            self.writer = CallWriter(Service(Store.open(url)), self.write_lock, own_connection=True)
        else:
            self.service = service
            self.write_lock = self.db_lock
            self.writer = CallWriter(self.service, self.db_lock)
        # The live story of each call (core/live.py): published to the pages, and turned into
        # webhooks when they are configured.
        self.hub = hub if hub is not None else Hub()
        self.live_events = LiveEvents(self.writer.service, self.write_lock) if config.webhook_urls else None
        self.tracker = CallTracker(agents=self._agent_extensions, region=self._region(),
                                   ignore_channels=tuple(config.ignore_channels),
                                   on_transition=self._on_transition)
        self.listener = EventListener(config.esl_host, config.esl_port, config.esl_password,
                                      on_event=self._on_event, on_connect=self._on_connect,
                                      on_disconnect=self._on_disconnect)
        # Loss windows and the CDR catch-up (docs/operations.md, "Calls that ended while fsrouter
        # was not listening"): what the listener missed is recovered from FreeSWITCH's CDR files.
        self.node = config.node or socket.gethostname()
        self.loss = LossWatch(self._with_store, self.node, unwritten=lambda: self.writer.pending)
        self.catchup = None
        if config.cdr_dir:
            # On the call writer's connection, under its lock, as the webhook sender: not the
            # routing connection (a 300 s soak saw decisions wait up to 1.2 s while a 30 s
            # window's calls were recovered on it), and not one of its own (SQLite has one writer
            # at a time: the writer and the catch-up kept meeting "database is locked").
            self.catchup = CdrCatchup(config.cdr_dir, self.writer.service, self.node, lock=self.write_lock,
                                      clock=self.loss.now, pending=lambda: self.writer.pending,
                                      on_recovered=self._recovered)
        self._loss_greenlets: list[gevent.Greenlet] = []
        # Presence (docs/presence-and-hours.md): who is on a call, from the same events, and whose
        # phone is registered, asked of FreeSWITCH (sofia_contact) on the same connection.
        self.busy = BusyMap(self._agent_extensions, ignore_channels=tuple(config.ignore_channels))
        self.presence = Presence(self.busy, Registrations(self.listener.api))
        self.service.presence = self._availability
        self._presence_refresher: gevent.Greenlet | None = None
        self.gap_watch = SequenceGapWatch(self.tracker.stats)  # logs Event-Sequence gaps, rate-limited
        self.outbound_stats = OutboundStats()
        self.outbound = OutboundServer(config.listen_host, config.listen_port,
                                       CallRouter(self.decide, self.outbound_stats),
                                       allowed_peers=tuple(config.allowed_peers))
        self.stopped = gevent.event.Event()
        self.degraded_decisions = 0
        # The CRM, webhooks, the push API and /metrics (docs/crm.md): each only when configured.
        self.metrics = Metrics()
        self.crm = CrmClient.from_config(config, on_result=self.metrics.crm_result)
        self.sender = self._outbox_sender(config)
        self.api = self._api_server(config)
        self.expiry = ExpirySweep(self.service, self.db_lock)

    # -- wiring --------------------------------------------------------------------------------
    def _agent_extensions(self):
        try:
            # Under the lock: when the cache is stale this reads the database, on the connection
            # a routing decision may be using (with psycopg2 waiting through gevent, a second
            # query there fails, and the tracker would take every agent for a stranger).
            with self.db_lock:
                return self.service.agents().keys()
        except Exception:
            return ()

    def _region(self) -> str:
        try:
            return self.service.settings().default_region
        except Exception:
            return "UA"

    def _with_store(self, fn):
        with self.db_lock:
            return fn(self.service.store)

    def _loss(self, what: str, *args) -> None:
        """A LossWatch step; the database being away must not stop the listener."""
        try:
            getattr(self.loss, what)(*args)
        except Exception as exc:
            log.warning("events.loss_window_not_saved", step=what, error=str(exc)[:200])

    def _on_disconnect(self, detail: str) -> None:
        self._loss("unsubscribed", detail)

    def _mark_listening(self, every: float = 1.0) -> None:
        while True:
            gevent.sleep(every)
            if self.listener.connected.is_set():
                self._loss("mark")

    def _on_connect(self) -> None:
        self._loss("subscribed")
        self.tracker.reset_sequence()
        if self.catchup is not None:
            # Calls that were in progress while nobody listened are the catch-up's to record,
            # from their CDR once they end, rather than the listener's from what it half saw.
            for call in self.tracker.forget_open():
                self.writer.put(call)
        # Events may have been lost while disconnected: a hang-up among them would leave an agent
        # busy for hours. Forget, and learn again from the events to come.
        self.busy.reset()
        self.presence.registrations.forget()
        # Ask every agent's registration now, in the background, so that no decision has to wait
        # for a sofia_contact round trip (docs/presence-and-hours.md).
        gevent.spawn(self._warm_presence)
        if self._presence_refresher is None:  # from the first connection on
            self._presence_refresher = gevent.spawn(self._refresh_presence)

    def _availability(self, agents, wait_for):
        """Presence for one decision. The decision holds the database lock; a sofia_contact round
        trip must not hold up other calls' decisions, so the lock is let go meanwhile."""
        held = self.db_lock._is_owned()
        saved = self.db_lock._release_save() if held else None
        try:
            found = self.presence.availability(agents, wait_for)
        finally:
            if held:
                self.db_lock._acquire_restore(saved)
        # Everyone known to be on a call, candidate or not (a CRM-named agent, say): it is free.
        return {**dict.fromkeys(self.busy.busy(), BUSY), **found}

    def _refresh_presence(self, every: float = 4.0) -> None:
        """Keep the registration cache fresh (its answers live 5 s; older ones are still used
        while asked again), so that no decision waits and a sequential group's order knows every
        member from the first call."""
        while True:
            gevent.sleep(every)
            if self.listener.connected.is_set():
                self._warm_presence(margin=every + 0.5)  # what would go stale before the next round

    def _warm_presence(self, margin: float = 0.0) -> None:
        try:
            with self.db_lock:  # the configuration may need a read
                agents = [a for a in self.service.agents().values() if a.enabled and not a.dnd]
            self.presence.warm(agents, margin)
        except Exception as exc:
            log.debug("presence.refresh_failed", error=str(exc)[:200])

    def _on_event(self, headers: dict) -> None:
        self._loss("event", headers)
        self.presence.feed(headers)
        for call in self.tracker.feed(headers):  # its transitions went to _on_transition meanwhile
            self.writer.put(call)
        self.gap_watch.check()

    def _recovered(self, call) -> None:
        """A call the catch-up recovered from a CDR: its story is told now, at its end."""
        for transition in live.story_of_finished(call):
            self._on_transition(transition)

    def _on_transition(self, transition) -> None:
        self.hub.publish(transition)
        if self.live_events is not None:
            self.live_events.put(transition)

    def _outbox_sender(self, config: Config) -> Sender | None:
        stores = {id(s): s for s in (self.service.store, self.writer.service.store)}.values()
        for store in stores:
            store.webhook_urls = tuple(config.webhook_urls)
        if not config.webhook_urls:
            return None
        # On the call writer's connection, under its lock: SQLite has one writer at a time, and a
        # sender on a connection of its own met "database is locked" behind the writer's commits,
        # backed off and let its claims run out (call events 35 s late in the bench's live
        # section). Not the routing connection: deliveries never hold up a call's decision.
        sender = Sender(Outbox(self.writer.service.store), config.webhook_secret, lock=self.write_lock,
                        timeout=config.webhook_timeout, on_result=self.metrics.webhook_result)
        for store in stores:
            store.on_event = sender.wake
        return sender

    def _api_server(self, config: Config) -> ApiServer | None:
        m, stats = self.metrics, self.outbound_stats
        m.counter("fsrouter_event_socket_reconnects", "Event-socket reconnects", lambda: self.listener.stats.reconnects)
        m.counter("fsrouter_loss_windows", "Windows in which the event listener was not subscribed, closed since start",
                  lambda: self.loss.windows)
        m.counter("fsrouter_calls_recovered", "Calls of loss windows recovered from FreeSWITCH's CDR files",
                  lambda: self.catchup.stats.recovered if self.catchup else 0)
        m.gauge("fsrouter_event_socket_connected", "1 while the event socket is connected",
                lambda: self.listener.connected.is_set())
        m.counter("fsrouter_sticky_answered", "Calls the bound agent answered on the sticky leg",
                  lambda: stats.sticky_answered)
        m.gauge("fsrouter_sticky_hit_ratio", "Of the calls whose bound agent rang first, the share they answered",
                lambda: stats.sticky_answered / m.sticky_attempts if m.sticky_attempts else 0.0)
        m.gauge("fsrouter_calls_active", "Calls on the outbound socket now", lambda: stats.active)
        m.gauge("fsrouter_outbox_pending", "Webhook deliveries waiting in the outbox",
                lambda: self.sender.pending if self.sender else 0)
        m.gauge("fsrouter_crm_breaker_open", "1 while the CRM circuit breaker is open",
                lambda: self.crm is not None and self.crm.breaker.state == "open")
        self.pages = None
        if not config.api_token:
            return None
        screens = Screens(self.service, self.hub, self.db_lock, presence=self.presence,
                          crm_name=self.crm.name if self.crm is not None else None, crm_card_url=config.crm_card_url)
        api = Api(self.service, config.api_token, lock=self.db_lock, crm=self.crm, metrics=m, health=self._health)
        self.pages = Pages(screens, Links(config.api_token), api_token_matches=api.token_matches)
        self.pages.mount(api.app)
        return ApiServer(config.api_listen, api)

    def _health(self) -> dict:
        report = {"event_socket": "connected" if self.listener.connected.is_set() else "disconnected"}
        if self.sender is not None:
            report["outbox_pending"] = self.sender.pending
        if self.crm is not None:
            report["crm_breaker"] = self.crm.breaker.state
        return report

    def decide(self, caller: str | None, group: str | None, call_uuid: str | None):
        """The plan for one call: the CRM asked first (within its own budget, outside the database
        lock), then the local decision within the decision budget."""
        started = time.perf_counter()
        crm = None
        if self.crm is not None:
            try:
                # The configuration the answer is read against (agents, CRM ids), fresh if it can be.
                with gevent.Timeout(self.config.decision_budget, False), self.db_lock:
                    self.service.settings()
            except Exception:
                pass  # the decision below meets the same trouble and handles it
            try:
                crm = self.service.crm_answer(caller or "", self.crm, cached_only=True)
            except Exception as exc:
                log.warning("crm.skipped", uuid=call_uuid, error=str(exc)[:200])
        plan = self._decide(caller, group, call_uuid, crm)
        self.metrics.decided(plan, time.perf_counter() - started)
        return plan

    def _decide(self, caller: str | None, group: str | None, call_uuid: str | None, crm=None):
        """The plan for one call within the decision budget; without the database, the group."""
        try:
            with gevent.Timeout(self.config.decision_budget), self.db_lock:
                return self.service.route(caller or "", group or "", crm=crm)
        except BaseException as exc:  # gevent.Timeout is a BaseException
            if isinstance(exc, (KeyboardInterrupt, SystemExit, gevent.GreenletExit)):
                raise
            self.degraded_decisions += 1
            log.warning("decision.degraded", uuid=call_uuid, error=type(exc).__name__, detail=str(exc)[:200])
            try:
                return self.service.fallback_plan(caller or "", group or "", crm=crm)
            except Exception as fallback_exc:
                log.warning("decision.no_plan", uuid=call_uuid, error=str(fallback_exc)[:200])
                return None

    # -- life cycle ----------------------------------------------------------------------------
    def start(self) -> None:
        self.outbound.start()
        self.writer.start()
        self._loss("started")
        if self.live_events is not None:
            self.live_events.start()
        self.listener.start()
        self._loss_greenlets.append(gevent.spawn(self._mark_listening))
        if self.catchup is not None:
            self._loss_greenlets.append(gevent.spawn(self.catchup.run))
        self.expiry.start()
        if self.sender is not None:
            self.sender.start()
        if self.api is not None:
            self.api.start()
            log.info("api.started", listen=f"{self.api.address[0]}:{self.api.address[1]}")
        log.info("daemon.started", outbound=f"{self.config.listen_host}:{self.outbound.address[1]}",
                 event_socket=f"{self.config.esl_host}:{self.config.esl_port}")

    def stop(self) -> None:
        """Stop taking calls, let the ones in flight finish (bounded), write what is pending."""
        log.info("daemon.stopping", active_calls=self.outbound_stats.active,
                 drain_timeout=self.config.drain_timeout)
        self.outbound.stop(self.config.drain_timeout)
        # The calls routed here send their last events after their sockets close: wait (bounded)
        # until the tracker has finished every one of them, so none is lost at a stop.
        recent = time.monotonic() - STOP_EVENTS_WAIT
        routed = [uuid for uuid, ended in self.outbound_stats.ended if ended >= recent]
        with gevent.Timeout(STOP_EVENTS_WAIT, False):
            while self.listener.connected.is_set() and not all(self.tracker.finished(u) for u in routed):
                gevent.sleep(0.05)
        if self._presence_refresher is not None:
            self._presence_refresher.kill(block=False)
        self.expiry.stop()
        for greenlet in self._loss_greenlets:
            greenlet.kill(block=False)
        if self.listener.connected.is_set():
            self._loss("mark", True)  # subscribed until now: the next start's window opens here
        self.listener.stop()
        for call in self.tracker.flush():  # calls still waiting for a lost hang-up
            self.writer.put(call)
        if self.live_events is not None:  # before the writer closes the connection they share
            self.live_events.stop(timeout=5.0)
        self.writer.stop(timeout=10.0)
        if self.api is not None:
            self.api.stop()
        if self.sender is not None:  # what is not sent yet waits in the outbox for the next start
            self.sender.stop(timeout=2.0)
        log.info("daemon.stopped", calls_written=self.writer.written, pending=len(self.writer.pending))
        self.stopped.set()

    def reload(self, path: str | None) -> None:
        try:
            config = load_config(path)
        except Exception as exc:
            log.error("config.reload_failed", error=str(exc))
            return
        configure_logging(config.log_format, config.log_level)
        self.config = config
        self.service.invalidate()
        log.info("config.reloaded")


def run_daemon(config: Config, config_path: str | None = None) -> int:
    configure_logging(config.log_format, config.log_level)
    _make_database_cooperative(config)
    # The handlers come first: a SIGTERM while the database opens is a clean stop, not a kill.
    stop_requested = gevent.event.Event()
    gevent.signal_handler(signal.SIGTERM, stop_requested.set)
    gevent.signal_handler(signal.SIGINT, stop_requested.set)
    started: list[Daemon] = []
    gevent.signal_handler(signal.SIGHUP, lambda: started and gevent.spawn(started[0].reload, config_path))
    daemon = Daemon(config)
    started.append(daemon)
    daemon.start()
    # What start-up made lives as long as the process: the collector stops scanning it, so its
    # pauses (10-20 ms for a full collection) no longer land on the calls being routed.
    gc.collect()
    gc.freeze()
    notify("READY=1\nSTATUS=routing calls")
    interval = watchdog_interval()
    while not stop_requested.wait(interval or 3600):
        notify("WATCHDOG=1")
    notify("STOPPING=1")
    daemon.stop()
    return 0


def _make_database_cooperative(config: Config) -> None:
    # psycopg2 blocks the whole gevent loop unless it waits through gevent.
    if (config.database or "").startswith(("postgres", "postgresql")):
        from psycogreen.gevent import patch_psycopg
        patch_psycopg()
