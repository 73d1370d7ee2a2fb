"""Clients as people: linked numbers share bindings, shared numbers never bind or route sticky,
and a client kept away from an agent never gets them as sticky agent, by any source."""
import io
import json
from datetime import UTC, datetime, timedelta

import pytest
from office import cli_office

from fsrouter.binding_path import BindingPath
from fsrouter.core.model import AUTO, MANUAL, Agent, Binding, Call, Group
from fsrouter.core.routing import decide
from fsrouter.core.settings import Settings
from fsrouter.service import Service, ServiceError
from fsrouter.store import StoreError

HOME, MOBILE, OFFICE = "+380441234567", "+380501234567", "+380671112233"
T0 = datetime(2024, 5, 1, 12, tzinfo=UTC)
AGENTS = {e: Agent(e, e, f"user/{e}@pbx", groups=frozenset({"sales"})) for e in ("1001", "1002")}


def answered(client, agent, at=T0, uuid=None):
    return Call("inbound", client, agent, at, at + timedelta(seconds=60), talk_seconds=60, answered=True,
                uuid=uuid)


@pytest.fixture
def store(store):
    """conftest's store (SQLite, then PostgreSQL) with group sales and agents 1001 and 1002."""
    store.add_group("sales")
    store.add_agent("1001", "Anna", groups=["sales"])
    store.add_agent("1002", "Bohdan", groups=["sales"])
    return store


# -- the decision (pure) ------------------------------------------------------------------------

def test_blocked_agent_is_never_the_sticky_agent_by_any_source():
    bindings = {MANUAL: Binding(MOBILE, "1001", MANUAL, at=T0), AUTO: Binding(MOBILE, "1001", AUTO, at=T0)}
    plan = decide(MOBILE, Group("sales"), T0, Settings(), bindings, AGENTS, blocked={"1001"})
    assert (plan.sticky, plan.reason) == (None, "agent_blocked")
    bindings[AUTO] = Binding(MOBILE, "1002", AUTO, at=T0)
    plan = decide(MOBILE, Group("sales"), T0, Settings(), bindings, AGENTS, blocked={"1001"})
    assert (plan.agent, plan.reason) == ("1002", "auto")  # the manual one is skipped, the learned one routes


def test_shared_number_never_routes_sticky():
    bindings = {MANUAL: Binding(MOBILE, "1001", MANUAL, at=T0)}
    plan = decide(MOBILE, Group("sales"), T0, Settings(), bindings, AGENTS, shared=True)
    assert (plan.sticky, plan.reason) == (None, "shared_number")
    assert plan.fallback


# -- linked numbers -----------------------------------------------------------------------------

def test_binding_learned_on_one_number_routes_all_linked_numbers(store):
    BindingPath(store).link_numbers(MOBILE, HOME)
    BindingPath(store).record_call(answered(HOME, "1002"), Settings())
    assert store.bindings_for(MOBILE)[AUTO].agent == "1002"  # the client id is the first number
    service = Service(store, clock=lambda: T0 + timedelta(hours=1))
    for number in (MOBILE, HOME):
        assert (service.route(number, "sales").agent, service.route(number, "sales").reason) == ("1002", "auto")
    assert service.route(OFFICE, "sales").reason == "no_binding"


def test_linking_merges_bindings_the_later_learned_call_wins(store):
    BindingPath(store).record_call(answered(MOBILE, "1001", at=T0), Settings())
    BindingPath(store).record_call(answered(HOME, "1002", at=T0 + timedelta(days=1)), Settings())
    BindingPath(store).set_manual_binding(HOME, "1002", T0)
    owner = BindingPath(store).link_numbers(MOBILE, HOME)
    assert owner == MOBILE and store.numbers_of(MOBILE) == sorted([MOBILE, HOME])
    merged = store.bindings_for(MOBILE)
    assert (merged[AUTO].agent, merged[MANUAL].agent) == ("1002", "1002")
    assert store.bindings_for(HOME) == {}  # nothing left under the old id
    assert store.client_of(HOME)[0] == MOBILE


def test_linking_a_third_number_through_either_joins_the_same_client(store):
    BindingPath(store).link_numbers(MOBILE, HOME)
    BindingPath(store).link_numbers(OFFICE, HOME)  # HOME's client (MOBILE) joins OFFICE's
    assert store.client_of(MOBILE)[0] == store.client_of(HOME)[0] == store.client_of(OFFICE)[0] == OFFICE
    assert store.numbers_of(OFFICE) == sorted([MOBILE, HOME, OFFICE])


def test_routing_reads_one_statement_of_indexed_reads(store):
    BindingPath(store).link_numbers(MOBILE, HOME)
    statements = []
    real = store.db.execute_sql

    def spy(sql, params=None, *args, **kwargs):
        statements.append(sql)
        return real(sql, params, *args, **kwargs)

    service = Service(store)
    service.route(HOME, "sales")  # loads the cached configuration
    store.db.execute_sql = spy
    service.route(HOME, "sales")
    del store.db.execute_sql
    assert len(statements) == 1
    if store.is_sqlite:  # PostgreSQL's planner scans tables this small whatever the indexes
        plan = store.db.execute_sql("EXPLAIN QUERY PLAN " + statements[0], (HOME,) * 3).fetchall()
        # Every table is searched through an index; only the one-row derived table `c` is scanned.
        scans = [row[-1] for row in plan if row[-1].startswith("SCAN")]
        assert scans == ["SCAN CONSTANT ROW", "SCAN c"], plan
        assert sum("USING" in row[-1] and "INDEX" in row[-1] for row in plan) == 4, plan


# -- shared numbers -----------------------------------------------------------------------------

def test_shared_number_never_binds_and_never_routes_sticky(store):
    BindingPath(store).set_manual_binding(OFFICE, "1001", T0)
    store.set_shared(OFFICE, True)
    assert BindingPath(store).record_call(answered(OFFICE, "1002"), Settings()) is None
    assert AUTO not in store.bindings_for(OFFICE)
    assert Service(store).route(OFFICE, "sales").reason == "shared_number"
    store.set_shared(OFFICE, False)
    assert Service(store).route(OFFICE, "sales").agent == "1001"
    assert BindingPath(store).record_call(answered(OFFICE, "1002", uuid="again"), Settings()).agent == "1002"


# -- blocks -------------------------------------------------------------------------------------

def test_block_drops_the_learned_binding_and_is_never_learned_again(store):
    BindingPath(store).record_call(answered(MOBILE, "1001"), Settings())
    BindingPath(store).set_manual_binding(MOBILE, "1001", T0)  # set before the block: kept, but never routes
    client, dropped = BindingPath(store).block(MOBILE, "1001")
    assert (client, dropped) == (MOBILE, 1)
    assert BindingPath(store).record_call(answered(MOBILE, "1001", at=T0 + timedelta(hours=1)), Settings()) is None
    assert AUTO not in store.bindings_for(MOBILE)
    assert Service(store).route(MOBILE, "sales").reason == "agent_blocked"
    assert store.unblock(MOBILE, "1001") == 1
    assert Service(store).route(MOBILE, "sales").agent == "1001"


def test_block_applies_to_every_linked_number(store):
    BindingPath(store).link_numbers(MOBILE, HOME)
    BindingPath(store).block(HOME, "1002")
    assert store.client_of(MOBILE)[2] == {"1002"}
    assert BindingPath(store).record_call(answered(MOBILE, "1002"), Settings()) is None


def test_block_of_an_unknown_agent_is_an_error(store):
    with pytest.raises(StoreError, match="unknown agent"):
        BindingPath(store).block(MOBILE, "9999")


# -- command line -------------------------------------------------------------------------------

@pytest.fixture
def fsrouter(tmp_path, monkeypatch):
    return cli_office(tmp_path, monkeypatch, agents=("1001", "1002"))


def test_cli_client_link_then_binding_routes_the_other_number(fsrouter):
    assert "+380501234567" in fsrouter("client", "link", "0501234567", "0441234567")
    fsrouter("binding", "set", "0501234567", "1002")
    plan = json.loads(fsrouter("route", "0441234567", "--group", "sales", "--json"))
    assert (plan["agent"], plan["reason"]) == ("1002", "manual")
    shown = json.loads(fsrouter("client", "show", "0441234567", "--json"))
    assert shown["client"] == MOBILE and shown["numbers"] == [HOME, MOBILE]
    assert shown["bindings"] == {"manual": "1002"}


def test_unlinking_a_number_makes_it_a_client_of_its_own_without_the_bindings(store):
    BindingPath(store).link_numbers(MOBILE, HOME)
    BindingPath(store).set_manual_binding(MOBILE, "1001", T0)
    assert store.unlink_number(HOME) == MOBILE
    assert store.client_of(HOME)[0] == HOME and store.bindings_for(HOME) == {}
    assert store.numbers_of(MOBILE) == [MOBILE] and store.bindings_for(MOBILE)[MANUAL].agent == "1001"
    assert Service(store).route(HOME, "sales").reason == "no_binding"


def test_unlinking_the_clients_own_number_moves_the_client_to_its_other_numbers(store):
    BindingPath(store).link_numbers(MOBILE, HOME)
    BindingPath(store).link_numbers(MOBILE, OFFICE)
    BindingPath(store).set_manual_binding(MOBILE, "1001", T0)
    BindingPath(store).block(MOBILE, "1002")
    assert store.unlink_number(MOBILE) == HOME  # the lowest of the others
    assert store.numbers_of(HOME) == [HOME, OFFICE]
    assert store.client_of(OFFICE) == (HOME, False, frozenset({"1002"}))
    assert store.bindings_for(HOME)[MANUAL].agent == "1001"
    assert store.client_of(MOBILE) == (MOBILE, False, frozenset()) and store.bindings_for(MOBILE) == {}


def test_unlinking_a_number_that_is_not_linked_is_an_error(store):
    with pytest.raises(StoreError, match="not linked"):
        store.unlink_number(MOBILE)


def test_cli_client_unlink(fsrouter):
    fsrouter("client", "link", "0501234567", "0441234567")
    fsrouter("binding", "set", "0501234567", "1002")
    assert "+380441234567 is a client of its own now" in fsrouter("client", "unlink", "0441234567")
    assert json.loads(fsrouter("route", "0441234567", "--group", "sales", "--json"))["agent"] is None
    assert json.loads(fsrouter("route", "0501234567", "--group", "sales", "--json"))["agent"] == "1002"
    out = fsrouter("client", "unlink", "0441234567", code=1)
    assert out.strip().count("\n") == 0 and "not linked" in out


def test_cli_number_shared_on_off(fsrouter):
    fsrouter("binding", "set", "0671112233", "1001")
    assert "shared on" in fsrouter("number", "shared", "0671112233", "on")
    plan = json.loads(fsrouter("route", "0671112233", "--group", "sales", "--json"))
    assert (plan["agent"], plan["reason"]) == (None, "shared_number")
    fsrouter("number", "shared", "0671112233", "off")
    assert json.loads(fsrouter("route", "0671112233", "--group", "sales", "--json"))["agent"] == "1001"


def test_cli_binding_block_and_unblock(fsrouter):
    fsrouter("binding", "set", "0501234567", "1001")
    out = fsrouter("binding", "block", "0501234567", "1001")
    assert "kept away from 1001" in out and "no longer routes" in out
    assert json.loads(fsrouter("route", "0501234567", "--group", "sales", "--json"))["reason"] == "agent_blocked"
    assert json.loads(fsrouter("binding", "blocks", "--json")) == [{"client": MOBILE, "agent": "1001"}]
    fsrouter("binding", "unblock", "0501234567", "1001")
    assert json.loads(fsrouter("route", "0501234567", "--group", "sales", "--json"))["agent"] == "1001"
    assert "unknown agent" in fsrouter("binding", "block", "0501234567", "9999", code=1)


def test_manual_binding_set_on_any_linked_number_binds_the_client(store):
    BindingPath(store).link_numbers(MOBILE, HOME)
    BindingPath(store).set_manual_binding(HOME, "1001", T0)
    assert store.bindings_for(MOBILE)[MANUAL].agent == "1001"
    assert Service(store).route(HOME, "sales").agent == "1001"
    assert BindingPath(store).remove_bindings(HOME, (MANUAL,)) == 1
    assert store.bindings_for(MOBILE) == {}


def test_binding_import_of_linked_numbers_binds_their_client(store):
    BindingPath(store).link_numbers(MOBILE, HOME)
    assert BindingPath(store).import_bindings([(HOME, "1002"), (OFFICE, "1001")], now=T0) == 2
    assert store.bindings_for(MOBILE)[MANUAL].agent == "1002"
    assert store.bindings_for(OFFICE)[MANUAL].agent == "1001"


def test_manual_binding_to_a_blocked_agent_is_refused(store):
    BindingPath(store).block(MOBILE, "1001")
    with pytest.raises(StoreError, match="kept away"):
        BindingPath(store).set_manual_binding(MOBILE, "1001", T0)


# -- binding set where the ownership rule bars it for good: refused, by every way in ---------------

def test_manual_binding_on_a_shared_number_is_refused(store):
    store.set_shared(OFFICE, True)
    with pytest.raises(StoreError, match=r"\+380671112233 is a shared number: it never routes sticky"):
        BindingPath(store).set_manual_binding(OFFICE, "1001", T0)
    assert store.bindings_for(OFFICE) == {}


def test_cli_binding_set_on_a_shared_number_or_to_a_blocked_agent_is_a_one_line_error(fsrouter):
    fsrouter("number", "shared", "0442000000", "on")
    out = fsrouter("binding", "set", "0442000000", "1001", code=1)
    assert out.strip().count("\n") == 0 and "shared number" in out and "number shared +380442000000 off" in out
    fsrouter("binding", "block", "0501234567", "1002")
    out = fsrouter("binding", "set", "0501234567", "1002", code=1)
    assert out.strip().count("\n") == 0 and "kept away from agent 1002" in out
    assert json.loads(fsrouter("binding", "list", "--json")) == []


def test_binding_import_of_a_shared_number_or_a_blocked_agent_imports_nothing(store):
    store.set_shared(OFFICE, True)
    with pytest.raises(ServiceError, match=r"line 3: \+380671112233 is a shared number"):
        Service(store).import_bindings_csv(io.StringIO("client,agent\n0501234567,1001\n0671112233,1002\n"))
    BindingPath(store).block(HOME, "1002")
    with pytest.raises(ServiceError, match="line 2: client .* is kept away from agent 1002"):
        Service(store).import_bindings_csv(io.StringIO("client,agent\n0441234567,1002\n0501234567,1001\n"))
    assert store.list_bindings() == []


def test_a_shared_number_teaches_nobody_and_a_blocked_agent_is_never_learned_nor_handed_over(store):
    store.set_shared(OFFICE, True)
    assert BindingPath(store).learn(answered(OFFICE, "1001"), Settings()) is None
    BindingPath(store).block(MOBILE, "1002")
    assert BindingPath(store).learn(answered(MOBILE, "1002"), Settings()) is None
    BindingPath(store).learn(answered(MOBILE, "1001"), Settings())
    BindingPath(store).handover("1001", "1002")
    assert store.bindings_for(MOBILE) == {}  # released, not moved to the agent the client is kept from
