"""greenswitch's outbound session, with the waits it lacks.

greenswitch matches a blocking application to its CHANNEL_EXECUTE_COMPLETE by application name
and waits without limit when FreeSWITCH closes the socket without a disconnect notice. Here every
execute carries an Event-UUID (FreeSWITCH echoes it as Application-UUID), commands can be
pipelined without waiting for their replies, and every wait is bounded and ends when the socket
does.
"""
from __future__ import annotations

import uuid as uuidlib
from contextlib import contextmanager

import gevent
from gevent.event import AsyncResult
from greenswitch.esl import NotConnectedError, OutboundSession, OutboundSessionHasGoneAway

from .headers import parse_headers

# The events of its own channel that a session reads; `myevents` sends some twenty per call, each
# 5-10 KB, and only these are parsed and handled (greenswitch's own hang-up hook included).
_WANTED = frozenset({"CHANNEL_EXECUTE_COMPLETE", "CHANNEL_HANGUP"})
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


class RouterSession(OutboundSession):
    """One greenlet reads the socket and hands each event to its handlers as it is read (no
    second greenlet and queue per call, as greenswitch has); when the reader ends, for whatever
    reason, every reply and completion still awaited fails at once, so a wait needs no polling."""

    def __init__(self, client_address, sock):
        self._completions: dict[str, AsyncResult] = {}
        self._corked: list[bytes] | None = None
        super().__init__(client_address, sock)

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

    # -- waiting -------------------------------------------------------------------------------
    def wait(self, result: AsyncResult, timeout: float | None):
        """The result's value; SessionGone when the socket goes, gevent.Timeout after `timeout`."""
        if not result.ready() and self._reader_gone():
            raise SessionGone()
        with gevent.Timeout(timeout):
            result.wait()  # set by its reply or completion, or failed by _reader_ended
        try:
            return result.get(block=False)
        except (OutboundSessionHasGoneAway, NotConnectedError) as exc:
            raise SessionGone() from exc

    def connect(self):
        try:
            return super().connect()
        except OutboundSessionHasGoneAway as exc:  # the caller went before the connect reply
            raise SessionGone() from exc

    def _reader_gone(self) -> bool:
        reader = self._receive_events_greenlet
        return reader is None or reader.dead or not self._run

    def _reader_ended(self, _reader) -> None:
        """The socket closed, the stream broke or the session was cut: nothing more will come."""
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
        self._receive_events_greenlet = gevent.spawn(self.receive_events)
        self._receive_events_greenlet.link(self._reader_ended)

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
