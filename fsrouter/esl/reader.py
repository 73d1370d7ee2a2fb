"""A fix to greenswitch's reader, applied on import of fsrouter.esl.

greenswitch reads frames in a greenlet that dies on a frame it cannot read (a Content-Length
that is not a number, a frame without Content-Type, bytes that are not UTF-8, a reply nobody
asked for): gevent prints the traceback on stderr, and the connection still looks connected, so
an outbound session's call would wait for a bridge result that can never come (for hours). Here
the reader ends with one warning line, the connection is marked down and the reason is kept in
``stream_error``: the event listener reconnects, the call's session ends as if the socket had
closed (FreeSWITCH's dialplan goes on).

Its body reader also loops for ever, without yielding, when the socket closes in the middle of a
body (FreeSWITCH killed mid-write, or a Content-Length larger than what follows): the whole
daemon froze at 100% CPU. Here a body longer than MAX_BODY, or cut short by the end of the
stream, ends the stream like any other frame that cannot be read.
"""
from __future__ import annotations

import structlog
from greenswitch import esl as _greenswitch

log = structlog.get_logger("fsrouter.esl")

MAX_BODY = 16 * 1024 * 1024  # bytes; FreeSWITCH's largest events are some tens of KB

_receive_events = _greenswitch.ESLProtocol.receive_events


class StreamCut(ConnectionError):
    """The stream ended in the middle of a frame's body."""


def read_body(sock_file, length: int) -> str:
    if not 0 <= length <= MAX_BODY:  # read(-1) would wait for the end of the stream
        raise ValueError(f"frame body of {length} bytes (0 to {MAX_BODY})")
    data = sock_file.read(length)
    while len(data) < length:
        more = sock_file.read(length - len(data))
        if not more:
            raise StreamCut(f"the stream ended {length - len(data)} bytes short of a frame's end")
        data += more
    return data.decode("utf-8")


def receive_events(self) -> None:
    try:
        _receive_events(self)
    except Exception as exc:  # noqa: BLE001  (any frame greenswitch chokes on ends the stream)
        self.stream_error = type(exc).__name__
        self.connected = False
        session = getattr(self, "session_data", None) or {}
        log.warning("esl.unreadable_frame", error=self.stream_error, detail=str(exc)[:200],
                    uuid=session.get("Unique-ID"))


_greenswitch.ESLProtocol.stream_error = None
_greenswitch.ESLProtocol._read_socket = staticmethod(read_body)
_greenswitch.ESLProtocol.receive_events = receive_events
