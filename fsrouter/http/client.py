"""One plain HTTP request, cooperative with gevent: what the CRM lookups and the webhooks send.

http.client over gevent's sockets (and gevent's ssl for https), so a slow server holds only the
greenlet that asked, never the loop that routes calls. No redirects are followed, a response body
is capped, and every failure is an HttpError with a one-line message. Callers bound the whole
exchange with gevent.Timeout; `timeout` here bounds each socket operation.
"""
from __future__ import annotations

import http.client
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


def request(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None,
            timeout: float = 5.0, max_body: int = MAX_BODY) -> Response:
    try:
        check_url(url)
    except ValueError as exc:
        raise HttpError(str(exc)) from None
    parts = urlsplit(url)
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=timeout, context=_context())
    else:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    conn._create_connection = gevent.socket.create_connection  # gevent's, whatever is patched
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        conn.request(method, target, body=body, headers=dict(headers or {}))
        answer = conn.getresponse()
        data = answer.read(max_body + 1)
        if len(data) > max_body:
            raise HttpError(f"{parts.hostname}: the response is over {max_body} bytes")
        return Response(answer.status, data, {k.lower(): v for k, v in answer.getheaders()})
    except HttpError:
        raise
    except (OSError, http.client.HTTPException, ValueError) as exc:
        detail = " ".join(str(exc).split()) or type(exc).__name__
        raise HttpError(f"{parts.hostname}: {detail}") from None
    finally:
        conn.close()
