"""The push API: the CRM reads and changes bindings over HTTP, on its own listener.

A WSGI app served by gevent.pywsgi inside the daemon (off unless `api_token` is set). Every
/v1 path needs `Authorization: Bearer <api_token>` (compared in constant time); /health,
/metrics and /openapi.json do not (they show no client data). Bad input is a clear 4xx with a JSON
body {"error": code, "message": text}, never a 500. The paths, methods and statuses are those of
openapi.json beside this file, which the tests hold the app to.
"""
from __future__ import annotations

import hmac
import json
import re
from collections.abc import Callable
from contextlib import nullcontext
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qs

import gevent.pool
import structlog
from gevent.pywsgi import WSGIServer

from ..core.model import MANUAL
from ..core.numbers import NotAClient
from ..service import Service, ServiceError, parse_time
from ..store import StoreError

log = structlog.get_logger("fsrouter.http.api")

SPEC_PATH = Path(__file__).with_name("openapi.json")
MAX_BODY = 16 * 1024
_WHY_MAX = 200
_STATUS_TEXT = {200: "OK", 204: "No Content", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
                405: "Method Not Allowed", 411: "Length Required", 413: "Payload Too Large",
                415: "Unsupported Media Type", 422: "Unprocessable Entity", 500: "Internal Server Error",
                429: "Too Many Requests", 503: "Service Unavailable"}


class RateLimit:
    """A token bucket per peer address: `rate` requests a second, bursts of `burst`.

    The API shares the daemon's one gevent loop with the calls being routed, so a client that
    floods it is slowed down here before it can take their time. `clock` is injected for tests.
    """

    def __init__(self, rate: float = 50.0, burst: int = 100, clock=None, max_peers: int = 10_000):
        import time
        self.rate, self.burst = float(rate), float(burst)
        self.clock = clock or time.monotonic
        self.max_peers = max_peers
        self._buckets: dict[str, tuple[float, float]] = {}

    def allow(self, peer: str) -> bool:
        now = self.clock()
        tokens, last = self._buckets.get(peer, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if len(self._buckets) >= self.max_peers and peer not in self._buckets:
            self._buckets.clear()  # a bounded map: forgetting every peer only lets them burst again
        if tokens < 1.0:
            self._buckets[peer] = (tokens, now)
            return False
        self._buckets[peer] = (tokens - 1.0, now)
        return True


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else None


class Api:
    def __init__(self, service: Service, token: str, lock=None, crm=None, metrics=None,
                 health: Callable[[], dict] | None = None, max_body: int = MAX_BODY,
                 rate_limit: RateLimit | None = None):
        if not token:
            raise ValueError("the API needs a token")
        self.service = service
        self.store = service.store
        self._token = token.encode("utf-8")
        self.lock = lock if lock is not None else nullcontext()
        self.crm = crm
        self.metrics = metrics
        self.health_extra = health
        self.max_body = max_body
        self.rate_limit = rate_limit or RateLimit()
        # (pattern, {method: handler}, needs the token)
        self.routes = [
            (re.compile(r"/health"), {"GET": self.health}, False),
            (re.compile(r"/metrics"), {"GET": self.metrics_text}, False),
            (re.compile(r"/openapi\.json"), {"GET": self.spec}, False),
            (re.compile(r"/v1/agents"), {"GET": self.list_agents}, True),
            (re.compile(r"/v1/clients/(?P<client>[^/]+)/binding"),
             {"GET": self.get_binding, "PUT": self.put_binding, "DELETE": self.delete_binding}, True),
            (re.compile(r"/v1/route"), {"GET": self.route}, True),
        ]

    # -- WSGI ----------------------------------------------------------------------------------------
    def __call__(self, environ, start_response):
        try:
            status, body, headers = self._dispatch(environ)
        except ApiError as exc:
            status, headers = exc.status, exc.headers
            body = {"error": exc.code, "message": exc.message}
        except Exception:
            log.exception("api.error", path=environ.get("PATH_INFO", "")[:200])
            status, headers, body = 500, {}, {"error": "internal", "message": "internal error, see the log"}
        if isinstance(body, dict | list):
            body = json.dumps(body, ensure_ascii=False, indent=1).encode("utf-8") + b"\n"
            headers = {"Content-Type": "application/json", **headers}
        body = body or b""
        headers = {**headers, "Content-Length": str(len(body)), "Cache-Control": "no-store"}
        start_response(f"{status} {_STATUS_TEXT.get(status, '')}".strip(), list(headers.items()))
        return [body]

    def _dispatch(self, environ):
        if not self.rate_limit.allow(environ.get("REMOTE_ADDR", "")):
            raise ApiError(429, "too_many_requests", "slow down: too many requests from this address",
                           {"Retry-After": "1"})
        path = environ.get("PATH_INFO", "") or "/"
        method = environ.get("REQUEST_METHOD", "GET").upper()
        for pattern, methods, private in self.routes:
            match = pattern.fullmatch(path)
            if match is None:
                continue
            handler = methods.get(method)
            if handler is None:
                raise ApiError(405, "method_not_allowed", f"{method} is not allowed on {path}",
                               {"Allow": ", ".join(methods)})
            if private:
                self._authorize(environ)
            return handler(environ, **match.groupdict())
        raise ApiError(404, "not_found", f"no such path: {path[:100]}")

    def _authorize(self, environ) -> None:
        header = environ.get("HTTP_AUTHORIZATION", "")
        scheme, _, given = header.partition(" ")
        challenge = {"WWW-Authenticate": 'Bearer realm="fsrouter"'}
        if scheme.lower() != "bearer" or not given.strip():
            raise ApiError(401, "unauthorized", "send Authorization: Bearer <api_token>", challenge)
        if not hmac.compare_digest(given.strip().encode("utf-8", "replace"), self._token):
            raise ApiError(401, "unauthorized", "wrong token", challenge)

    # -- input ---------------------------------------------------------------------------------------
    def _json_body(self, environ) -> dict:
        content_type = environ.get("CONTENT_TYPE", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise ApiError(415, "unsupported_media_type", "send the body as Content-Type: application/json")
        length = environ.get("CONTENT_LENGTH") or ""
        if length:
            if not (length.isascii() and length.isdigit()):  # "²" is a digit to isdigit(), not to int()
                raise ApiError(400, "bad_request", "bad Content-Length")
            if len(length.lstrip("0")) > 9 or int(length) > self.max_body:  # int() refuses 4,301 digits
                raise ApiError(413, "too_large", f"the body is over {self.max_body} bytes")
        raw = environ["wsgi.input"].read(self.max_body + 1)
        if len(raw) > self.max_body:
            raise ApiError(413, "too_large", f"the body is over {self.max_body} bytes")
        try:
            body = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):  # RecursionError: "[[[[..." nested deep
            raise ApiError(400, "bad_json", "the body is not JSON") from None
        if not isinstance(body, dict):
            raise ApiError(400, "bad_json", "the body must be a JSON object")
        return body

    def _client(self, raw: str) -> str:
        try:
            return self.service.normalize(raw)
        except NotAClient as exc:
            raise ApiError(400, "bad_client", str(exc)) from None

    @staticmethod
    def _query(environ) -> dict[str, str]:
        try:
            parsed = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True, strict_parsing=False,
                              max_num_fields=20)
        except ValueError as exc:
            raise ApiError(400, "bad_request", str(exc)) from None
        return {key: values[-1] for key, values in parsed.items()}

    # -- handlers ------------------------------------------------------------------------------------
    def health(self, environ):
        report = {"status": "ok", "database": "ok"}
        try:
            with self.lock:
                self.store.db.execute_sql("SELECT 1").fetchone()
        except Exception as exc:
            report.update(status="unavailable", database=f"unavailable: {' '.join(str(exc).split())[:200]}")
        if self.health_extra is not None:
            report.update(self.health_extra())
        return (200 if report["status"] == "ok" else 503), report, {}

    def metrics_text(self, environ):
        if self.metrics is None:
            raise ApiError(404, "not_found", "metrics are not kept here")
        return 200, self.metrics.render(), {"Content-Type": self.metrics.content_type}

    def spec(self, environ):
        return 200, SPEC_PATH.read_bytes(), {"Content-Type": "application/json"}

    def list_agents(self, environ):
        with self.lock:
            agents = self.store.agents()
        return 200, [{"ext": a.ext, "name": a.name, "dial_string": a.dial_string, "priority": a.priority,
                      "enabled": a.enabled, "groups": sorted(a.groups), "crm_id": a.crm_id}
                     for a in agents.values()], {}

    def _manual_binding(self, number: str) -> dict:
        """The manual binding of the client of `number` (a linked number: its client's), and its
        `state` as `binding show NUMBER` says it: the ownership rule, without a group."""
        standing = self.service.standing_of(number)
        verdict = standing.anywhere.of(MANUAL)
        if verdict is None:
            raise ApiError(404, "no_binding", f"{number} has no manual binding")
        binding = verdict.binding
        return {"client": binding.client, "agent": binding.agent, "source": binding.source,
                "at": _iso(binding.at), "expires_at": _iso(binding.expires_at), "why": binding.why,
                "state": standing.state(MANUAL)}

    def get_binding(self, environ, client):
        number = self._client(client)
        with self.lock:
            return 200, self._manual_binding(number), {}

    def put_binding(self, environ, client):
        number = self._client(client)
        body = self._json_body(environ)
        unknown = sorted(set(body) - {"agent", "expires_at", "why"})
        if unknown:
            raise ApiError(400, "bad_field", f"unknown field {unknown[0]!r}: agent, expires_at, why")
        agent = body.get("agent")
        if not isinstance(agent, str) or not agent:
            raise ApiError(400, "bad_field", "agent: the agent's extension, a string")
        expires_at = body.get("expires_at")
        if expires_at is not None:
            if not isinstance(expires_at, str):
                raise ApiError(400, "bad_field", "expires_at: an ISO 8601 time or null")
            try:
                expires_at = parse_time(expires_at)
            except ValueError as exc:
                raise ApiError(400, "bad_field", f"expires_at: {exc}") from None
        why = body.get("why", "set by the CRM")
        if not isinstance(why, str) or len(why) > _WHY_MAX:
            raise ApiError(400, "bad_field", f"why: a string of at most {_WHY_MAX} characters")
        with self.lock:
            try:
                self.service.bindings.set_manual_binding(number, agent, datetime.now(UTC), expires_at=expires_at,
                                                         why=why or "set by the CRM")
            except StoreError as exc:
                raise ApiError(422, "rejected", str(exc)) from None
            return 200, self._manual_binding(number), {}

    def delete_binding(self, environ, client):
        number = self._client(client)
        with self.lock:
            removed = self.service.bindings.remove_bindings(number, (MANUAL,))
        if not removed:
            raise ApiError(404, "no_binding", f"{number} has no manual binding")
        return 204, b"", {}

    def route(self, environ):
        query = self._query(environ)
        unknown = sorted(set(query) - {"client", "group", "at"})
        if unknown:
            raise ApiError(400, "bad_parameter", f"unknown parameter {unknown[0]!r}: client, group, at")
        if not query.get("client") or not query.get("group"):
            raise ApiError(400, "bad_parameter", "give client and group, e.g. ?client=0501234567&group=sales")
        number = self._client(query["client"])
        at = None
        if query.get("at"):
            try:
                at = parse_time(query["at"])
            except ValueError as exc:
                raise ApiError(400, "bad_parameter", f"at: {exc}") from None
        answer = self.service.crm_answer(number, self.crm)  # outside the lock: the CRM may take its time
        with self.lock:
            try:
                plan = self.service.route(number, query["group"], now=at, crm=answer)
            except ServiceError as exc:
                raise ApiError(404, "unknown_group", str(exc)) from None
        return 200, plan.as_dict(), {}


def parse_listen(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


class _ErrorLog:
    def write(self, text: str) -> None:
        text = " ".join(str(text).split())
        if text:
            log.warning("api.server", detail=text[:300])

    def flush(self) -> None:
        pass


class ApiServer:
    def __init__(self, listen: str, app: Api, max_connections: int = 100):
        self.app = app
        self.server = WSGIServer(parse_listen(listen), app, log=None, error_log=_ErrorLog(),
                                 spawn=gevent.pool.Pool(max_connections))

    @property
    def address(self) -> tuple[str, int]:
        return self.server.address

    def start(self) -> None:
        self.server.start()

    def stop(self, timeout: float = 2.0) -> None:
        self.server.stop(timeout=timeout)
