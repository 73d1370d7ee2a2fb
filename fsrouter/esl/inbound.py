"""The event listener: a supervised connection to FreeSWITCH's event socket.

greenswitch neither reconnects nor times out (see shared notes), so this class owns the loop:
connect with a timeout, authenticate with a timeout, subscribe, and when the connection drops,
back off and do it all again. Every event is handed to `on_event` in the order it arrived.
"""
from __future__ import annotations

import fcntl
import random
import struct
import termios
from collections.abc import Callable
from dataclasses import dataclass

import gevent
import structlog
from greenswitch.esl import NotConnectedError

from .protocol import InboundConnection

log = structlog.get_logger("fsrouter.listener")

# What the call tracker reads. HEARTBEAT keeps its clock moving on a quiet switch. Left out, as
# CHANNEL_HANGUP_COMPLETE (every variable, every time, the last event of a channel) carries what
# they would tell: CHANNEL_EXECUTE_COMPLETE (the heaviest event), and CHANNEL_PROGRESS /
# _PROGRESS_MEDIA (a phone ringing) and CHANNEL_HANGUP, which were 10 of the 28 events read of a
# real SIP call (capture 11). tests/test_events_replay.py replays the captures through this list.
# mod_sofia's registration events tell presence at once that a phone came or went. CUSTOM comes
# last: mod_event_socket takes every word after it for a subclass.
CHANNEL_KINDS = "CHANNEL_CREATE CHANNEL_ANSWER CHANNEL_BRIDGE CHANNEL_UNBRIDGE CHANNEL_HANGUP_COMPLETE HEARTBEAT"
CHANNEL_EVENTS = f"{CHANNEL_KINDS} CUSTOM sofia::register sofia::unregister sofia::expire"
COMMAND_TIMEOUT = 5.0
# The listener subscribes with `event json`: FreeSWITCH 1.10.12's events of a routed call parse
# in a fraction of the plain form's time (headers.json_headers; figures in bench/README.md,
# profile findings). Plain frames are still read (a replayed capture, anything sent as plain).
EVENT_FORMAT = "json"


class _EventConnection(InboundConnection):
    """greenswitch's inbound connection, handing each event to its handlers as soon as it is read,
    in the reader's own greenlet, then giving the loop a turn.

    greenswitch's reader parses event after event for as long as the socket has bytes, without
    giving the loop back: a burst of a few hundred events (FreeSWITCH catching up) held every call
    being routed for 10-20 ms. One event (its parse and its handlers) is now the longest the calls
    wait. The events no longer pass through greenswitch's queue to a greenlet of their own, where
    each waited its turn behind every greenlet ready at that moment (the sender's 16, the calls'):
    webhook delay p99 at 100 calls/s 735-998 ms in seven runs of bench "live", 901-1,788 ms in
    four with the queue. It costs the same CPU per event (45.3 against 46.6 µs, the fake's JSON events
    over a socketpair into this class alone, best of 7). A handler must not wait for an answer on
    this connection (presence asks sofia_contact from greenlets of its own): the answer is read
    by the greenlet that is running the handler. The disconnect notice still goes through the
    queue (process_events), after every event before it.
    """

    # One connection carries every event of the switch, 5-10 KB each: greenswitch's 8 KB buffer
    # made about one recv (and one wait on the loop) per event.
    READ_BUFFER = 64 * 1024

    def start_event_handlers(self) -> None:
        default, self.sock_file = self.sock_file, self.sock.makefile("rb", buffering=self.READ_BUFFER)
        default.close()  # never read
        super().start_event_handlers()

    def _take_event(self, event) -> None:
        self._hand_on(event)
        gevent.sleep(0)

    def _hand_on(self, event) -> None:
        """To the handlers registered for the event's name (a CUSTOM event's: its subclass), else "*"."""
        headers, handlers_of = event.headers, self.event_handlers
        if headers.get("Content-Type") == "text/disconnect-notice":
            handlers = handlers_of.get("DISCONNECT")
        elif headers.get("Event-Name") == "CUSTOM":
            handlers = handlers_of.get(headers.get("Event-Subclass"))
        else:
            handlers = handlers_of.get(headers.get("Event-Name"))
        for handle in handlers or handlers_of.get("*") or ():
            self._safe_exec_handler(handle, event)

    def process_events(self) -> None:
        """greenswitch's process_events (0.0.19), for what still comes through its queue (the
        disconnect notice), waiting on it without a timeout: greenswitch's get(timeout=1) made
        and cancelled a gevent.Timeout per event. The loop ends when _drop() kills it."""
        queue = self._esl_event_queue
        while self._run:
            self._hand_on(queue.get())


@dataclass
class ListenerStats:
    connects: int = 0
    reconnects: int = 0
    failures: int = 0
    events: int = 0
    handler_errors: int = 0
    broken_streams: int = 0


class LiveConnection:
    """The listener's connection while it is subscribed, for `api` commands sent on it (presence
    asks sofia_contact there): whoever asks needs this, not the listener, which is made after them
    since its events go to them."""

    def __init__(self):
        self._conn: InboundConnection | None = None

    def attach(self, conn: InboundConnection) -> None:
        self._conn = conn

    def detach(self) -> None:
        self._conn = None

    def is_up(self) -> bool:
        conn = self._conn
        return conn is not None and conn.connected

    def api(self, command: str, timeout: float = 2.0) -> str:
        """An `api` command on the live connection; NotConnectedError when there is none."""
        conn = self._conn
        if conn is None or not conn.connected:
            raise NotConnectedError()
        with gevent.Timeout(timeout):
            return conn.send(f"api {command}").data

    def unread_bytes(self) -> int:
        """Bytes FreeSWITCH has sent that the listener has not read yet (the socket's receive
        queue, FIONREAD): how far behind the event stream the daemon is; 0 when not connected."""
        conn = self._conn
        sock = getattr(conn, "sock", None) if conn is not None else None
        if sock is None:
            return 0
        try:
            return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]
        except (OSError, ValueError):  # closed meanwhile
            return 0


class EventListener:
    def __init__(self, host: str, port: int, password: str, on_event: Callable[[dict], None],
                 on_connect: Callable[[], None] = lambda: None,
                 backoff_min: float = 0.1, backoff_max: float = 5.0,
                 on_disconnect: Callable[[str], None] = lambda detail: None,
                 connection: LiveConnection | None = None):
        self.host, self.port = host, port
        self._password = password
        self.on_event = on_event
        self.on_connect = on_connect
        # A subscription ended while the listener goes on (not at stop()): what ended it.
        self.on_disconnect = on_disconnect
        self.backoff_min, self.backoff_max = backoff_min, backoff_max
        self.stats = ListenerStats()
        self.connected = gevent.event.Event()
        self._conn: _EventConnection | None = None
        self.connection = connection if connection is not None else LiveConnection()
        self._greenlet: gevent.Greenlet | None = None
        self._running = False

    def start(self) -> None:
        self._running = True
        self._greenlet = gevent.spawn(self._supervise)

    def stop(self, timeout: float = 5.0) -> None:
        self._running = False
        self._drop()
        if self._greenlet is not None:
            self._greenlet.join(timeout)
            self._greenlet.kill(block=False)

    def api(self, command: str, timeout: float = 2.0) -> str:
        """An `api` command on the live connection; NotConnectedError when there is none."""
        return self.connection.api(command, timeout)

    def _supervise(self) -> None:
        delay = self.backoff_min
        while self._running:
            subscribed, ended = False, "connection closed"
            try:
                self._connect()
                delay = self.backoff_min
                self.connection.attach(self._conn)
                self.connected.set()
                subscribed = True
                self.on_connect()
                while self._running and self._healthy():
                    gevent.sleep(0.2)
                if self._conn is not None and self._conn.stream_error:
                    ended = "stream broken"
            except (OSError, gevent.Timeout, ValueError, NotConnectedError) as exc:
                self.stats.failures += 1
                # ValueError is greenswitch's wrong-password answer: say so, without the password.
                what = "authentication refused" if isinstance(exc, ValueError) else type(exc).__name__
                ended = what
                log.warning("listener.connect_failed", host=self.host, port=self.port, error=what,
                            retry_in=round(delay, 2))
            finally:
                self.connected.clear()
                self._drop()
            if subscribed and self._running:
                try:
                    self.on_disconnect(ended)
                except Exception:
                    log.exception("listener.disconnect_handler_failed")
            if not self._running:
                break
            self.stats.reconnects += 1
            gevent.sleep(delay * (0.8 + 0.4 * random.random()))
            delay = min(delay * 2, self.backoff_max)

    def _healthy(self) -> bool:
        conn = self._conn
        if conn is None:
            return False
        # A frame greenswitch cannot read ends its reader (see esl.reader): the stream is out
        # of step from there, so start a fresh one.
        reader = conn._receive_events_greenlet
        if conn.stream_error or (conn.connected and reader is not None and reader.dead):
            self.stats.broken_streams += 1
            log.warning("listener.stream_broken", host=self.host, port=self.port, error=conn.stream_error)
            return False
        return conn.connected

    def _connect(self) -> None:
        conn = _EventConnection(self.host, self.port, self._password, timeout=COMMAND_TIMEOUT)
        self._conn = conn
        # greenswitch's wait for auth/request has no limit of its own.
        with gevent.Timeout(COMMAND_TIMEOUT):
            conn.connect()
        conn.register_handle("*", self._dispatch)
        with gevent.Timeout(COMMAND_TIMEOUT):
            reply = conn.send(f"event {EVENT_FORMAT} {CHANNEL_EVENTS}")
        if not reply.data.startswith("+OK"):
            raise NotConnectedError(reply.data)
        self.stats.connects += 1
        log.info("listener.connected", host=self.host, port=self.port)

    def _dispatch(self, event) -> None:
        self.stats.events += 1
        try:
            self.on_event(event.headers)
        except Exception:
            self.stats.handler_errors += 1
            log.exception("listener.event_error", event_name=event.headers.get("Event-Name"))

    def _drop(self) -> None:
        self.connection.detach()
        conn, self._conn = self._conn, None
        if conn is None:
            return
        conn._run = False
        conn.connected = False
        for greenlet in (conn._receive_events_greenlet, conn._process_events_greenlet):
            if greenlet is not None:
                greenlet.kill(block=False)
        sock = getattr(conn, "sock", None)
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass
