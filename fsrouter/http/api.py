"""The push API, the agent's screen pop and the office board: one Falcon app on fsrouter's listener.

A WSGI app (Falcon) served by gevent.pywsgi inside the daemon (off unless `api_token` is set).
Every /v1 path needs `Authorization: Bearer <api_token>` (compared in constant time); /health,
/metrics and /openapi.json do not (they show no client data); the pages (http/pages.py) take
their own link tokens. Bad input is a clear 4xx with a JSON body {"error": code, "message":
text}, never a 500. The paths, methods and statuses are those of openapi.json beside this file,
which the tests hold the app to.
"""
from __future__ import annotations

import hmac
import io
import json
import sys
from collections.abc import Callable
from contextlib import nullcontext
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from urllib.parse import parse_qs

import falcon
import falcon.inspect
import falcon.media
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


class ApiError(falcon.HTTPError):
    """A refusal the client can act on: its status, a code for programs and a message for people."""

    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(status, headers=headers)
        self.code, self.message = code, message


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else None


# What Falcon itself refuses (no route, a method the route lacks, a request line it cannot read),
# as the API's codes.
_FALCON_CODES = {404: "not_found", 405: "method_not_allowed", 400: "bad_request"}
# A request as a WSGI server hands it over always has these; an app called in-process (the fuzz
# target, a test) may leave some out, and Falcon reads them eagerly.
_WSGI_DEFAULTS = {"REQUEST_METHOD": "GET", "PATH_INFO": "/", "QUERY_STRING": "", "SERVER_NAME": "localhost",
                  "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http"}


def _canonical(name: str) -> str:
    """Falcon sends header names in lower case; HTTP does not care, but people and some
    clients read `Retry-After`, `WWW-Authenticate`."""
    return "-".join(part.upper() if part.lower() == "www" else part.capitalize() for part in name.split("-"))


class Api:
    """The WSGI app: Falcon routes and dispatches; this class holds the handlers of the push API.
    The pages (http.pages.Pages) mount themselves on the same Falcon app (`app`)."""

    def __init__(self, service: Service, token: str, lock=None, crm=None, metrics=None,
                 health: Callable[[], dict] | None = None, max_body: int = MAX_BODY,
                 rate_limit: RateLimit | None = None, presence=None):
        if not token:
            raise ValueError("the API needs a token")
        self.service = service
        self.store = service.store
        self._token = token.encode("utf-8")
        self.lock = lock if lock is not None else nullcontext()
        self.crm = crm
        self.presence = presence  # the daemon's (Service.route): GET /v1/route decides as a call would
        self.metrics = metrics
        self.health_extra = health
        self.max_body = max_body
        self.rate_limit = rate_limit or RateLimit()
        json_handler = falcon.media.JSONHandler(dumps=partial(json.dumps, ensure_ascii=False, indent=1))
        self.app = falcon.App(middleware=[_Guard(self)], cors_enable=False)
        self.app.resp_options.media_handlers.update({falcon.MEDIA_JSON: json_handler})
        self.app.req_options.strip_url_path_trailing_slash = False
        self.app.add_error_handler(Exception, self._unexpected)
        self.app.add_error_handler(falcon.HTTPError, self._refused)
        self.app.set_error_serializer(lambda req, resp, exc: None)  # _refused writes the body
        public, private = _Route(self, public=True), _Route(self, public=False)
        public.get("/health", self.health)
        public.get("/metrics", self.metrics_text)
        public.get("/openapi.json", self.spec)
        private.get("/v1/agents", self.list_agents)
        private.get("/v1/clients/{client}/binding", self.get_binding)
        private.put("/v1/clients/{client}/binding", self.put_binding)
        private.delete("/v1/clients/{client}/binding", self.delete_binding)
        private.get("/v1/route", self.route)
        for route in (public, private):
            route.mount()

    def served(self) -> set[tuple[str, str]]:
        """(path template, method) of every route the app serves (not Falcon's own OPTIONS)."""
        return {(route.path, method.method) for route in falcon.inspect.inspect_routes(self.app)
                for method in route.methods if not method.internal and method.method != "OPTIONS"}

    # -- WSGI ----------------------------------------------------------------------------------------
    def __call__(self, environ, start_response):
        for key, value in _WSGI_DEFAULTS.items():
            environ.setdefault(key, value)
        environ.setdefault("wsgi.input", io.BytesIO())
        environ.setdefault("wsgi.errors", sys.stderr)

        def canonical_start(status, headers, *exc_info):
            return start_response(status, [(_canonical(k), v) for k, v in headers], *exc_info)

        return self.app(environ, canonical_start)

    def _refused(self, req, resp, exc: falcon.HTTPError, params) -> None:
        status = exc.status_code
        code = getattr(exc, "code", None) or _FALCON_CODES.get(status, "bad_request")
        message = getattr(exc, "message", None)
        headers = dict(exc.headers or {})
        if status == 405:
            allowed = [m.strip() for m in headers.get("Allow", headers.get("allow", "")).split(",")]
            headers.pop("allow", None)
            headers["Allow"] = ", ".join(m for m in allowed if m and m != "OPTIONS")
            message = message or f"{req.method} is not allowed on {req.path}"
        elif status == 404:
            message = message or f"no such path: {req.path[:100]}"
        resp.status = status
        resp.set_headers(headers)
        resp.media = {"error": code, "message": message or exc.description or exc.title or "bad request"}

    def _unexpected(self, req, resp, exc: Exception, params) -> None:
        log.exception("api.error", path=req.path[:200])
        resp.status = 500
        resp.media = {"error": "internal", "message": "internal error, see the log"}

    def authorize(self, req) -> None:
        header = req.env.get("HTTP_AUTHORIZATION", "")
        scheme, _, given = header.partition(" ")
        challenge = {"WWW-Authenticate": 'Bearer realm="fsrouter"'}
        if scheme.lower() != "bearer" or not given.strip():
            raise ApiError(401, "unauthorized", "send Authorization: Bearer <api_token>", challenge)
        if not self.token_matches(given.strip()):
            raise ApiError(401, "unauthorized", "wrong token", challenge)

    def token_matches(self, given: str) -> bool:
        return hmac.compare_digest(given.encode("utf-8", "replace"), self._token)

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
                plan = self.service.route(number, query["group"], now=at, crm=answer, presence=self.presence)
            except ServiceError as exc:
                raise ApiError(404, "unknown_group", str(exc)) from None
        return 200, plan.as_dict(), {}


class _Guard:
    """Falcon middleware: the rate limit before routing; after it, the token of a private route,
    and no OPTIONS (the API never answered it, and a 200 to it would be a /v1 success without
    the token)."""

    def __init__(self, api: Api):
        self.api = api

    def process_request(self, req, resp) -> None:
        if not self.api.rate_limit.allow(req.env.get("REMOTE_ADDR", "")):
            raise ApiError(429, "too_many_requests", "slow down: too many requests from this address",
                           {"Retry-After": "1"})

    def process_resource(self, req, resp, resource, params) -> None:
        if resource is None:
            return
        if req.method == "OPTIONS":
            allowed = ", ".join(m for m in falcon.constants.COMBINED_METHODS if hasattr(resource, f"on_{m.lower()}")
                                and m != "OPTIONS")
            raise ApiError(405, "method_not_allowed", f"OPTIONS is not allowed on {req.path}", {"Allow": allowed})
        check = getattr(resource, "authorize", None)
        if check is not None:
            check(req)

    def process_response(self, req, resp, resource, req_succeeded) -> None:
        resp.set_header("Cache-Control", "no-store")


class _Handlers:
    """One path of the API as a Falcon resource: each method's handler takes the WSGI environ and
    the path's fields and returns (status, body, headers); a dict or list body is JSON."""

    def __init__(self, api: Api, public: bool):
        self._api, self._public = api, public

    def authorize(self, req) -> None:
        if not self._public:
            self._api.authorize(req)

    def _answer(self, handler, req, resp, **fields) -> None:
        status, body, headers = handler(req.env, **fields)
        resp.status = status
        resp.set_headers(headers)
        if isinstance(body, dict | list):
            resp.media = body
        elif body:
            resp.data = body


class _Route:
    """Collects handlers per path, then mounts each path as one resource with on_<method>."""

    def __init__(self, api: Api, public: bool):
        self.api, self.public = api, public
        self.paths: dict[str, dict[str, Callable]] = {}

    def get(self, path: str, handler: Callable) -> None:
        self.paths.setdefault(path, {})["GET"] = handler

    def put(self, path: str, handler: Callable) -> None:
        self.paths.setdefault(path, {})["PUT"] = handler

    def delete(self, path: str, handler: Callable) -> None:
        self.paths.setdefault(path, {})["DELETE"] = handler

    def mount(self) -> None:
        for path, methods in self.paths.items():
            resource = _Handlers(self.api, self.public)
            for method, handler in methods.items():
                setattr(resource, f"on_{method.lower()}",
                        lambda req, resp, _h=handler, _r=resource, **fields: _r._answer(_h, req, resp, **fields))
            self.api.app.add_route(path, resource)



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
    # Each open screen pop or board holds a connection for as long as it is open (its event
    # stream): room for an office of them beside the CRM's requests. A greenlet each, a few KB.
    def __init__(self, listen: str, app: Api, max_connections: int = 1000):
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
