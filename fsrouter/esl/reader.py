"""A fix to greenswitch's reader (esl.protocol.FixedProtocol uses it).

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

MAX_BODY = 16 * 1024 * 1024  # bytes; FreeSWITCH's largest events are some tens of KB


class StreamCut(ConnectionError):
    """The stream ended in the middle of a frame's body."""


def read_body(sock_file, length: int, errors: str = "strict") -> str:
    """`length` bytes of the stream as text. `errors` is bytes.decode's: "replace" for a JSON
    event, whose values FreeSWITCH writes as the bytes it got (a caller's name that is not UTF-8
    would otherwise end the stream at every event of that call; the plain form url-encodes them,
    and headers.parse_headers decodes them with "replace")."""
    if not 0 <= length <= MAX_BODY:  # read(-1) would wait for the end of the stream
        raise ValueError(f"frame body of {length} bytes (0 to {MAX_BODY})")
    data = sock_file.read(length)
    while len(data) < length:
        more = sock_file.read(length - len(data))
        if not more:
            raise StreamCut(f"the stream ended {length - len(data)} bytes short of a frame's end")
        data += more
    return data.decode("utf-8", errors)

