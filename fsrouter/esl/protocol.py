"""greenswitch with fsrouter's fixes, as the classes every event-socket connection is made of.

greenswitch (0.0.19) needs two fixes, both kept in fsrouter's own classes rather than patched
into greenswitch's module, so that a connection is fixed because of what it is, not because
something happened to import fsrouter.esl first (`fsrouter route --live`, which imported nothing
else of esl, talked to FreeSWITCH with the unfixed parser):

* Header decoding (headers.parse_headers): greenswitch url-decodes a whole header block before
  splitting it into lines, so a caller ID of "123%0AVariable-X: y" became a header of its own.
  FixedEvent splits first and decodes each value.
* Frames it cannot read (reader.read_body, FixedProtocol.receive_events): its reader died with a
  traceback on a bad Content-Length or bytes that are not UTF-8 while the connection still looked
  connected, and looped for ever on a body the stream cut short. Here the stream ends, with one
  warning line and the reason in `stream_error`.

greenswitch cannot read `event json` at all (it would parse the JSON as header lines):
FixedProtocol.handle_event reads text/event-json frames itself (headers.json_headers).

fsrouter makes two kinds of connection, and both are these: InboundConnection (the event
listener's, and `route --live`'s through open_inbound) and esl.session.RouterSession (an outbound
socket's call), which is FixedProtocol over greenswitch's OutboundSession.
"""
from __future__ import annotations

import gevent
import structlog
from greenswitch.esl import ESLEvent, InboundESL, NotConnectedError

from .headers import json_headers, parse_headers
from .reader import read_body

log = structlog.get_logger("fsrouter.esl")


class FixedEvent(ESLEvent):
    """A frame's headers, each value decoded on its own (headers.parse_headers)."""

    def parse_data(self, data: str) -> None:
        self.headers.update(parse_headers(data))


class FixedProtocol:
    """Put before a greenswitch protocol class (InboundESL, OutboundSession): its reader builds
    FixedEvents, reads bodies with a bound, and ends the stream on a frame it cannot read."""

    stream_error: str | None = None  # why the stream ended, when a frame could not be read
    _read_socket = staticmethod(read_body)

    def handle_event(self, event) -> None:
        """greenswitch's, but for the events themselves, which go to _take_event. text/event-json
        (which greenswitch cannot read): its headers as a plain event's would be (the frame's
        Content-Type and Content-Length with them, unless the event has its own). A body that is
        not FreeSWITCH's event object raises, which ends the stream (receive_events). Per-event
        cost against plain: headers.json_headers. text/event-plain: as greenswitch reads it."""
        content_type = event.headers.get("Content-Type")
        if content_type == "text/event-json":
            frame = event.headers
            event.headers = json_headers(read_body(self.sock_file, int(frame["Content-Length"]), errors="replace"))
            for name, value in frame.items():  # the event's own (a job's Content-Length) win, as in plain
                event.headers.setdefault(name, value)
            self._take_event(event)
        elif content_type == "text/event-plain":
            event.parse_data(read_body(self.sock_file, int(event.headers["Content-Length"])))
            self._take_event(event)
        else:
            super().handle_event(event)

    def _take_event(self, event) -> None:
        """An event read: onto greenswitch's queue, whose greenlet (process_events) hands it on."""
        self._esl_event_queue.put(event)

    def receive_events(self) -> None:
        try:
            self._receive_frames()
        except Exception as exc:  # noqa: BLE001  (any frame greenswitch chokes on ends the stream)
            self.stream_error = type(exc).__name__
            self.connected = False
            session = getattr(self, "session_data", None) or {}
            log.warning("esl.unreadable_frame", error=self.stream_error, detail=str(exc)[:200],
                        uuid=session.get("Unique-ID"))

    def _receive_frames(self) -> None:
        """greenswitch's ESLProtocol.receive_events (0.0.19), line for line, but for the event
        class: a frame's head is read up to its blank line, then handled."""
        buf = ""
        while self._run:
            try:
                data = self.sock_file.readline()
                if data is not None:
                    data = data.decode("utf-8")
            except Exception:  # noqa: BLE001  (greenswitch's: the socket is gone)
                self._run = False
                self.connected = False
                self.sock.close()
                break
            if not data:
                if self.connected:
                    self.connected = False
                    self._run = False
                break
            if data == self._EOL:
                event = FixedEvent(buf)
                buf = ""
                self.handle_event(event)
                continue
            buf += data


class InboundConnection(FixedProtocol, InboundESL):
    """A connection to FreeSWITCH's event socket (fsrouter connects)."""


class EventSocketUnavailable(ConnectionError):
    """FreeSWITCH's event socket could not be reached, or refused the password; one line."""


def open_inbound(host: str, port: int, password: str, timeout: float,
                 connection_class: type[InboundConnection] = InboundConnection) -> InboundConnection:
    """A connected, authenticated InboundConnection; EventSocketUnavailable otherwise.

    greenswitch's own timeout covers only the TCP connect; its wait for auth/request has no
    limit, so the whole connect is bounded here."""
    conn = connection_class(host, port, password, timeout=timeout)
    where = f"{host}:{port}"
    try:
        with gevent.Timeout(timeout):
            conn.connect()
    except ValueError:  # greenswitch's answer to a wrong password
        raise EventSocketUnavailable(f"FreeSWITCH at {where} refused the event-socket password") from None
    except (OSError, gevent.Timeout, NotConnectedError) as exc:
        raise EventSocketUnavailable(f"cannot reach FreeSWITCH's event socket at {where} "
                                     f"({type(exc).__name__})") from None
    return conn
