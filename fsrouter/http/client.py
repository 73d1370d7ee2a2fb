"""Plain HTTP requests, cooperative with gevent: what the CRM lookups and the webhooks send.

http.client over gevent's sockets (and gevent's ssl for https), so a slow server holds only the
greenlet that asked, never the loop that routes calls. No redirects are followed, a response body
is capped, and every failure is an HttpError with a one-line message. Callers bound the whole
exchange with gevent.Timeout; `timeout` here bounds each socket operation.

request() opens a connection for one request. KeepAlive keeps connections open per origin for a
caller that sends many requests to few URLs (the webhook sender): at 100 calls/s a connect and
a close per POST were a third of a delivery's CPU (bench/README.md, "Live call events").
"""
from __future__ import annotations

import http.client
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import gevent.socket
import gevent.ssl

from ..config import check_url

MAX_BODY = 1 << 20  # bytes of a response body read at most


class HttpError(Exception):
    """The request could not be made or the answer not read (not a non-2xx status: that is a Response)."""


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


_ssl_context = None


def _context():
    global _ssl_context
    if _ssl_context is None:
        _ssl_context = gevent.ssl.create_default_context()
    return _ssl_context


def _split(url: str):
    try:
        check_url(url)
    except ValueError as exc:
        raise HttpError(str(exc)) from None
    return urlsplit(url)


def _connect(parts, timeout: float) -> http.client.HTTPConnection:
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=timeout, context=_context())
    else:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    conn._create_connection = gevent.socket.create_connection  # gevent's, whatever is patched
    return conn


def _exchange(conn: http.client.HTTPConnection, parts, method: str, body: bytes | None,
              headers: dict[str, str] | None, timeout: float, max_body: int) -> tuple[Response, bool]:
    """One request on `conn`; the response, and whether the connection may carry another."""
    if conn.sock is not None:
        conn.sock.settimeout(timeout)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    conn.request(method, target, body=body, headers=dict(headers or {}))
    answer = conn.getresponse()
    data = answer.read(max_body + 1)
    if len(data) > max_body:
        raise HttpError(f"{parts.hostname}: the response is over {max_body} bytes")
    reusable = not answer.will_close and answer.isclosed()  # the whole body was read
    return Response(answer.status, data, {k.lower(): v for k, v in answer.getheaders()}), reusable


def _failure(parts, exc: Exception) -> HttpError:
    detail = " ".join(str(exc).split()) or type(exc).__name__
    return HttpError(f"{parts.hostname}: {detail}")


_FAILURES = (OSError, http.client.HTTPException, ValueError)


def request(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None,
            timeout: float = 5.0, max_body: int = MAX_BODY) -> Response:
    parts = _split(url)
    conn = _connect(parts, timeout)
    try:
        return _exchange(conn, parts, method, body, headers, timeout, max_body)[0]
    except HttpError:
        raise
    except _FAILURES as exc:
        raise _failure(parts, exc) from None
    finally:
        conn.close()


# A kept connection the server closed while it sat idle fails the next request at once, before
# any answer (http.client's RemoteDisconnected, or a reset / broken pipe): that request is made
# again on a new connection. Nothing else is retried here.
_STALE = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


class KeepAlive:
    """request() over connections kept open per origin (scheme, host, port) between requests.

    At most `max_idle` idle connections per origin are kept, none for longer than `idle_for`
    seconds (servers close idle ones after a few seconds: gunicorn 2 s, Node 5 s; a request that
    finds its kept connection closed is made again on a new one). A connection whose response
    said `Connection: close`, was cut short or failed is closed, never reused. Each connection
    serves one request at a time: the greenlet that takes it gives it back."""

    def __init__(self, max_idle: int = 16, idle_for: float = 4.0, clock: Callable[[], float] = time.monotonic):
        self.max_idle = max_idle
        self.idle_for = idle_for
        self.clock = clock
        self._idle: dict[tuple, list[tuple[http.client.HTTPConnection, float]]] = {}
        self.opened = 0  # connections opened, for the tests and the bench

    def request(self, method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None,
                timeout: float = 5.0, max_body: int = MAX_BODY) -> Response:
        parts = _split(url)
        origin = (parts.scheme, parts.hostname, parts.port)
        conn = self._take(origin)
        reused = conn is not None
        if conn is None:
            conn = self._open(parts, timeout)
        try:
            try:
                response, reusable = _exchange(conn, parts, method, body, headers, timeout, max_body)
            except _STALE:
                if not reused:
                    raise
                conn.close()
                conn = self._open(parts, timeout)
                response, reusable = _exchange(conn, parts, method, body, headers, timeout, max_body)
        except HttpError:
            conn.close()
            raise
        except _FAILURES as exc:
            conn.close()
            raise _failure(parts, exc) from None
        except BaseException:  # a gevent.Timeout or a kill mid-exchange: the connection is out of step
            conn.close()
            raise
        if reusable:
            self._give_back(origin, conn)
        else:
            conn.close()
        return response

    def close(self) -> None:
        idle, self._idle = self._idle, {}
        for kept in idle.values():
            for conn, _since in kept:
                conn.close()

    def _open(self, parts, timeout: float) -> http.client.HTTPConnection:
        self.opened += 1
        return _connect(parts, timeout)

    def _take(self, origin) -> http.client.HTTPConnection | None:
        kept = self._idle.get(origin)
        now = self.clock()
        while kept:
            conn, since = kept.pop()
            if now - since <= self.idle_for:
                return conn
            conn.close()
        return None

    def _give_back(self, origin, conn: http.client.HTTPConnection) -> None:
        kept, now = self._idle.setdefault(origin, []), self.clock()
        while kept and now - kept[0][1] > self.idle_for:  # the oldest first: taking is newest first
            kept.pop(0)[0].close()
        if len(kept) >= self.max_idle:
            conn.close()
            return
        kept.append((conn, now))
