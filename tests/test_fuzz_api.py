"""Fuzzing the push API: hypothesis sends the real WSGI app (and, for bytes on the wire, the real
gevent server) arbitrary bodies, hostile numbers, queries and headers.

The checks are fuzz/api_target.py's, which the atheris target runs too: never a 5xx, a JSON
4xx for what is refused, and a refused request leaves the store exactly as it was (bindings,
their history, the webhook outbox); nothing under /v1 succeeds without the token. On top of
that, bodies are judged against an oracle of what a valid binding is: the API says 200 exactly
when the oracle does, 422 for an unknown agent or a past expiry, 400 for the rest.
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from urllib.parse import quote

import gevent
import gevent.socket
import pytest
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from fsrouter.http.api import MAX_BODY, ApiServer
from fsrouter.service import parse_time

FUZZ = Path(__file__).resolve().parents[1] / "fuzz"
sys.path.insert(0, str(FUZZ))
import api_target
from api_target import AGENTS, BOUND_CLIENT, TOKEN, ApiUnderTest, check_response
from mutations import mutated

FAST = hsettings(max_examples=250, deadline=None, database=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
AUTH = {"Authorization": f"Bearer {TOKEN}"}
JSON = {**AUTH, "Content-Type": "application/json"}
NEW_CLIENT = "+380671112233"  # no binding yet
BINDING = f"/v1/clients/{NEW_CLIENT}/binding"
KEYS = ("agent", "expires_at", "why")


@pytest.fixture(scope="module")
def api():
    under_test = ApiUnderTest()
    yield under_test
    under_test.store.close()


def send(api, method, path, headers=None, body=b"", query=""):
    answer = api.send(method, path, query, headers or {}, body)
    status = check_response(api, method, path, headers or {}, answer)
    return status, (json.loads(answer[2]) if answer[2] else None)


# -- bodies ------------------------------------------------------------------------------------

ANY_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)
HOSTILE_NUMBERS = st.one_of(
    st.integers(), st.integers(min_value=10 ** 18, max_value=10 ** 40), st.floats(allow_nan=True),
    st.sampled_from([0, -1, 2 ** 63, -(2 ** 63) - 1, 1e308, -1e308, 5e-324, math.inf, -math.inf, math.nan]))
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | HOSTILE_NUMBERS | ANY_TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(ANY_TEXT, inner, max_size=4), max_leaves=8)
TIMES = ["2099-01-01T00:00:00Z", "2099-01-01 00:00", "2001-01-01T00:00:00Z", "9999-12-31T23:59:59-01:00",
         "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59.999999+00:00", "tomorrow", "", " ", "2024-02-30",
         "2099-01-01T00:00:00+99:00", "1" * 50, "\x00", "2099-01-01T00:00:00Z\n"]
AGENT_VALUES = st.one_of(st.sampled_from(list(AGENTS) + ["9999", "", " 1001", "1001 ", "1001\x00", "u-1002",
                                                         "1" * 5000, "../1001", "1001\n1002"]), JSON_VALUES)
WHY_VALUES = st.one_of(ANY_TEXT, st.text(min_size=195, max_size=205), st.sampled_from(["\x00", "a\nb", "\u2028"]),
                       JSON_VALUES)
BODIES = st.one_of(
    st.fixed_dictionaries({}, optional={"agent": AGENT_VALUES, "expires_at": st.one_of(st.sampled_from(TIMES),
                                                                                       JSON_VALUES),
                                        "why": WHY_VALUES}),
    st.fixed_dictionaries({"agent": st.sampled_from(AGENTS)}, optional={"expires_at": st.sampled_from(TIMES)}),
    st.dictionaries(ANY_TEXT, JSON_VALUES, max_size=4),
    JSON_VALUES,
)


def expected(body) -> int:
    """What the API must answer to a PUT of this (JSON) body: the oracle."""
    if not isinstance(body, dict) or set(body) - set(KEYS):
        return 400
    agent, expires_at, why = body.get("agent"), body.get("expires_at"), body.get("why", "set by the CRM")
    if not isinstance(agent, str) or not agent or not isinstance(why, str) or len(why) > 200:
        return 400
    if expires_at is not None:
        if not isinstance(expires_at, str):
            return 400
        try:
            expires_at = parse_time(expires_at)
        except ValueError:
            return 400
        if expires_at.year < 2050:
            return 422  # in the past
    return 200 if agent in AGENTS else 422


@FAST
@given(BODIES)
@example({"agent": "1002"})
@example({"agent": "1002", "expires_at": "9999-12-31T23:59:59-01:00"})
@example({"agent": 1e999})
def test_a_json_body_is_200_exactly_when_it_is_a_valid_binding_else_a_4xx_that_changes_nothing(api, body):
    raw = json.dumps(body).encode()  # NaN and Infinity too, which json.loads reads back
    status, answer = send(api, "PUT", BINDING, JSON, raw)
    assert status == expected(body), (body, answer)
    if status == 200:
        assert (answer["client"], answer["agent"], answer["source"]) == (NEW_CLIENT, body["agent"], "manual")


@FAST
@given(st.one_of(st.binary(max_size=200), ANY_TEXT.map(str.encode),
                 st.integers(1, 6000).map(lambda n: b"[" * n), st.integers(1, 3000).map(lambda n: b'{"a":' * n),
                 st.integers(4301, 6000).map(lambda n: b'{"agent": ' + b"9" * n + b"}")))
@example(b"[" * 5000)  # found by this test: json.loads raised RecursionError, the API answered 500
@example(b'{"agent": "1001"' + b"\x00")
@example(b"\xef\xbb\xbf{}")
def test_a_body_that_is_no_json_object_is_400_and_changes_nothing(api, raw):
    try:
        parsed = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        parsed = None
    else:
        if isinstance(parsed, dict):
            raw = b"[" + raw + b"]"  # an object by chance: make it an array
    status, answer = send(api, "PUT", BINDING, JSON, raw)
    assert (status, answer["error"]) == (400, "bad_json"), raw[:100]


@hsettings(max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(MAX_BODY + 1, 4 * MAX_BODY), st.sampled_from(["true", "", "small", "absent"]))
def test_a_body_over_16_kib_is_413_whatever_its_content_length_says(api, size, length):
    raw = b'{"agent": "1001", "why": "' + b"x" * size + b'"}'
    headers = dict(JSON)
    if length == "true":
        headers["Content-Length"] = str(len(raw))
    elif length == "small":  # a lie: the app reads no more than it allows anyway
        headers["Content-Length"] = "20"
    elif length == "":
        headers["Content-Length"] = ""
    status, answer = send(api, "PUT", BINDING, headers, raw)
    assert (status, answer["error"]) == (413, "too_large")


@FAST
@given(st.one_of(ANY_TEXT, st.sampled_from(["text/plain", "application/x-www-form-urlencoded", "json",
                                            "application/jsonp", "application/json-patch+json", "*/*",
                                            "application/json\x00", "multipart/form-data; boundary=x"])))
def test_a_body_sent_as_another_media_type_is_415(api, content_type):
    if content_type.split(";")[0].strip().lower() == "application/json":
        content_type = "text/" + content_type
    status, answer = send(api, "PUT", BINDING, {**AUTH, "Content-Type": content_type}, b'{"agent": "1001"}')
    assert (status, answer["error"]) == (415, "unsupported_media_type")


@pytest.mark.parametrize("content_type", ["application/json", "APPLICATION/JSON", "application/json; charset=utf-8",
                                          " application/json ;x=y"])
def test_application_json_with_any_case_and_parameters_is_taken(api, content_type):
    assert send(api, "PUT", BINDING, {**AUTH, "Content-Type": content_type}, b'{"agent": "1003"}')[0] == 200


# -- hostile numbers ---------------------------------------------------------------------------

DIGITS = st.sampled_from(["0123456789", "\uff10\uff11\uff12\uff13\uff14\uff15\uff16\uff17\uff18\uff19",
                          "\u0660\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669", "\u00b2\u00b3\u00b9"])
NUMBERS = st.one_of(
    ANY_TEXT,
    st.builds(lambda prefix, digits, n, junk: prefix + digits[:1] * 2 + digits * n + junk,
              st.sampled_from(["", "+", "00", "+380", "0", " ", "380", "-", "%2B"]), DIGITS, st.integers(0, 3),
              st.sampled_from(["", " ", "\n", ",", "|", "${x}", "\x00", "\u200b", "\ufeff", "#", "*", "e9", ".5"])),
    st.integers(8, 5000).map(lambda n: "+" + "9" * n),
    st.integers(min_value=-(10 ** 30), max_value=10 ** 30).map(str),
    st.sampled_from(["0501234567", "+380501234567", "380501234567", "+1", "+", "0", "nan", "1e308", "-0501234567"]),
)


def client_path(text: str) -> str:
    """PATH_INFO for /v1/clients/<text>/binding as a server hands it over: percent-decoded, latin-1."""
    return "/v1/clients/" + text.encode("utf-8").decode("latin-1") + "/binding"


@FAST
@given(NUMBERS, st.sampled_from(["GET", "PUT", "DELETE"]))
@example("0501234567", "DELETE")
@example("+" + "9" * 5000, "PUT")
def test_a_hostile_number_in_the_path_is_400_or_its_e164_client(api, number, method):
    body = b'{"agent": "1002"}' if method == "PUT" else b""
    status, answer = send(api, method, client_path(number), JSON if method == "PUT" else AUTH, body)
    if status == 400:
        assert answer["error"] == "bad_client"
    elif status == 404 and "/" not in number and number:
        assert answer["error"] == "no_binding"
    if status == 200 and method == "GET":  # only the seeded client has a manual binding
        assert answer["client"] == BOUND_CLIENT


TIMES_IN_QUERIES = st.one_of(st.sampled_from(TIMES + ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z",
                                                      "0001-01-01T00:00:00-14:00", "1e999", "-1"]), ANY_TEXT)


@FAST
@given(st.one_of(
    st.builds(lambda client, group, at, extra: "&".join(
        part for part in (f"client={quote(client)}", f"group={quote(group)}",
                          f"at={quote(at)}" if at is not None else "", extra) if part),
        NUMBERS, st.one_of(st.just("sales"), ANY_TEXT), st.none() | TIMES_IN_QUERIES,
        st.sampled_from(["", "debug=1", "client=x", "&&", "=", "%", "%zz", "group", "at="])),
    st.integers(15, 40).map(lambda n: "&".join(f"k{i}=v" for i in range(n))),
    st.text(max_size=80)))
@example("client=0501234567&group=sales&at=0001-01-01T00:00:00Z")
@example("client=0501234567&group=sales&at=9999-12-31T23:59:59Z")
def test_a_hostile_route_query_is_200_400_or_404(api, query):
    status, answer = send(api, "GET", "/v1/route", AUTH, query=query)
    assert status in (200, 400, 404), (query, answer)
    if status == 200:
        assert answer["group"] == "sales"


# -- hostile headers ---------------------------------------------------------------------------

LATIN1 = st.text(st.characters(min_codepoint=0, max_codepoint=255), max_size=60)
AUTHORIZATIONS = st.one_of(
    LATIN1, st.sampled_from([f"Bearer {TOKEN}", f"bearer   {TOKEN}  ", f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}",
                             f"Basic {TOKEN}", f"Bearer {TOKEN}\x00", f"Bearer\t{TOKEN}", "Bearer", "Bearer ",
                             f"Bearer {TOKEN.upper()}", "Bearer " + "x" * 10000, f"{TOKEN}", f"Bearer Bearer {TOKEN}"]),
    LATIN1.map(lambda junk: f"Bearer {junk}"))
CONTENT_LENGTHS = st.one_of(
    st.sampled_from(["", "0", "17", "-1", "+17", " 17", "17 ", "1e3", "0x11", "\u00b2", "\u0663", "\uff11\uff17",
                     "17.0", "99999999999999999999", "0" * 30 + "17", "9" * 5000]),
    LATIN1, st.integers(0, 10 ** 12).map(str))
PATHS = st.sampled_from(["/v1/agents", BINDING, client_path(BOUND_CLIENT), "/v1/route",
                         "/health", "/openapi.json", "/metrics", "/v1/nothing", "/v1/agents/", "//v1/agents"])


@FAST
@given(st.sampled_from(["GET", "PUT", "DELETE", "POST", "get", "PATCH", "OPTIONS", "HEAD", "TRACE", "G\x00T", ""]),
       PATHS, AUTHORIZATIONS, CONTENT_LENGTHS, st.one_of(st.just("application/json"), LATIN1),
       st.dictionaries(st.sampled_from(["X-Forwarded-For", "Host", "Transfer-Encoding", "Expect", "Cookie"]),
                       LATIN1, max_size=3))
@example("PUT", BINDING, f"Bearer {TOKEN}", "\u00b2", "application/json", {})  # found: int("²") raised: 500
@example("PUT", BINDING, f"Bearer {TOKEN}", "9" * 5000, "application/json", {})  # found: int() refused: 500
def test_hostile_headers_never_give_a_5xx_and_nothing_under_v1_succeeds_without_the_token(
        api, method, path, authorization, content_length, content_type, extra):
    headers = {**extra, "Authorization": authorization, "Content-Length": content_length,
               "Content-Type": content_type}
    status, answer = send(api, method, path, headers, b'{"agent": "1001"}')
    scheme, _, given_token = authorization.partition(" ")
    right_token = scheme.lower() == "bearer" and given_token.strip() == TOKEN
    known = method.upper() in ("GET", "PUT", "DELETE") and path in (BINDING, client_path(BOUND_CLIENT))
    known = known or (method.upper() == "GET" and path in ("/v1/agents", "/v1/route"))
    if known and not right_token:
        assert (status, answer["error"]) == (401, "unauthorized")
    if status == 400 and method.upper() == "PUT" and right_token and content_type == "application/json":
        assert answer["error"] == "bad_request", answer  # only a Content-Length can be wrong here


# -- the checked-in corpus, as the atheris target reads it --------------------------------------

CORPUS = sorted((FUZZ / "corpus" / "api").iterdir())


def test_the_api_corpus_has_seeds_for_every_path_and_passes_its_check():
    assert len(CORPUS) >= 10
    heads = {path.read_bytes().split(b"\n", 1)[0].split(b"?")[0] for path in CORPUS}
    for needed in (b"PUT /v1/clients/", b"GET /v1/clients/", b"DELETE /v1/clients/", b"GET /v1/route",
                   b"GET /v1/agents", b"GET /health"):
        assert any(head.startswith(needed) for head in heads), needed
    for path in CORPUS:
        try:
            api_target.check_api(path.read_bytes())
        except Exception as exc:
            raise AssertionError(f"fuzz/corpus/api/{path.name}: {type(exc).__name__}: {exc}") from exc


# What atheris would insert into requests besides random bytes.
TOKENS = [b"\n", b"\n\n", b":", b"%00", b"%2F", b"\x00", b"\xff", b'"', b"[" * 3000, b"9" * 30, b"\xb2",
          b"Content-Length: 5\n", b"Content-Type: text/plain\n", b"?at=0001-01-01", b"&client=+1"]


@FAST
@given(mutated(CORPUS, TOKENS))
def test_mutations_of_the_api_corpus_pass_its_check(data):
    api_target.check_api(data)


# -- over TCP: the real gevent server in front of the app ----------------------------------------

@pytest.fixture(scope="module")
def server(api):
    server = ApiServer("127.0.0.1:0", api.app)
    server.start()
    yield server.address
    server.stop()


def exchange(address, data: bytes) -> bytes:
    """What the server answers to these bytes (the write side closed after them), within 5 s."""
    with gevent.Timeout(5):
        sock = gevent.socket.create_connection(address)
        try:
            sock.sendall(data)
            sock.shutdown(gevent.socket.SHUT_WR)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        finally:
            sock.close()
    return answer


LINE_BYTES = st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))


@hsettings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([b"GET", b"PUT", b"DELETE", b"POST", b"\x00", b"GET GET"]),
       st.one_of(st.sampled_from([b"/v1/agents", b"/v1/clients/%2B380671112233/binding", b"/v1/route?client=%00",
                                  b"/v1/clients/%ff%fe/binding", b"*", b"http://x/health"]), LINE_BYTES),
       st.lists(st.one_of(LINE_BYTES, st.sampled_from([b"Content-Length: \xb2", b"Content-Length: -1",
                                                       b"Content-Length: " + b"9" * 5000,
                                                       b"Transfer-Encoding: chunked", b"Content-Type: application/json",
                                                       f"Authorization: Bearer {TOKEN}".encode()])), max_size=5),
       st.one_of(st.binary(max_size=100), st.just(b"[" * 5000)))
@example(b"PUT", b"/v1/clients/%2B380671112233/binding",  # found: a body nested 5,000 deep was a 500
         [f"Authorization: Bearer {TOKEN}".encode(), b"Content-Type: application/json", b"Content-Length: 5000"],
         b"[" * 5000)
def test_raw_requests_over_tcp_never_get_a_5xx_and_the_server_keeps_answering(server, method, target, lines,
                                                                             body):
    data = method + b" " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + b"".join(
        line + b"\r\n" for line in lines) + b"\r\n" + body
    answer = exchange(server, data)
    if answer:
        status_line = answer.split(b"\r\n", 1)[0]
        assert status_line.startswith(b"HTTP/1."), status_line
        assert not status_line.split(b" ")[1].startswith(b"5"), (data[:200], status_line)
    health = exchange(server, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert health.startswith(b"HTTP/1.1 200"), health[:100]
