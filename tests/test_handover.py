"""Bindings that outlive their agent: released on disable/remove, handed over in one step, and
(max_sticky_misses) lost by a bound agent who keeps missing the client's sticky calls."""
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from office import cli_office

from fsrouter.binding_path import BindingPath
from fsrouter.core.model import AUTO, MANUAL, Call
from fsrouter.core.settings import Settings
from fsrouter.service import Service
from fsrouter.store import Store, StoreError

A, B, C = "+380501234567", "+380671112233", "+380931234567"
T0 = datetime(2024, 5, 1, 12, tzinfo=UTC)


@pytest.fixture
def store(store):
    """conftest's store (SQLite, then PostgreSQL) with group sales and agents 1001-1003."""
    store.add_group("sales")
    for ext in ("1001", "1002", "1003"):
        store.add_agent(ext, f"Agent {ext}", groups=["sales"])
    return store


def learn(store, client, agent, at=T0):
    return BindingPath(store).record_call(Call("inbound", client, agent, at, at + timedelta(seconds=60), talk_seconds=60,
                                  answered=True), Settings())


def test_release_learned_drops_only_that_agents_learned_bindings(store):
    learn(store, A, "1001")
    learn(store, B, "1002")
    BindingPath(store).set_manual_binding(C, "1001", T0)
    assert BindingPath(store).release_learned("1001") == 1
    assert store.bindings_for(A) == {}
    assert store.bindings_for(B)[AUTO].agent == "1002"
    assert store.bindings_for(C)[MANUAL].agent == "1001"  # manual ones are for a human


def test_handover_moves_manual_and_learned_bindings_in_one_step(store):
    learn(store, A, "1001")
    BindingPath(store).set_manual_binding(B, "1001", T0)
    learn(store, C, "1002")
    assert BindingPath(store).handover("1001", "1003") == (2, 0)
    assert store.bindings_for(A)[AUTO].agent == "1003"
    assert store.bindings_for(B)[MANUAL].agent == "1003"
    assert store.bindings_for(C)[AUTO].agent == "1002"


def test_handover_skips_clients_kept_away_from_the_new_agent(store):
    learn(store, A, "1001")
    BindingPath(store).set_manual_binding(B, "1001", T0)
    BindingPath(store).block(A, "1003")
    BindingPath(store).block(B, "1003")
    assert BindingPath(store).handover("1001", "1003") == (0, 1)
    assert store.bindings_for(A) == {}  # learned: released
    assert store.bindings_for(B)[MANUAL].agent == "1001"  # manual: left for a human


def test_handover_to_an_unknown_agent_changes_nothing(store):
    learn(store, A, "1001")
    with pytest.raises(StoreError, match="unknown agent"):
        BindingPath(store).handover("1001", "9999")
    assert store.bindings_for(A)[AUTO].agent == "1001"


# -- max_sticky_misses --------------------------------------------------------------------------

def sticky_miss(client, bound, n, answered_by=None):
    at = T0 + timedelta(hours=n)
    return Call("inbound", client, answered_by, at, at + timedelta(seconds=30), talk_seconds=3 if answered_by else 0,
                answered=bool(answered_by), uuid=f"miss-{client}-{n}", group="sales", route="none",
                rung=(bound,), sticky_agent=bound)


def test_max_sticky_misses_off_by_default_keeps_the_binding(store):
    learn(store, A, "1001")
    service = Service(store)
    for n in range(1, 6):
        service.record_call(sticky_miss(A, "1001", n))
    assert store.bindings_for(A)[AUTO].agent == "1001"


def test_max_sticky_misses_n_in_a_row_loses_the_learned_binding(store):
    store.set_setting("max_sticky_misses", "3")
    learn(store, A, "1001")
    service = Service(store, cache_ttl=0)
    service.record_call(sticky_miss(A, "1001", 1))
    service.record_call(sticky_miss(A, "1001", 2))
    assert store.bindings_for(A)[AUTO].agent == "1001"
    service.record_call(sticky_miss(A, "1001", 3))
    assert AUTO not in store.bindings_for(A)


def test_max_sticky_misses_an_answer_by_the_bound_agent_breaks_the_streak(store):
    store.set_setting("max_sticky_misses", "2")
    learn(store, A, "1001")
    service = Service(store, cache_ttl=0)
    service.record_call(sticky_miss(A, "1001", 1))
    answered = replace(sticky_miss(A, "1001", 2, answered_by="1001"), route="sticky", talk_seconds=3)
    service.record_call(answered)  # too short to learn from, but the bound agent took it
    service.record_call(sticky_miss(A, "1001", 3))
    assert store.bindings_for(A)[AUTO].agent == "1001"
    service.record_call(sticky_miss(A, "1001", 4))
    assert AUTO not in store.bindings_for(A)


def test_max_sticky_misses_never_touches_a_manual_binding(store):
    store.set_setting("max_sticky_misses", "1")
    BindingPath(store).set_manual_binding(A, "1001", T0)
    Service(store, cache_ttl=0).record_call(sticky_miss(A, "1001", 1))
    assert store.bindings_for(A)[MANUAL].agent == "1001"


# -- command line -------------------------------------------------------------------------------

@pytest.fixture
def fsrouter(tmp_path, monkeypatch):
    run = cli_office(tmp_path, monkeypatch, agents=("1001", "1002"))
    with Store.open(run.url) as store:
        learn(store, A, "1001", at=datetime.now(UTC) - timedelta(hours=1))
    run("binding", "set", B, "1001")
    return run


def test_cli_agent_disable_releases_learned_and_lists_manual_bindings(fsrouter):
    out = fsrouter("agent", "disable", "1001")
    assert "released 1 learned binding of 1001" in out
    assert "1 manual binding still name 1001" in out and "binding list --stale" in out
    stale = json.loads(fsrouter("binding", "list", "--stale", "--json"))
    assert [(b["client"], b["source"], b["state"]) for b in stale] == [(B, "manual", "agent_disabled")]


def test_cli_agent_rm_releases_learned_bindings(fsrouter):
    assert "released 1 learned binding" in fsrouter("agent", "rm", "1001")
    stale = json.loads(fsrouter("binding", "list", "--stale", "--json"))
    assert [(b["client"], b["state"]) for b in stale] == [(B, "agent_unknown")]


def test_cli_agent_rm_handover_to_moves_all_bindings(fsrouter):
    out = fsrouter("agent", "rm", "1001", "--handover-to", "1002")
    assert "moved 2 bindings of 1001 to 1002" in out
    assert json.loads(fsrouter("binding", "list", "--stale", "--json")) == []
    assert {b["agent"] for b in json.loads(fsrouter("binding", "list", "--json"))} == {"1002"}


def test_cli_agent_rm_handover_to_unknown_agent_removes_nothing(fsrouter):
    assert "unknown agent '9999'" in fsrouter("agent", "rm", "1001", "--handover-to", "9999", code=1)
    assert "1001" in fsrouter("agent", "list")
    assert len(json.loads(fsrouter("binding", "list", "--agent", "1001", "--json"))) == 2


def test_cli_max_sticky_misses_setting(fsrouter):
    assert "max_sticky_misses = 3" in fsrouter("settings", "set", "max_sticky_misses", "3")
    assert "bad number" in fsrouter("settings", "set", "max_sticky_misses", "some", code=1)
