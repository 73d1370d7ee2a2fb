"""greenswitch's outbound session, with the waits it lacks.

greenswitch matches a blocking application to its CHANNEL_EXECUTE_COMPLETE by application name
and waits without limit when FreeSWITCH closes the socket without a disconnect notice. Here every
execute carries an Event-UUID (FreeSWITCH echoes it as Application-UUID), commands can be
pipelined without waiting for their replies, and every wait is bounded and ends when the socket
does.

greenswitch also gives every call two greenlets of its own (a reader and a dispatcher) and the
socket an 8 KB read buffer. Only the call's own greenlet ever waits on a session, so here it reads
the socket itself while it waits, through a 2 KB buffer: RSS per held call went from 41.9 to
26.8 KB in bench/ (memory section), and each event reaches its waiter without a greenlet switch.
"""
from __future__ import annotations

import uuid as uuidlib
from contextlib import contextmanager

import gevent
import structlog
from gevent.event import AsyncResult
from greenswitch.esl import NotConnectedError, OutboundSession, OutboundSessionHasGoneAway

from .headers import parse_headers
from .protocol import FixedEvent, FixedProtocol

log = structlog.get_logger("fsrouter.esl")

CONNECT_TIMEOUT = 5.0  # seconds for FreeSWITCH's reply to `connect`

# The events of its own channel that a session reads; `myevents` sends some twenty per call, each
# 5-10 KB, and only these are parsed and handled (greenswitch's own hang-up hook included).
_WANTED = frozenset({"CHANNEL_EXECUTE_COMPLETE", "CHANNEL_HANGUP"})
# What `myevents` subscribes besides those (mod_event_socket.c, FreeSWITCH 1.10), taken away with
# `nixevent` in the same write: FreeSWITCH then renders and sends ~5 events per call, not ~20.
_UNREAD = ("CHANNEL_ANSWER CHANNEL_APPLICATION CHANNEL_BRIDGE CHANNEL_CREATE CHANNEL_DATA CHANNEL_DESTROY "
           "CHANNEL_EXECUTE CHANNEL_HANGUP_COMPLETE CHANNEL_ORIGINATE CHANNEL_UUID CHANNEL_OUTGOING "
           "CHANNEL_PARK CHANNEL_PROGRESS CHANNEL_PROGRESS_MEDIA CHANNEL_STATE CHANNEL_UNBRIDGE "
           "CHANNEL_UNPARK DETECTED_SPEECH DTMF NOTALK TALK")
# What the router reads of the connect reply (outbound.CallRouter.run).
CONNECT_HEADERS = ("Unique-ID", "variable_uuid", "Caller-Caller-ID-Number", "variable_fsrouter_group")
_EVENT_NAME = "Event-Name: "


def _event_name(body: str) -> str | None:
    """The Event-Name of an event-plain body without parsing the rest; None when unsure."""
    at = body.find(_EVENT_NAME)
    if at < 0 or (at and body[at - 1] != "\n"):
        return None
    end = body.find("\n", at)
    name = body[at + len(_EVENT_NAME):end if end >= 0 else None].strip()
    return None if "%" in name else name


class SessionGone(Exception):
    """The caller hung up or FreeSWITCH closed the socket."""


class RouterSession(FixedProtocol, OutboundSession):
    """No greenlet of its own: the call's greenlet reads the socket whenever it waits, handing
    each frame to its handlers as it is read (greenswitch spends a reader greenlet, a second
    greenlet and a queue per call). When the stream ends, for whatever reason, every reply and
    completion still awaited fails at once."""

    READ_BUFFER = 2048  # bytes; frame heads are short lines, event bodies are read whole

    def __init__(self, client_address, sock):
        self._completions: dict[str, AsyncResult] = {}
        self._corked: list[bytes] | None = None
        self._ended = False
        super().__init__(client_address, sock)
        default, self.sock_file = self.sock_file, sock.makefile("rb", buffering=self.READ_BUFFER)
        default.close()  # never read: its 8 KB buffer is not allocated yet

    @contextmanager
    def pipelined(self):
        """Commands sent inside go out in one write, so FreeSWITCH reads them as one batch."""
        self._corked = []
        try:
            yield
        finally:
            batch, self._corked = b"".join(self._corked), None
            self._write(batch)

    # -- sending -------------------------------------------------------------------------------
    def send_nowait(self, data: str) -> AsyncResult:
        """Write one command; its reply lands in the returned result (replies come in order)."""
        if not self.connected or self._lingering:
            raise SessionGone()
        reply = AsyncResult()
        self._commands_sent.append(reply)
        raw = (data + "\n\n").encode("utf-8")
        if self._corked is not None:
            self._corked.append(raw)
        else:
            self._write(raw)
        return reply

    def own_events(self) -> AsyncResult:
        """Subscribe to this channel's events, only the kinds a session reads (no wait)."""
        self.send_nowait("myevents")
        return self.send_nowait(f"nixevent {_UNREAD}")

    def _write(self, raw: bytes) -> None:
        if not raw:
            return
        try:
            self.sock.sendall(raw)
        except OSError as exc:
            raise SessionGone() from exc

    def execute_nowait(self, app: str, arg: str | None = None) -> AsyncResult:
        """sendmsg execute; the result is set by the application's CHANNEL_EXECUTE_COMPLETE."""
        event_uuid = str(uuidlib.uuid4())
        done = AsyncResult()
        self._completions[event_uuid] = done
        lines = ["sendmsg", "call-command: execute", f"execute-app-name: {app}", f"Event-UUID: {event_uuid}"]
        if arg:
            if "\n" in arg or "\r" in arg:
                raise ValueError("an application argument cannot contain a line break")
            lines.append(f"execute-app-arg: {arg}")
        self.send_nowait("\n".join(lines))
        return done

    def command(self, data: str, timeout: float) -> str:
        return self.wait(self.send_nowait(data), timeout).headers.get("Reply-Text", "")

    # -- waiting (and reading) ------------------------------------------------------------------
    def wait(self, result: AsyncResult, timeout: float | None):
        """The result's value, reading frames until it is set; SessionGone when the stream ends,
        gevent.Timeout after `timeout` (the stream is then given up: a frame may be half read)."""
        try:
            with gevent.Timeout(timeout):
                while not result.ready() and self._read_frame():
                    pass
        except gevent.Timeout:
            self._end_stream()
            raise
        try:
            return result.get(block=False)
        except (OutboundSessionHasGoneAway, NotConnectedError) as exc:
            raise SessionGone() from exc
        except gevent.Timeout as exc:  # not ready: the stream ended first
            raise SessionGone() from exc

    def _read_frame(self) -> bool:
        """Read and handle one frame; False once the stream has ended."""
        if self._ended or not self._run:
            self._end_stream()
            return False
        head = []
        while True:
            try:
                line = self.sock_file.readline()
            except OSError:
                line = b""
            if not line:
                self._end_stream()
                return False
            if line == b"\n":
                if head:
                    break
                continue  # a blank line between frames is no frame
            head.append(line)
        try:
            self.handle_event(FixedEvent("".join(x.decode("utf-8") for x in head)))
        except Exception as exc:  # noqa: BLE001  (a frame that cannot be read ends the stream)
            self.stream_error = type(exc).__name__
            log.warning("esl.unreadable_frame", error=self.stream_error, detail=str(exc)[:200],
                        uuid=(self.session_data or {}).get("Unique-ID"))
            self._end_stream()
            return False
        return not self._ended

    def connect(self):
        if self._outbound_connected:
            return self.session_data
        reply = self.wait(self.send_nowait("connect"), CONNECT_TIMEOUT)
        # The connect reply is the channel's ~170 headers, ~25 KB as a dict, that greenswitch
        # would hold for the whole call: keep only what the router reads.
        data = reply.headers
        self.session_data = {name: data[name] for name in CONNECT_HEADERS if name in data}
        self._outbound_connected = True
        return self.session_data

    def _end_stream(self) -> None:
        """The socket closed, the stream broke or the session was cut: nothing more will come."""
        if self._ended:
            return
        self._ended = True
        self._run = False
        if not self._lingering:
            self.connected = False
        self._fail_waiting()

    def _fail_waiting(self) -> None:
        for done in self._completions.values():
            done.set_exception(OutboundSessionHasGoneAway())
        self._completions.clear()
        for reply in self._commands_sent:
            if not reply.ready():
                reply.set_exception(OutboundSessionHasGoneAway())

    # -- greenswitch hooks ---------------------------------------------------------------------
    def start_event_handlers(self) -> None:
        """Nothing to start: frames are read by whoever waits (see wait)."""

    def handle_event(self, event) -> None:
        """greenswitch's reader, minus the events of the channel that nobody here reads, and
        dispatching in place what greenswitch would queue for its second greenlet."""
        headers = event.headers
        if headers.get("Content-Type") != "text/event-plain":
            super().handle_event(event)  # replies are matched here; a disconnect notice is queued
            while not self._esl_event_queue.empty():
                self._dispatch(self._esl_event_queue.get_nowait())
            return
        body = self._read_socket(self.sock_file, int(headers["Content-Length"]))
        name = _event_name(body)
        if name is not None and name not in _WANTED:
            return
        headers.update(parse_headers(body))
        self._dispatch(event)

    def _dispatch(self, event) -> None:
        """What greenswitch's process_events does with one event."""
        headers = event.headers
        if headers.get("Content-Type") == "text/disconnect-notice":
            handlers = self.event_handlers.get("DISCONNECT")
        else:
            handlers = self.event_handlers.get(headers.get("Event-Name")) or self.event_handlers.get("*")
        if not handlers:
            return
        for handler in handlers:
            self._safe_exec_handler(handler, event)
        self._safe_exec_handler(self.after_handle, event)

    def after_handle(self, event) -> None:
        headers = event.headers
        if headers.get("Event-Name") != "CHANNEL_EXECUTE_COMPLETE":
            return
        done = self._completions.pop(headers.get("Application-UUID", ""), None)
        if done is not None:
            done.set(headers)

    def on_disconnect(self, event) -> None:
        super().on_disconnect(event)
        if not self._lingering:
            self.connected = False
        for done in self._completions.values():
            done.set_exception(OutboundSessionHasGoneAway())
        self._completions.clear()
