"""`fsrouter run`: the running daemon's life cycle and its signals.

wiring.build_daemon makes the parts (the outbound-socket router, the event listener, the call
writer, presence, the webhook sender, the push API) and hands them to Daemon, which starts them,
stops them in order (draining the calls in flight, writing what is pending) and reloads the
config; run_daemon turns SIGTERM, SIGINT and SIGHUP into those steps and talks to systemd.
"""
from __future__ import annotations

import gc
import signal
import time
from collections.abc import Callable

import gevent
import gevent.event
import structlog

from .config import Config, load_config
from .esl.catchup import CdrCatchup
from .esl.decision import Decider
from .esl.events import CallTracker
from .esl.inbound import EventListener
from .esl.loss import SafeLossWatch
from .esl.outbound import OutboundServer, OutboundStats
from .esl.presence import LivePresence
from .esl.sequence_watch import SequenceGapWatch
from .esl.writer import CallWriter
from .expiry import ExpirySweep
from .http.api import ApiServer
from .http.outbox import LiveEvents, Sender
from .http.pages import Pages
from .hub import Hub
from .logs import configure_logging
from .metrics import Metrics
from .service import Service
from .systemd_notify import notify, watchdog_interval

log = structlog.get_logger("fsrouter.daemon")

STOP_EVENTS_WAIT = 3.0  # seconds a stop waits for the last events of the calls it drained


class Daemon:
    """The parts of `fsrouter run`, as wiring.build_daemon made them, and their life cycle."""

    def __init__(self, config: Config, *, lock, service: Service, writer: CallWriter, tracker: CallTracker,
                 presence: LivePresence, listener: EventListener, gap_watch: SequenceGapWatch,
                 decider: Decider, outbound: OutboundServer, outbound_stats: OutboundStats, metrics: Metrics,
                 loss: SafeLossWatch, expiry: ExpirySweep, hub: Hub, live_events: LiveEvents | None = None,
                 catchup: CdrCatchup | None = None, crm=None, sender: Sender | None = None,
                 api: ApiServer | None = None, pages: Pages | None = None):
        self.config = config
        self.db_lock = lock
        self.service = service
        self.writer = writer
        self.tracker = tracker
        self.presence = presence
        self.busy = presence.busy_map
        self.listener = listener
        self.gap_watch = gap_watch
        self.decider = decider
        self.outbound = outbound
        self.outbound_stats = outbound_stats
        self.metrics = metrics
        self.loss = loss
        self.expiry = expiry
        self.catchup = catchup
        self._loss_greenlets: list[gevent.Greenlet] = []
        self.hub = hub  # the live stream: the listener publishes each call's transitions, pages read them
        self.live_events = live_events  # the same transitions as webhooks, when they are configured
        self.crm = crm
        self.sender = sender
        self.api = api
        self.pages = pages  # the screen pops and the board, on the API's listener
        self.stopped = gevent.event.Event()

    # -- life cycle ----------------------------------------------------------------------------
    def start(self) -> None:
        self.outbound.start()
        self.writer.start()
        self.loss.started()
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
        self.presence.stop()
        self.expiry.stop()
        for greenlet in self._loss_greenlets:
            greenlet.kill(block=False)
        if self.listener.connected.is_set():
            self.loss.mark(True)  # subscribed until now: the next start's window opens here
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

    def _mark_listening(self, every: float = 1.0) -> None:
        while True:
            gevent.sleep(every)
            if self.listener.connected.is_set():
                self.loss.mark()

    def reload(self, path: str | None) -> None:
        try:
            config = load_config(path)
        except Exception as exc:
            log.error("config.reload_failed", error=str(exc))
            return
        configure_logging(config.log_format, config.log_level)
        self.config = config
        self.decider.budget = config.decision_budget
        self.service.invalidate()
        log.info("config.reloaded")


def run_daemon(config: Config, config_path: str | None, build: Callable[[Config], Daemon]) -> int:
    """Until SIGTERM or SIGINT: the daemon `build` makes (wiring.build_daemon), started; SIGHUP
    reloads the config from `config_path`."""
    configure_logging(config.log_format, config.log_level)
    # The handlers come first: a SIGTERM while the database opens is a clean stop, not a kill.
    stop_requested = gevent.event.Event()
    gevent.signal_handler(signal.SIGTERM, stop_requested.set)
    gevent.signal_handler(signal.SIGINT, stop_requested.set)
    started: list[Daemon] = []
    gevent.signal_handler(signal.SIGHUP, lambda: started and gevent.spawn(started[0].reload, config_path))
    daemon = build(config)
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
