"""The one place that builds fsrouter's object graph.

`fsrouter run` (build_daemon), every CLI command (open_store, route_presence), `fsrouter demo`
and the tests get their parts from here, so the tests exercise the production wiring; what a
test needs differently is a parameter of these functions, not a second graph. Every part gets
what it depends on through its constructor.
"""
from __future__ import annotations

import socket
from collections.abc import Callable
from urllib.parse import parse_qs, urlsplit

import gevent
import gevent.event
import gevent.lock

from .config import Config, default_database_url
from .core import live
from .daemon import Daemon
from .esl.catchup import CdrCatchup
from .esl.decision import Decider
from .esl.events import CallTracker
from .esl.inbound import EventListener, LiveConnection
from .esl.loss import LossWatch, SafeLossWatch
from .esl.outbound import CallRouter, OutboundServer, OutboundStats
from .esl.presence import BusyMap, LivePresence, Presence, Registrations
from .esl.protocol import EventSocketUnavailable, open_inbound
from .esl.sequence_watch import SequenceGapWatch
from .esl.writer import CallWriter
from .expiry import ExpirySweep
from .http.api import Api, ApiServer
from .http.crm import CrmClient
from .http.links import Links
from .http.outbox import LiveEvents, Outbox, Sender
from .http.pages import Pages
from .http.screens import Screens
from .hub import Hub
from .metrics import Metrics
from .service import Service
from .store import Store

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


def make_database_cooperative(config: Config) -> None:
    """psycopg2 blocks the whole gevent loop unless it waits through gevent (`fsrouter run`)."""
    if (config.database or "").startswith(("postgres", "postgresql")):
        from psycogreen.gevent import patch_psycopg
        patch_psycopg()


def open_store(config: Config, *, cooperative: bool = False,
               on_event: Callable[[], None] | None = None) -> Store:
    """The configured database. With webhooks configured, a binding changed through it is an
    event in the outbox (`on_event` wakes the daemon's sender); `cooperative`: the daemon's
    short wait for SQLite's lock."""
    url = config.database or default_database_url()
    return Store.open(cooperative_url(url) if cooperative else url, webhook_urls=tuple(config.webhook_urls),
                      on_event=on_event)


def route_presence(config: Config, timeout: float = 3.0):
    """`fsrouter route --live`: registrations asked of FreeSWITCH on one event-socket connection,
    as the daemon's presence does; a `presence` for Service.route. An OSError with one line
    when it cannot connect."""
    try:
        conn = open_inbound(config.esl_host, config.esl_port, config.esl_password, timeout)
    except EventSocketUnavailable as exc:
        raise EventSocketUnavailable(f"--live: {exc}") from None

    def api(command: str, limit: float) -> str:
        with gevent.Timeout(limit):
            return conn.send(f"api {command}").data

    presence = Presence(registrations=Registrations(api, timeout=1.0))
    return lambda agents, wait_for: presence.availability(agents, wait_for={a.ext for a in agents})


class _ListenerEvents:
    """Where the listener's events go: the loss windows, presence (busy agents, registrations),
    the call tracker (its finished calls to the writer), the Event-Sequence gap watch."""

    def __init__(self, loss: SafeLossWatch, presence: LivePresence, tracker: CallTracker, writer: CallWriter,
                 gap_watch: SequenceGapWatch, catchup: CdrCatchup | None, hub: Hub):
        self.loss = loss
        self.presence = presence
        self.tracker = tracker
        self.writer = writer
        self.gap_watch = gap_watch
        self.catchup = catchup
        self.hub = hub

    def on_event(self, headers: dict) -> None:
        self.loss.event(headers)
        self.presence.feed(headers)
        for call in self.tracker.feed(headers):
            self.writer.put(call)
        self.gap_watch.check()

    def on_connect(self) -> None:
        self.loss.subscribed()
        self.tracker.reset_sequence()
        if self.catchup is not None:
            # Calls that were in progress while nobody listened are the catch-up's to record,
            # from their CDR once they end, rather than the listener's from what it half saw.
            for call in self.tracker.forget_open():
                self.writer.put(call)
            # The tracker tells those calls nothing more (no ended): the pages would show them
            # in progress for ever.
            self.hub.forget_in_progress()
        self.presence.on_connect()

    def on_disconnect(self, detail: str) -> None:
        self.loss.unsubscribed(detail)


def build_daemon(config: Config, *, one_connection: bool = False, cache_ttl: float = 5.0) -> Daemon:
    """`fsrouter run`'s parts, wired. The tests' options: `one_connection` routes and writes on
    one connection (under the daemon's lock) instead of one each, so what a test reads through
    `daemon.service.store` is what the daemon sees; `cache_ttl` 0 reads the configuration afresh
    for every call."""
    # One greenlet at a time talks to a connection: a shared one must not see two at once.
    lock = gevent.lock.RLock()
    metrics = Metrics()
    # Set by a store that wrote webhook events: wakes the sender, made below on the writer's connection.
    outbox_written = gevent.event.Event()
    on_event = outbox_written.set if config.webhook_urls else None
    if one_connection:
        service = Service(open_store(config, on_event=on_event), cache_ttl=cache_ttl)
        write_lock = lock
        writer = CallWriter(service, write_lock)
    else:
        service = Service(open_store(config, cooperative=True, on_event=on_event), cache_ttl=cache_ttl)
        # The writer has a connection of its own, so a call's decision never waits behind a
        # commit (PostgreSQL's flush, SQLite's WAL append), and the writer can yield mid-batch.
        # The live webhooks and the sender work on it too, under its lock: SQLite has one writer
        # at a time, and a sender on a connection of its own met "database is locked" behind the
        # writer's commits, backed off and let its claims run out (call events 35 s late in the
        # bench's live section).
        write_lock = gevent.lock.RLock()
        writer = CallWriter(Service(open_store(config, cooperative=True, on_event=on_event), cache_ttl=cache_ttl),
                            write_lock, own_connection=True)
    # The listener's connection while it is subscribed: presence asks FreeSWITCH on it, and the
    # webhook sender reads how far behind its events are.
    connection = LiveConnection()
    sender = live_events = None
    if config.webhook_urls:
        # Not the routing connection: deliveries never hold up a call's decision.
        # It waits while a burst of FreeSWITCH's events waits unread, so the burst is read first
        # (outbox.BURST_AFTER, YIELD_AT_MOST). Behind: more than an event (~9 KB) unread. A
        # reader that keeps up drains its socket between events, one in a burst never does: the
        # bench's ingestion blast kept 70-560 KB unread, and a size mark alone either held the
        # sender through a 100 calls/s run (64 KB) or never saw the blast (1 MB).
        sender = Sender(Outbox(writer.service.store), config.webhook_secret, lock=write_lock,
                        timeout=config.webhook_timeout, on_result=metrics.webhook_result, wake=outbox_written,
                        behind=lambda: connection.unread_bytes() > 8 * 1024)
        live_events = LiveEvents(writer.service, write_lock)
    # The live story of each call (core/live.py): published to the pages (hub.py), and turned
    # into webhooks when they are configured.
    hub = Hub()

    def on_transition(transition) -> None:
        hub.publish(transition)
        if live_events is not None:
            live_events.put(transition)

    def on_recovered(call) -> None:
        """A call the catch-up recovered from a CDR: its story is told now, at its end."""
        for transition in live.story_of_finished(call):
            on_transition(transition)

    def agent_extensions():
        try:
            # Under the lock: when the cache is stale this reads the database, on the connection
            # a routing decision may be using (with psycopg2 waiting through gevent, a second
            # query there fails, and the tracker would take every agent for a stranger).
            with lock:
                return service.agent_extensions()
        except Exception:
            return ()

    try:
        region = service.settings().default_region
    except Exception:
        region = "UA"
    ignore = tuple(config.ignore_channels)
    tracker = CallTracker(agents=agent_extensions, region=region, ignore_channels=ignore,
                          on_transition=on_transition)
    # Presence (docs/presence-and-hours.md): who is on a call, from the same events, and whose
    # phone is registered, asked of FreeSWITCH (sofia_contact) on the listener's connection.
    presence = LivePresence(BusyMap(agent_extensions, ignore_channels=ignore), Registrations(connection.api),
                            agents=lambda: service.agents().values(), lock=lock, connected=connection.is_up)
    gap_watch = SequenceGapWatch(tracker.stats)  # logs Event-Sequence gaps, rate-limited
    # Loss windows and the CDR catch-up (docs/operations.md, "Calls that ended while fsrouter
    # was not listening"): what the listener missed is recovered from FreeSWITCH's CDR files.
    node = config.node or socket.gethostname()

    def with_store(use):
        # On the call writer's connection, under its lock, as the sender and the catch-up: on
        # the routing connection the mark met "database is locked" behind the writer's commits
        # 48-65 times in the bench's 60,000-event blast, and SQLite waits out its busy timeout
        # (50 ms) inside a C call, holding every greenlet: 2.4-3.3 s of a 25-30 s blast.
        with write_lock:
            return use(writer.service.store)

    loss = SafeLossWatch(with_store, node, unwritten=lambda: writer.pending)
    catchup = None
    if config.cdr_dir:
        # On the call writer's connection, under its lock, as the webhook sender: not the
        # routing connection (a 300 s soak saw decisions wait up to 1.2 s while a 30 s window's
        # calls were recovered on it), and not one of its own (SQLite has one writer at a time:
        # the writer and the catch-up kept meeting "database is locked").
        catchup = CdrCatchup(config.cdr_dir, writer.service, node, lock=write_lock, clock=loss.now,
                             pending=lambda: writer.pending, on_recovered=on_recovered)
    events = _ListenerEvents(loss, presence, tracker, writer, gap_watch, catchup, hub)
    listener = EventListener(config.esl_host, config.esl_port, config.esl_password, on_event=events.on_event,
                             on_connect=events.on_connect, on_disconnect=events.on_disconnect,
                             connection=connection)
    # The CRM, webhooks, the push API and /metrics (docs/crm.md): each only when configured.
    crm = CrmClient.from_config(config, on_result=metrics.crm_result)
    decider = Decider(service, lock, config.decision_budget, crm=crm, presence=presence.availability,
                      metrics=metrics)
    outbound_stats = OutboundStats()
    outbound = OutboundServer(config.listen_host, config.listen_port, CallRouter(decider.decide, outbound_stats),
                              allowed_peers=tuple(config.allowed_peers))
    _count(metrics, listener, outbound_stats, sender, crm, loss, catchup)
    api = pages = None
    if config.api_token:
        app = Api(service, config.api_token, lock=lock, crm=crm, metrics=metrics, health=_health(listener, sender, crm),
                  presence=presence.availability)
        screens = Screens(service, hub, lock, presence=presence, crm_name=crm.name if crm is not None else None,
                          crm_card_url=config.crm_card_url)
        pages = Pages(screens, Links(config.api_token), api_token_matches=app.token_matches)
        pages.mount(app.app)
        api = ApiServer(config.api_listen, app)
    return Daemon(config, lock=lock, service=service, writer=writer, tracker=tracker, presence=presence,
                  listener=listener, gap_watch=gap_watch, decider=decider, outbound=outbound,
                  outbound_stats=outbound_stats, metrics=metrics, loss=loss, expiry=ExpirySweep(service, lock),
                  hub=hub, live_events=live_events, catchup=catchup, crm=crm, sender=sender, api=api, pages=pages)


def _count(metrics: Metrics, listener: EventListener, stats: OutboundStats, sender: Sender | None, crm,
           loss: LossWatch, catchup: CdrCatchup | None) -> None:
    """/metrics: what the parts count, read when scraped."""
    m = metrics
    m.counter("fsrouter_event_socket_reconnects", "Event-socket reconnects", lambda: listener.stats.reconnects)
    m.counter("fsrouter_loss_windows", "Windows in which the event listener was not subscribed, closed since start",
              lambda: loss.windows)
    m.counter("fsrouter_calls_recovered", "Calls of loss windows recovered from FreeSWITCH's CDR files",
              lambda: catchup.stats.recovered if catchup else 0)
    m.gauge("fsrouter_event_socket_connected", "1 while the event socket is connected",
            lambda: listener.connected.is_set())
    m.counter("fsrouter_sticky_answered", "Calls the bound agent answered on the sticky leg",
              lambda: stats.sticky_answered)
    m.gauge("fsrouter_sticky_hit_ratio", "Of the calls whose bound agent rang first, the share they answered",
            lambda: stats.sticky_answered / m.sticky_attempts if m.sticky_attempts else 0.0)
    m.gauge("fsrouter_calls_active", "Calls on the outbound socket now", lambda: stats.active)
    m.gauge("fsrouter_outbox_pending", "Webhook deliveries waiting in the outbox",
            lambda: sender.pending if sender else 0)
    m.gauge("fsrouter_crm_breaker_open", "1 while the CRM circuit breaker is open",
            lambda: crm is not None and crm.breaker.state == "open")


def _health(listener: EventListener, sender: Sender | None, crm) -> Callable[[], dict]:
    """/health's parts beyond the database."""
    def health() -> dict:
        report = {"event_socket": "connected" if listener.connected.is_set() else "disconnected"}
        if sender is not None:
            report["outbox_pending"] = sender.pending
        if crm is not None:
            report["crm_breaker"] = crm.breaker.state
        return report
    return health
