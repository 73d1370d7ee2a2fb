"""The CRM lookup: a real local HTTP server as the CRM (answering, slow, failing, talking garbage),
the budget, the circuit breaker, the cache, and the `sources` order in the pure decision."""
from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from http_fakes import FakeCrm
from office import Office

from fsrouter.binding_path import BindingPath
from fsrouter.config import ConfigError, CrmLookup, load_config
from fsrouter.core.model import AUTO, CRM, MANUAL, Agent, Binding, Group
from fsrouter.core.routing import decide
from fsrouter.core.settings import Settings
from fsrouter.http.crm import CLOSED, HALF_OPEN, OPEN, CircuitBreaker, CrmClient

CLIENT = "+380501234567"
NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def crm():
    server = FakeCrm({("lead", CLIENT): "1003"})
    yield server
    server.stop()


def client_for(server, *kinds, budget=0.3, clock=None, failures=3, reset=30.0, cache_ttl=30.0, **kw):
    clock = clock or time.monotonic
    results = []
    lookups = [CrmLookup(kind, server.lookup_url(kind), "responsible.ext", {"Authorization": "Bearer t0k"})
               for kind in kinds or ("lead",)]
    client = CrmClient(lookups, budget=budget, cache_ttl=cache_ttl, clock=clock,
                       breaker=CircuitBreaker(failures, reset, clock=clock),
                       on_result=lambda seconds, outcome: results.append((seconds, outcome)), **kw)
    client.results = results
    return client


def anyone(value):
    return value


# -- the lookup ------------------------------------------------------------------------------------

def test_first_lookup_naming_an_available_agent_wins_and_sends_the_token(crm):
    crm.answers = {("lead", CLIENT): "1009", ("deal", CLIENT): "1002", ("contact", CLIENT): "1004"}
    client = client_for(crm, "lead", "deal", "contact")
    answer = client.lookup(CLIENT, lambda v: v if v in ("1002", "1004") else None)  # 1009 is nobody here
    assert (answer.agent, answer.lookup, answer.value) == ("1002", "deal", "1002")
    assert [r["query"]["kind"] for r in crm.requests] == ["lead", "deal"]  # contact never asked
    assert crm.requests[0]["query"]["phone"] == CLIENT
    assert crm.requests[0]["authorization"] == "Bearer t0k"


def test_not_found_is_an_answer_of_nobody_and_is_cached(crm):
    client = client_for(crm)
    assert client.lookup("+380671112233", anyone) is None
    assert client.lookup("+380671112233", anyone) is None
    assert len(crm.requests) == 1
    assert client.results[-1][1] == "nobody" and client.breaker.state == CLOSED


def test_answers_are_cached_briefly_then_asked_again(crm):
    clock = Clock()
    client = client_for(crm, clock=clock, cache_ttl=30)
    assert client.lookup(CLIENT, anyone).agent == "1003"
    crm.answers[("lead", CLIENT)] = "1004"
    clock.now += 29
    assert client.lookup(CLIENT, anyone).agent == "1003"
    clock.now += 2
    assert client.lookup(CLIENT, anyone).agent == "1004"
    assert len(crm.requests) == 2


@pytest.mark.parametrize("mode, outcome", [("slow", "timeout"), ("fail", "status"), ("garbage", "bad_answer")])
def test_a_slow_failing_or_garbage_crm_gives_no_answer_within_the_budget(crm, mode, outcome):
    crm.mode = mode
    client = client_for(crm, budget=0.15)
    started = time.perf_counter()
    assert client.lookup(CLIENT, anyone) is None
    assert time.perf_counter() - started < 0.4
    assert client.results[-1][1] == outcome
    assert client.breaker.failed == 1


def test_a_crm_that_is_not_there_is_a_connection_failure():
    client = CrmClient([CrmLookup("lead", "http://127.0.0.1:9/r?p={client}", "ext")], budget=0.5)
    assert client.lookup(CLIENT, anyone) is None
    assert client.breaker.failed == 1


def test_a_field_that_is_not_a_string_or_number_is_a_bad_answer(crm):
    crm.answers = {("lead", CLIENT): {"nested": True}}
    client = client_for(crm)
    assert client.lookup(CLIENT, anyone) is None
    assert client.results[-1][1] == "bad_answer"


# -- the breaker -----------------------------------------------------------------------------------

def test_breaker_opens_after_repeated_failures_then_one_trial_closes_it(crm):
    clock = Clock()
    crm.mode = "fail"
    client = client_for(crm, clock=clock, failures=3, reset=30)
    for _ in range(3):
        assert client.lookup(CLIENT, anyone) is None
    assert client.breaker.state == OPEN and len(crm.requests) == 3
    for _ in range(5):  # open: the CRM is not asked at all
        assert client.lookup(CLIENT, anyone) is None
    assert len(crm.requests) == 3
    assert client.results[-1][1] == "breaker_open"
    crm.mode = "ok"
    clock.now += 31  # half-open: one trial goes, and its success closes the breaker
    assert client.lookup(CLIENT, anyone).agent == "1003"
    assert client.breaker.state == CLOSED and len(crm.requests) == 4


def test_breaker_trial_that_fails_opens_it_again(crm):
    clock = Clock()
    crm.mode = "fail"
    client = client_for(crm, clock=clock, failures=2, reset=10)
    client.lookup(CLIENT, anyone)
    client.lookup(CLIENT, anyone)
    clock.now += 11
    assert client.lookup(CLIENT, anyone) is None  # the trial fails
    assert client.breaker.state == OPEN and len(crm.requests) == 3
    clock.now += 5
    client.lookup(CLIENT, anyone)
    assert len(crm.requests) == 3  # still open: the reset counts from the failed trial


def test_half_open_breaker_lets_one_trial_at_a_time():
    clock = Clock()
    breaker = CircuitBreaker(failures=1, reset=5, clock=clock)
    breaker.failure()
    assert not breaker.allow()
    clock.now += 5
    assert breaker.allow() and breaker.state == HALF_OPEN
    assert not breaker.allow()  # a second caller while the trial runs
    breaker.success()
    assert breaker.allow() and breaker.state == CLOSED


# -- the decision ----------------------------------------------------------------------------------

AGENTS = {ext: Agent(ext, ext, groups=frozenset({"sales"})) for ext in ("1001", "1002", "1003")}
SALES = Group("sales")


def bindings(**agents):
    return {source: Binding(CLIENT, agent, source, NOW - timedelta(hours=1)) for source, agent in agents.items()}


def test_crm_answer_comes_first_by_default():
    plan = decide(CLIENT, SALES, NOW, Settings(), bindings(crm="1003", manual="1001", auto="1002"), AGENTS)
    assert (plan.agent, plan.source, plan.reason) == ("1003", CRM, "crm")


def test_sources_setting_orders_crm_manual_and_auto():
    found = bindings(crm="1003", manual="1001", auto="1002")
    assert decide(CLIENT, SALES, NOW, Settings(sources=(MANUAL, CRM)), found, AGENTS).agent == "1001"
    assert decide(CLIENT, SALES, NOW, Settings(sources=(AUTO, CRM, MANUAL)), found, AGENTS).agent == "1002"
    left_out = decide(CLIENT, SALES, NOW, Settings(sources=(MANUAL, AUTO)), bindings(crm="1003"), AGENTS)
    assert (left_out.agent, left_out.reason) == (None, "mode")


def test_mode_still_filters_stored_bindings_not_the_crm():
    found = bindings(crm="1003", manual="1001")
    assert decide(CLIENT, SALES, NOW, Settings(mode="auto"), found, AGENTS).agent == "1003"
    assert decide(CLIENT, SALES, NOW, Settings(mode="auto", sources=(MANUAL, AUTO)), found, AGENTS).agent is None


def test_crm_agent_outside_the_groups_scope_falls_through_to_manual():
    scoped = Group("sales", sticky_scope="members")
    agents = {**AGENTS, "2001": Agent("2001", "Other", groups=frozenset({"support"}))}
    plan = decide(CLIENT, scoped, NOW, Settings(), bindings(crm="2001", manual="1001"), agents)
    assert (plan.agent, plan.source) == ("1001", MANUAL)


# -- the config ------------------------------------------------------------------------------------

def test_crm_lookups_are_read_from_toml_tables(tmp_path):
    path = tmp_path / "fsrouter.toml"
    path.write_text('crm_budget = 0.2\n[[crm_lookups]]\nname = "lead"\n'
                    'url = "https://crm.example/api/responsible?kind=lead&phone={client}"\n'
                    'field = "responsible.ext"\nheaders = { Authorization = "Bearer s3cret" }\n')
    path.chmod(0o600)
    config = load_config(str(path), environ={})
    (lookup,) = config.crm_lookups
    assert (lookup.name, lookup.field, lookup.headers) == ("lead", "responsible.ext", {"Authorization": "Bearer s3cret"})
    assert config.crm_budget == 0.2
    assert "s3cret" not in repr(config)


@pytest.mark.parametrize("table, message", [
    ('url = "ftp://x/{client}"\nfield = "a"', "url"),
    ('url = "https://x/responsible"\nfield = "a"', "{client}"),
    ('url = "https://x/{client}"', "field"),
    ('url = "https://x/{client}"\nfield = "a"\nheaders = { A = "b\\nc" }', "headers"),
    ('url = "https://x/{client}"\nfield = "a"\ntoken = "x"', "unknown key"),
])
def test_bad_crm_lookups_are_config_errors(tmp_path, table, message):
    path = tmp_path / "fsrouter.toml"
    path.write_text(f"[[crm_lookups]]\n{table}\n")
    path.chmod(0o600)
    with pytest.raises(ConfigError, match="crm_lookups"):
        try:
            load_config(str(path), environ={})
        except ConfigError as exc:
            assert message in str(exc)
            raise


# -- end to end: the real daemon, the fake FreeSWITCH, a real HTTP CRM -----------------------------

@pytest.fixture
def office_with_crm(tmp_path, crm):
    office = Office(tmp_path, crm_lookups=(CrmLookup("lead", crm.lookup_url("lead"), "responsible.ext"),),
                    crm_budget=0.15, crm_breaker_failures=2, crm_breaker_reset=60.0)
    office.crm = crm
    yield office
    office.close()


def test_call_rings_the_agent_the_crm_names_first(office_with_crm):
    office = office_with_crm
    BindingPath(office.store).set_manual_binding(CLIENT, "1001", datetime.now(UTC))
    office.fake.agent("1003", answers_after=1, talk=15)
    call = office.call("0501234567")
    assert call.answered_by == "1003"
    assert call.variables["fsrouter_route"] == "sticky"
    assert call.variables["fsrouter_reason"] == "crm"
    assert call.bridges[0].dial_string == "[leg_timeout=20,fsrouter_route=sticky]user/1003@127.0.0.1"


def test_crm_user_id_maps_to_the_agent_set_with_crm_id(office_with_crm):
    office = office_with_crm
    office.crm.answers = {("lead", CLIENT): "u-77"}
    office.store.set_agent_crm_id("1004", "u-77")
    office.service.invalidate()
    office.fake.agent("1004", answers_after=1, talk=15)
    call = office.call("0501234567")
    assert (call.answered_by, call.variables["fsrouter_reason"]) == ("1004", "crm")


@pytest.mark.parametrize("mode", ["slow", "fail", "garbage"])
def test_budget_holds_and_the_call_routes_on_the_local_binding_when_the_crm_is(office_with_crm, mode):
    office = office_with_crm
    office.crm.mode = mode
    BindingPath(office.store).set_manual_binding(CLIENT, "1002", datetime.now(UTC))
    office.fake.agent("1002", answers_after=1, talk=15)
    started = time.perf_counter()
    call = office.call("0501234567")
    assert call.answered_by == "1002"
    assert call.variables["fsrouter_reason"] == "manual"
    assert call.decision_latency is not None and call.decision_latency < 0.15 + 0.25
    assert time.perf_counter() - started < 5
    assert len(office.crm.requests) == 1


def test_breaker_opens_in_the_daemon_and_calls_stop_waiting_for_the_crm(office_with_crm):
    office = office_with_crm
    office.crm.mode = "slow"
    BindingPath(office.store).set_manual_binding(CLIENT, "1002", datetime.now(UTC))
    office.fake.agent("1002", answers_after=1, talk=2)
    for _ in range(2):
        office.call("0501234567")
    assert office.daemon.crm.breaker.state == OPEN
    call = office.call("0501234567")
    assert len(office.crm.requests) == 2  # the third call did not ask
    assert call.decision_latency < 0.1
    assert call.answered_by == "1002"
