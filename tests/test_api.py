"""The push API on its own listener in the real daemon: bearer tokens, bad input as clear 4xx, the
same JSON as the CLI, the OpenAPI file the implementation must match, and /metrics."""
from __future__ import annotations

import json
from datetime import UTC, datetime

import gevent
import gevent.socket
import pytest
from click.testing import CliRunner
from office import Office
from prometheus_client.parser import text_string_to_metric_families

from fsrouter.binding_path import BindingPath
from fsrouter.cli import main
from fsrouter.http.api import SPEC_PATH
from fsrouter.http.client import request
from fsrouter.http.links import Links

TOKEN = "t0k3n-for-tests"
LINKS = Links(TOKEN)
CLIENT = "+380501234567"


@pytest.fixture(scope="module")
def office(tmp_path_factory):
    office = Office(tmp_path_factory.mktemp("api"), api_token=TOKEN, api_listen="127.0.0.1:0")
    yield office
    office.close()


@pytest.fixture(autouse=True)
def clean(office):
    BindingPath(office.store).remove_bindings(CLIENT)
    yield


def call(office, method, path, body=None, token=TOKEN, content_type="application/json", raw=None):
    host, port = office.daemon.api.address
    headers = {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    if data is not None and content_type:
        headers["Content-Type"] = content_type
    response = request(method, f"http://{host}:{port}{path}", body=data, headers=headers, timeout=5)
    parsed = None
    if response.headers.get("content-type", "").startswith("application/json") and response.body:
        parsed = json.loads(response.body)
    return response.status, parsed, response


BINDING = "/v1/clients/%2B380501234567/binding"


# -- auth ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method, path", [("GET", "/v1/agents"), ("GET", BINDING), ("PUT", BINDING),
                                          ("DELETE", BINDING), ("GET", "/v1/route?client=0501234567&group=sales")])
@pytest.mark.parametrize("token", [None, "", "wrong", TOKEN + "x", TOKEN[:-1]])
def test_missing_or_wrong_token_is_401_with_a_bearer_challenge(office, method, path, token):
    status, body, response = call(office, method, path, body={"agent": "1001"} if method == "PUT" else None,
                                  token=token)
    assert status == 401
    assert body["error"] == "unauthorized" and body["message"]
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert office.store.bindings_for(CLIENT) == {}


def test_a_basic_auth_header_is_not_a_bearer_token(office):
    host, port = office.daemon.api.address
    response = request("GET", f"http://{host}:{port}/v1/agents", headers={"Authorization": f"Basic {TOKEN}"})
    assert response.status == 401


def test_health_and_metrics_need_no_token(office):
    status, body, _ = call(office, "GET", "/health", token=None)
    assert status == 200 and body["status"] == "ok" and body["event_socket"] == "connected"


# -- bindings --------------------------------------------------------------------------------------

def test_put_get_delete_a_manual_binding(office):
    status, body, _ = call(office, "PUT", BINDING, {"agent": "1002", "why": "CRM: responsible changed"})
    assert status == 200
    assert (body["client"], body["agent"], body["source"], body["state"], body["why"]) == (
        CLIENT, "1002", "manual", "active", "CRM: responsible changed")
    assert office.store.bindings_for(CLIENT)["manual"].agent == "1002"
    status, got, _ = call(office, "GET", "/v1/clients/0501234567/binding")  # national form too
    assert status == 200 and got == body
    status, _, response = call(office, "DELETE", BINDING)
    assert status == 204 and response.body == b""
    assert call(office, "GET", BINDING)[0] == 404
    assert call(office, "DELETE", BINDING)[0] == 404


def test_binding_json_is_the_clis(office, tmp_path):
    call(office, "PUT", BINDING, {"agent": "1001", "expires_at": "2099-01-01T00:00:00Z"})
    _, body, _ = call(office, "GET", BINDING)
    shown = CliRunner().invoke(main, ["--db", office.url, "binding", "show", CLIENT, "--json"])
    (cli,) = [b for b in json.loads(shown.output)["bindings"] if b["source"] == "manual"]
    assert {k: cli[k] for k in body} == body


@pytest.mark.parametrize("body, raw, content_type, status, error", [
    (None, b"{not json", "application/json", 400, "bad_json"),
    (None, b"\xff\xfe", "application/json", 400, "bad_json"),
    (["1001"], None, "application/json", 400, "bad_json"),
    ({}, None, "application/json", 400, "bad_field"),
    ({"agent": 1001}, None, "application/json", 400, "bad_field"),
    ({"agent": "1001", "owner": "x"}, None, "application/json", 400, "bad_field"),
    ({"agent": "1001", "expires_at": "tomorrow"}, None, "application/json", 400, "bad_field"),
    ({"agent": "1001", "why": "x" * 201}, None, "application/json", 400, "bad_field"),
    ({"agent": "1001"}, None, "text/plain", 415, "unsupported_media_type"),
    ({"agent": "1001"}, None, None, 415, "unsupported_media_type"),
    (None, b'{"agent": "' + b"1" * 20000 + b'"}', "application/json", 413, "too_large"),
    ({"agent": "9999"}, None, "application/json", 422, "rejected"),
    ({"agent": "1001", "expires_at": "2001-01-01T00:00:00Z"}, None, "application/json", 422, "rejected"),
])
def test_bad_input_is_a_clear_4xx_and_changes_nothing(office, body, raw, content_type, status, error):
    got, answer, _ = call(office, "PUT", BINDING, body, raw=raw, content_type=content_type)
    assert (got, answer["error"]) == (status, error)
    assert answer["message"]
    assert office.store.bindings_for(CLIENT) == {}


@pytest.mark.parametrize("path", ["/v1/clients/not-a-number/binding", "/v1/clients/%2B1/binding",
                                  "/v1/clients/%00%0a/binding"])
def test_a_client_that_is_not_a_number_is_400(office, path):
    status, body, _ = call(office, "GET", path)
    assert (status, body["error"]) == (400, "bad_client")


def test_unknown_path_is_404_and_wrong_method_is_405(office):
    assert call(office, "GET", "/v1/nothing")[0] == 404
    status, body, response = call(office, "POST", "/v1/agents", {"x": 1})
    assert (status, body["error"]) == (405, "method_not_allowed")
    assert response.headers["allow"] == "GET"


# -- agents and the route ----------------------------------------------------------------------------

def test_agents_list(office):
    status, body, _ = call(office, "GET", "/v1/agents")
    assert status == 200
    assert [a["ext"] for a in body] == ["1001", "1002", "1003", "1004"]
    assert body[0] == {"ext": "1001", "name": "Agent 1001", "dial_string": "user/1001@127.0.0.1", "priority": 100,
                       "enabled": True, "groups": ["sales"], "crm_id": None}


def test_route_is_the_json_of_fsrouter_route(office):
    office.fake.agent("1003", answers_after=1, talk=3)  # registered, should presence ask
    with gevent.Timeout(5, False):  # mod_sofia's sofia::register reaches the daemon's presence
        while office.daemon.presence.registrations.cached("user/1003@127.0.0.1") != (True, "available"):
            gevent.sleep(0.01)
    call(office, "PUT", BINDING, {"agent": "1003"})
    status, body, _ = call(office, "GET", "/v1/route?client=0501234567&group=sales")
    cli = CliRunner().invoke(main, ["--db", office.url, "route", "0501234567", "--group", "sales", "--json"])
    cli_plan = json.loads(cli.output)
    # The plan's JSON (RoutePlan.as_dict); the CLI may show more about it (its settings' origins).
    assert status == 200 and body == {key: cli_plan[key] for key in body}
    assert set(body) >= {"client", "group", "agent", "source", "reason", "timeout", "strategy", "fallback"}
    assert (body["agent"], body["source"]) == ("1003", "manual")


@pytest.mark.parametrize("query, status, error", [
    ("", 400, "bad_parameter"), ("?client=0501234567", 400, "bad_parameter"),
    ("?client=0501234567&group=sales&debug=1", 400, "bad_parameter"),
    ("?client=garbage&group=sales", 400, "bad_client"),
    ("?client=0501234567&group=sales&at=soon", 400, "bad_parameter"),
    ("?client=0501234567&group=nope", 404, "unknown_group"),
])
def test_bad_route_queries(office, query, status, error):
    got, body, _ = call(office, "GET", "/v1/route" + query)
    assert (got, body["error"]) == (status, error)


# -- the OpenAPI file --------------------------------------------------------------------------------

def spec():
    return json.loads(SPEC_PATH.read_text())


def served_routes(office):
    """(path template, method) the app serves, from the framework's routing table."""
    return {(path, method.lower()) for path, method in office.daemon.api.app.served()}


def test_every_path_and_method_in_the_spec_is_served_and_nothing_else(office):
    documented = {(path, method) for path, item in spec()["paths"].items() for method in item
                  if method in ("get", "put", "post", "delete", "patch")}
    assert documented == served_routes(office)


def test_the_served_openapi_json_is_the_shipped_file(office):
    status, body, _ = call(office, "GET", "/openapi.json", token=None)
    assert status == 200 and body == spec()


def example_request(path, method):
    """A request for each documented status, as (path, method, body, token, content_type)."""
    p = path.replace("{client}", "%2B380501234567")
    good_route = "/v1/route?client=0501234567&group=sales"
    table = {
        ("/v1/clients/{client}/binding", "put"): {
            "200": (p, {"agent": "1001"}, TOKEN, "application/json"),
            "400": (p, {"agent": 1}, TOKEN, "application/json"),
            "401": (p, {"agent": "1001"}, None, "application/json"),
            "413": (p, {"agent": "1" * 20000}, TOKEN, "application/json"),
            "415": (p, {"agent": "1001"}, TOKEN, "text/plain"),
            "422": (p, {"agent": "9999"}, TOKEN, "application/json")},
        ("/v1/clients/{client}/binding", "get"): {
            "200": "bind", "400": ("/v1/clients/x/binding", None, TOKEN, None),
            "401": (p, None, None, None), "404": (p, None, TOKEN, None)},
        ("/v1/clients/{client}/binding", "delete"): {
            "204": "bind", "400": ("/v1/clients/x/binding", None, TOKEN, None),
            "401": (p, None, None, None), "404": (p, None, TOKEN, None)},
        ("/v1/route", "get"): {
            "200": (good_route, None, TOKEN, None), "400": ("/v1/route", None, TOKEN, None),
            "401": (good_route, None, None, None),
            "404": ("/v1/route?client=0501234567&group=nope", None, TOKEN, None)},
        ("/v1/agents", "get"): {"200": (p and "/v1/agents", None, TOKEN, None),
                                "401": ("/v1/agents", None, None, None)},
        ("/health", "get"): {"200": ("/health", None, None, None), "503": None},
        ("/metrics", "get"): {"200": ("/metrics", None, None, None)},
        ("/openapi.json", "get"): {"200": ("/openapi.json", None, None, None)},
        # The pages (tests/test_pages.py tries them in a browser): a link token in the query.
        ("/agent/{ext}", "get"): {"200": (LINKS.agent_url("", "1001"), None, None, None),
                                  "403": (LINKS.agent_url("", "1002").replace("1002?", "1001?"), None, None, None),
                                  "404": (LINKS.agent_url("", "9999"), None, None, None)},
        ("/agent/{ext}/events", "get"): {
            "200": ("stream", LINKS.agent_url("", "1001").replace("?", "/events?")),
            "403": ("/agent/1001/events?token=" + LINKS.board_token(), None, None, None),
            "404": (LINKS.agent_url("", "9999").replace("?", "/events?"), None, None, None)},
        ("/board", "get"): {"200": (LINKS.board_url(""), None, None, None),
                            "403": ("/board?token=" + LINKS.agent_token("1001"), None, TOKEN + "x", None)},
        ("/board/events", "get"): {"200": ("stream", LINKS.board_url("").replace("?", "/events?")),
                                   "403": ("/board/events", None, None, None)},
        ("/assets/{name}", "get"): {"200": ("/assets/live.js", None, None, None),
                                    "404": ("/assets/..%2Fapi.py", None, None, None)},
    }
    return table[(path, method)]


def first_event(office, path) -> tuple[int, str, bytes]:
    """(status, content type, the first event) of a Server-Sent Events stream, which never ends."""
    host, port = office.daemon.api.address
    with gevent.Timeout(5), gevent.socket.create_connection((host, port)) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        data = b""
        while b"\n\n" not in data.partition(b"event: state")[2]:  # (in a chunk of the chunked body)
            data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers["content-type"], body


def test_every_documented_status_is_what_the_app_answers(office, monkeypatch):
    for path, item in spec()["paths"].items():
        for method, operation in item.items():
            if method == "parameters":
                continue
            examples = example_request(path, method)
            assert set(examples) == set(operation["responses"]), (path, method)
            for status, example in examples.items():
                BindingPath(office.store).remove_bindings(CLIENT)
                if example is None:  # 503: the database away
                    monkeypatch.setattr(office.store.db, "execute_sql", _down)
                    got, body, _ = call(office, "GET", "/health", token=None)
                    monkeypatch.undo()
                    assert got == 503 and body["status"] == "unavailable"
                    continue
                if example[0] == "stream":
                    got, content_type, body = first_event(office, example[1])
                    assert (got, content_type.split(";")[0]) == (int(status), "text/event-stream"), (path, status)
                    assert b"event: state" in body
                    continue
                if example == "bind":
                    BindingPath(office.store).set_manual_binding(CLIENT, "1001", datetime.now(UTC))
                    example = (path.replace("{client}", "%2B380501234567"), None, TOKEN, None)
                target, body, token, content_type = example
                got, answer, response = call(office, method.upper(), target, body, token=token,
                                             content_type=content_type)
                assert str(got) == status, (path, method, status, answer)
                documented = operation["responses"][status]
                if "$ref" in documented:
                    documented = spec()["components"]["responses"][documented["$ref"].rsplit("/", 1)[1]]
                if "content" in documented:
                    (ctype,) = documented["content"]
                    assert response.headers["content-type"].startswith(ctype.split(";")[0]), (path, status)
                    schema = documented["content"][ctype]["schema"]
                    if "$ref" in schema:
                        required = spec()["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]].get("required", [])
                        assert set(required) <= set(answer), (path, status, answer)


def _down(*args, **kwargs):
    import peewee
    raise peewee.OperationalError("server closed the connection")


# -- metrics -----------------------------------------------------------------------------------------

def test_metrics_parse_with_the_prometheus_text_parser_and_count_calls(office):
    call(office, "PUT", BINDING, {"agent": "1002"})
    office.fake.agent("1002", answers_after=1, talk=3)
    office.call("0501234567")
    status, _, response = call(office, "GET", "/metrics", token=None)
    assert status == 200 and response.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(response.body.decode())}
    for name in ("fsrouter_calls_routed", "fsrouter_decision_seconds", "fsrouter_crm_lookup_seconds",
                 "fsrouter_crm_lookup_failures", "fsrouter_outbox_pending", "fsrouter_event_socket_reconnects",
                 "fsrouter_sticky_hit_ratio", "fsrouter_sticky_answered", "fsrouter_webhook_deliveries"):
        assert name in families, name
    routed = {(s.labels["route"], s.labels["source"]): s.value for s in families["fsrouter_calls_routed"].samples}
    assert routed[("sticky", "manual")] >= 1
    count = [s.value for s in families["fsrouter_decision_seconds"].samples if s.name.endswith("_count")]
    assert count[0] >= 1
    assert next(s.value for s in families["fsrouter_sticky_hit_ratio"].samples) > 0


def test_rate_limit_answers_429_to_a_flooding_address_and_recovers():
    from fsrouter.http.api import Api, RateLimit

    now = [0.0]
    limit = RateLimit(rate=2, burst=3, clock=lambda: now[0])
    assert [limit.allow("10.0.0.1") for _ in range(4)] == [True, True, True, False]
    assert limit.allow("10.0.0.2"), "another address has its own bucket"
    now[0] += 0.5  # one token back at 2 a second
    assert limit.allow("10.0.0.1") and not limit.allow("10.0.0.1")

    class NoService:
        store = None

    app = Api(NoService(), "t", rate_limit=RateLimit(rate=1, burst=1, clock=lambda: now[0]))
    statuses = []
    for _ in range(2):
        app({"PATH_INFO": "/health", "REQUEST_METHOD": "GET", "REMOTE_ADDR": "10.0.0.9"},
            lambda status, headers: statuses.append((status, dict(headers))))
    assert statuses[1][0].startswith("429") and statuses[1][1]["Retry-After"] == "1"
