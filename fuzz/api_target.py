"""The push API's fuzz target: one HTTP request, as bytes, through the real WSGI app.

Used by the atheris entry point (fuzz_api.py) and by tests/test_fuzz_api.py, which replays the
corpus in corpus/api, mutations of it, and hypothesis-built requests through the same checks.
(It lives beside targets.py rather than in it: the push API came later, with issue 5.)

An input reads like the request it is, so the corpus can be written and read by hand:

    PUT /v1/clients/%2B380501234567/binding?x=1
    Authorization: Bearer fuzz-t0ken
    Content-Type: application/json

    {"agent": "1002", "why": "CRM"}

The first line is the method and the target (percent-decoded into PATH_INFO as a WSGI server
does, latin-1), then header lines up to an empty line, then the body: bytes, as they come. When
no Content-Length line is given, the body's length is sent, as a server would.

Invariants, whatever the request (`check_response`):
  * never a 5xx, and a status the API documents;
  * a Content-Length that matches the body (HTTP's exceptions aside: 204, HEAD);
  * a 4xx has a JSON body (none to a HEAD) {"error": code, "message": text} and leaves the store exactly as it
    was: bindings, their history and the webhook outbox (a change would have written an event);
  * nothing under /v1 answers 2xx without the right bearer token;
  * a 200 to a PUT is the manual binding the store now holds, for an E.164 client.
Every request runs in a transaction rolled back afterwards, so each starts from the same state.
"""
from __future__ import annotations

import io
import json
import re
from datetime import UTC, datetime
from urllib.parse import unquote_to_bytes

from fsrouter.binding_path import BindingPath
from fsrouter.core.model import MANUAL
from fsrouter.http.api import Api, RateLimit
from fsrouter.service import Service
from fsrouter.store import Store

TOKEN = "fuzz-t0ken"
AGENTS = ("1001", "1002", "1003")
BOUND_CLIENT = "+380501234567"  # has a manual binding to 1001, so GET and DELETE can succeed
DOCUMENTED = {200, 204, 400, 401, 404, 405, 413, 415, 422, 429}  # openapi.json, and 429 (rate limit)
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")
_BINDING_PATH = re.compile(r"/v1/clients/[^/]+/binding")


class ApiUnderTest:
    """The real Api over an in-memory SQLite store: agents, a group, one manual binding, and a
    webhook URL, so that every change would also write an outbox row."""

    def __init__(self, url: str = "sqlite:///:memory:") -> None:
        self.store = Store.open(url)
        self.store.add_group("sales")
        for ext in AGENTS:
            self.store.add_agent(ext, f"Agent {ext}", dial_string=f"user/{ext}@127.0.0.1", groups=["sales"])
        self.store.set_agent_crm_id("1002", "u-1002")
        BindingPath(self.store).set_manual_binding(BOUND_CLIENT, "1001", datetime.now(UTC), why="seed")
        self.store.webhook_urls = ("http://127.0.0.1:9/hooks",)
        self.service = Service(self.store, cache_ttl=0.0)
        # The daemon's limit is 50 a second per address; a fuzzer is faster than that.
        self.app = Api(self.service, TOKEN, rate_limit=RateLimit(rate=1e9, burst=1e9))

    def state(self):
        m = self.store.m
        return (self.store.list_bindings(), m.BindingHistory.select().count(), m.Outbox.select().count())

    def send(self, method: str, path: str, query: str = "", headers: dict | None = None, body: bytes = b""):
        """(status, headers, body bytes, state before, state after) of one request; rolled back."""
        environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query,
                   "REMOTE_ADDR": "127.0.0.1", "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8085",
                   "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(body)}
        named = {}
        for name, value in (headers or {}).items():
            key = name.strip().upper().replace("-", "_")
            key = key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + key
            # As gevent's WSGIServer builds the environ (pywsgi.py get_environ): a header sent
            # twice (Authorization and authorization) is one value joined with ",", not the last.
            named[key] = f"{named[key]},{value}" if key in named and key.startswith("HTTP_") else value
        environ.update(named)
        environ.setdefault("CONTENT_LENGTH", str(len(body)) if body else "")
        answer = {}

        def start_response(status, response_headers, exc_info=None):
            answer["status"], answer["headers"] = status, response_headers

        with self.store.db.atomic() as outer:
            before = self.state()
            chunks = self.app(environ, start_response)
            data = b"".join(chunks)
            after = self.state()
            outer.rollback()
        return answer["status"], dict(answer["headers"]), data, before, after


def parse_request(data: bytes) -> tuple[str, str, str, dict[str, str], bytes]:
    """(method, PATH_INFO, QUERY_STRING, headers, body) from the input's text form."""
    head, sep, body = data.partition(b"\n\n")
    if not sep:
        head, body = data, b""
    lines = head.decode("latin-1").split("\n")
    method, _, target = lines[0].strip("\r").partition(" ")
    path, _, query = target.partition("?")
    path = unquote_to_bytes(path).decode("latin-1")
    headers = {}
    for line in lines[1:]:
        name, colon, value = line.rstrip("\r").partition(":")
        if colon and name.strip():
            headers[name.strip()] = value.strip()
    return method or "GET", path or "/", query, headers, body


def check_response(api: ApiUnderTest, method: str, path: str, headers: dict, answer) -> int:
    """The invariants above for one answer; returns its status."""
    status_line, response_headers, body, before, after = answer
    status = int(status_line.split()[0])
    assert status in DOCUMENTED, (status_line, body[:300])
    # HTTP (RFC 9110 8.6, 9.3.2): a 204 has no Content-Length, and the answer to a HEAD no body
    # (its Content-Length is what a GET would get).
    head = method.strip().upper() == "HEAD"
    if status == 204:
        assert "Content-Length" not in response_headers and body == b""
    elif head:
        assert body == b"" and response_headers["Content-Length"].isdigit()
    else:
        assert response_headers["Content-Length"] == str(len(body))
    authorization = next((v for k, v in headers.items() if k.strip().lower() == "authorization"), "")
    if status >= 400:
        if not head:
            error = json.loads(body)
            assert isinstance(error.get("error"), str) and isinstance(error.get("message"), str), error
        assert after == before, f"a {status} changed the store"
    elif path.startswith("/v1/"):
        scheme, _, given = authorization.partition(" ")
        assert scheme.lower() == "bearer" and given.strip() == TOKEN, "a /v1 success without the token"
    if status == 200 and method.upper() == "PUT":
        answer_body = json.loads(body)
        assert _BINDING_PATH.fullmatch(path), path
        assert _E164.fullmatch(answer_body["client"]), answer_body
        stored = [b for b in after[0] if b.client == answer_body["client"] and b.source == MANUAL]
        assert [b.agent for b in stored] == [answer_body["agent"]], (stored, answer_body)
        assert answer_body["agent"] in AGENTS
    return status


_api: ApiUnderTest | None = None


def check_api(data: bytes) -> None:
    global _api
    if _api is None:
        _api = ApiUnderTest()
    method, path, query, headers, body = parse_request(data)
    check_response(_api, method, path, headers, _api.send(method, path, query, headers, body))
