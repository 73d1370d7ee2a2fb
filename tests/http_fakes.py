"""Real local HTTP servers for the CRM tests: a CRM that can be slow, fail or talk garbage, and a
webhook receiver that records what it got. Both are gevent WSGI servers on 127.0.0.1, so they
run in the same loop as the daemon under test."""
from __future__ import annotations

import json
from urllib.parse import parse_qs

import gevent
from gevent.pywsgi import WSGIServer


class _Server:
    def __init__(self):
        self.server = WSGIServer(("127.0.0.1", 0), self._app, log=None, error_log=None)
        self.server.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.address[1]}"

    def stop(self) -> None:
        self.server.stop(timeout=1)

    def _app(self, environ, start_response):
        status, body, content_type = self.handle(environ)
        start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body)))])
        return [body]


class FakeCrm(_Server):
    """GET /responsible?kind=...&phone=... -> {"responsible": {"ext": ...}} from `answers`.

    mode: "ok", "slow" (answers after `delay` s), "fail" (HTTP 500), "garbage" (200, not JSON).
    """

    def __init__(self, answers: dict | None = None, mode: str = "ok", delay: float = 2.0, names: dict | None = None):
        self.answers = dict(answers or {})  # (kind, phone) or phone -> value
        self.names = dict(names or {})  # phone -> the client's name, answered as {"client": {"name": ...}}
        self.mode = mode
        self.delay = delay
        self.requests: list[dict] = []
        super().__init__()

    def lookup_url(self, kind: str) -> str:
        return f"{self.url}/responsible?kind={kind}&phone={{client}}"

    def handle(self, environ):
        query = {k: v[-1] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}
        self.requests.append({"query": query, "authorization": environ.get("HTTP_AUTHORIZATION")})
        if self.mode == "slow":
            gevent.sleep(self.delay)
        if self.mode == "fail":
            return "500 Internal Server Error", b'{"error": "down"}', "application/json"
        if self.mode == "garbage":
            return "200 OK", b"<html>surprise", "text/html"
        value = self.answers.get((query.get("kind"), query.get("phone")), self.answers.get(query.get("phone")))
        if value is None:
            return "404 Not Found", b'{"error": "no such client"}', "application/json"
        answer = {"responsible": {"ext": value}}
        if query.get("phone") in self.names:
            answer["client"] = {"name": self.names[query["phone"]]}
        return "200 OK", json.dumps(answer).encode(), "application/json"


class Receiver(_Server):
    """Records every POST (headers and raw body); answers `status`."""

    def __init__(self, status: int = 200):
        self.status = status
        self.received: list[dict] = []
        self.refused = 0
        super().__init__()

    def handle(self, environ):
        body = environ["wsgi.input"].read()
        if self.status >= 300:
            self.refused += 1
            return f"{self.status} Nope", b"", "text/plain"
        headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")}
        headers["content-type"] = environ.get("CONTENT_TYPE", "")
        self.received.append({"headers": headers, "body": body, "event": json.loads(body)})
        return "200 OK", b"", "text/plain"

    def events(self, kind: str | None = None) -> list[dict]:
        return [r["event"] for r in self.received if kind is None or r["event"]["type"] == kind]

    def wait_for(self, count: int, timeout: float = 5.0, kind: str | None = None) -> list[dict]:
        with gevent.Timeout(timeout, False):
            while len(self.events(kind)) < count:
                gevent.sleep(0.02)
        return self.events(kind)
