"""The routing decision: sticky leg (or why none), then the group's fallback legs."""
import json
from datetime import UTC, datetime, timedelta

import pytest

from fsrouter.core.model import (
    AUTO,
    MANUAL,
    SEQUENTIAL,
    SIMULTANEOUS,
    Agent,
    Binding,
    Group,
    Leg,
    RoutePlan,
    default_dial_string,
)
from fsrouter.core.routing import REASONS, decide, fallback_legs
from fsrouter.core.settings import Settings

CLIENT = "+380501234567"
NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
DEFAULT = Settings()
SALES = Group("sales")


def agent(ext, groups=("sales",), enabled=True, priority=100, dial=None):
    return Agent(ext=ext, name=f"Agent {ext}", dial_string=dial or f"user/{ext}@pbx.example",
                 priority=priority, enabled=enabled, groups=frozenset(groups))


def team(*agents):
    return {a.ext: a for a in agents}


AGENTS = team(agent("1001"), agent("1002"), agent("1003"), agent("2001", groups=("support",)))


def manual(ext, at=NOW - timedelta(days=100), expires=None):
    return Binding(client=CLIENT, agent=ext, source=MANUAL, at=at, expires_at=expires, why="set by admin")


def auto(ext, at=NOW - timedelta(days=1)):
    return Binding(client=CLIENT, agent=ext, source=AUTO, at=at, why="answered inbound call")


def bindings(*items):
    return {b.source: b for b in items}


def plan(bs, group=SALES, settings=DEFAULT, agents=AGENTS, client=CLIENT, now=NOW):
    return decide(client, group, now, settings, bs, agents)


# --- sticky leg and its source ---------------------------------------------------------------

def test_plan_reason_manual():
    p = plan(bindings(manual("1002")))
    assert (p.agent, p.source, p.reason) == ("1002", MANUAL, "manual")


def test_plan_reason_auto():
    p = plan(bindings(auto("1003")))
    assert (p.agent, p.source, p.reason) == ("1003", AUTO, "auto")


def test_sticky_leg_uses_sticky_timeout():
    p = plan(bindings(auto("1001")), settings=Settings(sticky_timeout=timedelta(seconds=7)))
    assert p.sticky == Leg("1001", "user/1001@pbx.example", timedelta(seconds=7))
    assert plan(bindings(auto("1001"))).sticky.timeout == timedelta(seconds=20)


def test_sticky_leg_uses_the_agents_configured_dial_string():
    agents = team(agent("1001", dial="sofia/gateway/gw1/380441112233"))
    assert plan(bindings(auto("1001")), agents=agents).sticky.dial_string == "sofia/gateway/gw1/380441112233"


def test_agent_default_dial_string():
    a = Agent(ext="1005", name="Olena")
    assert a.dial_string == default_dial_string("1005") == "user/1005@${domain_name}"
    assert Agent("1005", "Olena", "user/1005@other").dial_string == "user/1005@other"


# --- reasons for no sticky leg ---------------------------------------------------------------

def test_plan_reason_not_a_client():
    p = plan(bindings(manual("1001")), client=None)
    assert (p.sticky, p.source, p.reason) == (None, None, "not_a_client")
    assert p.fallback  # the group still rings


def test_plan_reason_no_binding():
    p = plan({})
    assert (p.sticky, p.source, p.reason) == (None, None, "no_binding")
    assert [leg.agent for leg in p.fallback] == ["1001", "1002", "1003"]


def test_plan_reason_expired_learned():
    p = plan(bindings(auto("1001", at=NOW - timedelta(days=31))))
    assert (p.sticky, p.reason) == (None, "expired")


def test_plan_reason_expired_manual():
    p = plan(bindings(manual("1001", expires=NOW - timedelta(seconds=1))))
    assert (p.sticky, p.reason) == (None, "expired")


def test_plan_reason_agent_disabled():
    agents = team(agent("1001", enabled=False), agent("1002"))
    p = plan(bindings(auto("1001")), agents=agents)
    assert (p.sticky, p.reason) == (None, "agent_disabled")


def test_plan_reason_agent_unknown():
    p = plan(bindings(manual("1099")))
    assert (p.sticky, p.reason) == (None, "agent_unknown")


def test_plan_reason_outside_scope():
    group = Group("sales", sticky_scope="members")
    p = plan(bindings(auto("2001")), group=group)
    assert (p.sticky, p.reason) == (None, "outside_scope")


def test_plan_reason_mode():
    p = plan(bindings(auto("1001")), settings=Settings(mode="manual"))
    assert (p.sticky, p.reason) == (None, "mode")


def test_every_reason_is_described():
    assert set(REASONS) - {"crm"} == {"manual", "auto", "not_a_client", "no_binding", "mode", "expired",
                            "agent_disabled", "agent_unknown", "outside_scope", "database_unavailable",
                            "agent_offline", "agent_busy", "agent_dnd", "agent_blocked", "outside_hours",
                            "shared_number"}
    assert all(REASONS.values())


# --- look-back and expiry through decide -----------------------------------------------------

def test_learned_binding_outside_lookback_does_not_route():
    bs = bindings(auto("1001", at=NOW - timedelta(days=10)))
    assert plan(bs).agent == "1001"
    assert plan(bs, settings=Settings(lookback=timedelta(days=7))).agent is None


def test_lookback_zero_means_forever():
    bs = bindings(auto("1001", at=NOW - timedelta(days=5000)))
    assert plan(bs).agent is None
    assert plan(bs, settings=Settings(lookback=timedelta(0))).agent == "1001"


def test_manual_binding_never_expires_without_expiry():
    assert plan(bindings(manual("1001", at=NOW - timedelta(days=5000)))).agent == "1001"


def test_manual_binding_with_expiry_stops_routing_after_it():
    bs = bindings(manual("1001", expires=NOW + timedelta(hours=1)))
    assert plan(bs).agent == "1001"
    assert plan(bs, now=NOW + timedelta(hours=1)).agent is None
    assert plan(bs, now=NOW + timedelta(hours=2)).reason == "expired"


# --- mode ------------------------------------------------------------------------------------

def test_mode_manual_ignores_learned():
    s = Settings(mode="manual")
    assert plan(bindings(auto("1001")), settings=s).agent is None
    p = plan(bindings(manual("1002"), auto("1001")), settings=s)
    assert (p.agent, p.source) == ("1002", MANUAL)


def test_mode_auto_ignores_manual():
    s = Settings(mode="auto")
    p = plan(bindings(manual("1002")), settings=s)
    assert (p.agent, p.reason) == (None, "mode")
    p = plan(bindings(manual("1002"), auto("1001")), settings=s)
    assert (p.agent, p.source) == ("1001", AUTO)


def test_mode_both_prefers_manual_then_learned():
    assert DEFAULT.mode == "both"
    p = plan(bindings(manual("1002"), auto("1001")))
    assert (p.agent, p.source) == ("1002", MANUAL)
    p = plan(bindings(auto("1001")))
    assert (p.agent, p.source) == ("1001", AUTO)
    p = plan(bindings(manual("1002", expires=NOW - timedelta(1)), auto("1001")))
    assert (p.agent, p.source) == ("1001", AUTO)


def test_mode_both_manual_to_disabled_agent_falls_through_to_learned():
    # Decision: a manual binding that cannot route does not block the learned one.
    agents = team(agent("1001"), agent("1002", enabled=False))
    p = plan(bindings(manual("1002"), auto("1001")), agents=agents)
    assert (p.agent, p.source, p.reason) == ("1001", AUTO, "auto")


def test_mode_both_when_neither_works_reports_the_manual_bindings_reason():
    # Decision: the reason is why the first-choice (manual) binding failed.
    agents = team(agent("1001"), agent("1002", enabled=False))
    p = plan(bindings(manual("1002"), auto("1001", at=NOW - timedelta(days=90))), agents=agents)
    assert (p.agent, p.source, p.reason) == (None, None, "agent_disabled")
    p = plan(bindings(manual("1099"), auto("1002")), agents=agents)
    assert p.reason == "agent_unknown"


def test_mode_both_only_learned_failing_reports_its_reason():
    p = plan(bindings(auto("1001", at=NOW - timedelta(days=90))))
    assert p.reason == "expired"


# --- disabled and deleted agents -------------------------------------------------------------

def test_disabled_agent_gets_no_sticky_call_and_binding_kept():
    agents = team(agent("1001", enabled=False), agent("1002"))
    bs = bindings(manual("1001"), auto("1001"))
    before = dict(bs)
    p = plan(bs, agents=agents)
    assert p.sticky is None and p.reason == "agent_disabled"
    assert "1001" not in [leg.agent for leg in p.fallback]
    assert bs == before  # kept: nothing deleted or changed
    # ... and routes again once the agent is enabled
    assert plan(bs, agents=team(agent("1001"), agent("1002"))).agent == "1001"


def test_deleted_agent_gets_no_sticky_call():
    bs = bindings(auto("1001"))
    agents = team(agent("1002"))
    p = plan(bs, agents=agents)
    assert p.sticky is None and p.reason == "agent_unknown"
    assert [leg.agent for leg in p.fallback] == ["1002"]
    assert bs == bindings(auto("1001"))


# --- sticky scope ----------------------------------------------------------------------------

def test_sticky_scope_members_skips_non_member():
    group = Group("sales", sticky_scope="members")
    assert plan(bindings(auto("2001")), group=group).agent is None
    assert plan(bindings(auto("1001")), group=group).agent == "1001"


def test_sticky_scope_any_rings_non_member():
    assert SALES.sticky_scope == "any"
    p = plan(bindings(auto("2001")))
    assert (p.agent, p.source) == ("2001", AUTO)
    assert "2001" not in [leg.agent for leg in p.fallback]  # not a member, not in the group ring


def test_sticky_scope_members_falls_through_to_learned_member():
    group = Group("sales", sticky_scope="members")
    p = plan(bindings(manual("2001"), auto("1003")), group=group)
    assert (p.agent, p.source) == ("1003", AUTO)


# --- fallback --------------------------------------------------------------------------------

def test_fallback_includes_sticky_by_default():
    p = plan(bindings(auto("1002")))
    assert p.agent == "1002"
    assert [leg.agent for leg in p.fallback] == ["1001", "1002", "1003"]


def test_fallback_excludes_sticky_when_set():
    p = plan(bindings(auto("1002")), settings=Settings(fallback_excludes_sticky=True))
    assert p.agent == "1002"
    assert [leg.agent for leg in p.fallback] == ["1001", "1003"]


def test_fallback_excludes_nobody_when_no_sticky_leg():
    agents = team(agent("1001"), agent("1002", enabled=False))
    p = plan(bindings(auto("1002")), settings=Settings(fallback_excludes_sticky=True), agents=agents)
    assert [leg.agent for leg in p.fallback] == ["1001"]


def test_fallback_has_only_enabled_members_of_the_group():
    agents = team(agent("1001"), agent("1002", enabled=False), agent("2001", groups=("support",)),
                  agent("3001", groups=("sales", "support")))
    assert [leg.agent for leg in fallback_legs(SALES, agents)] == ["1001", "3001"]


def test_sequential_group_orders_fallback_by_priority():
    # Decision: lower priority number rings first; equal priorities ring in extension order.
    group = Group("sales", strategy=SEQUENTIAL, ring_timeout=timedelta(seconds=15))
    agents = team(agent("1001", priority=30), agent("1002", priority=10), agent("1003", priority=20),
                  agent("1004", priority=10))
    p = plan({}, group=group, agents=agents)
    assert p.strategy == SEQUENTIAL
    assert [leg.agent for leg in p.fallback] == ["1002", "1004", "1003", "1001"]
    assert all(leg.timeout == timedelta(seconds=15) for leg in p.fallback)  # per-agent timeout


def test_simultaneous_is_the_default_strategy():
    assert SALES.strategy == SIMULTANEOUS
    assert plan({}).strategy == SIMULTANEOUS


def test_fallback_legs_carry_configured_dial_strings():
    p = plan({})
    assert [leg.dial_string for leg in p.fallback] == [AGENTS[e].dial_string for e in ("1001", "1002", "1003")]


def test_empty_group_has_empty_fallback():
    p = plan(bindings(auto("1001")), group=Group("nobody"))
    assert p.fallback == () and p.agent == "1001"


# --- safety ----------------------------------------------------------------------------------

@pytest.mark.parametrize("hostile", [
    "0501234567,user/6666", "x|sofia/gateway/evil/1", "${system rm -rf /}", "[x=1]1001", "{a=b}1",
    "1001\napi originate", "1001'\"&^",
])
def test_dial_string_comes_only_from_agent_config(hostile):
    # Even if a hostile caller ID reached decide (normalisation would refuse it) and even if a
    # binding named it as the agent, no leg's dial string contains caller-supplied text.
    configured = {a.dial_string for a in AGENTS.values()}
    for bs in ({}, bindings(auto("1001")), bindings(manual(hostile)),
               {MANUAL: Binding(hostile, "1002", MANUAL, NOW)}):
        p = decide(hostile, SALES, NOW, DEFAULT, bs, AGENTS)
        legs = ([p.sticky] if p.sticky else []) + list(p.fallback)
        assert legs
        for leg in legs:
            assert leg.dial_string in configured
            assert hostile not in leg.dial_string


# --- the plan as JSON ------------------------------------------------------------------------

def test_plan_as_dict_has_the_documented_json_keys():
    p = plan(bindings(manual("1002")))
    d = p.as_dict()
    assert {"client", "group", "agent", "source", "reason", "timeout", "fallback"} <= set(d)
    assert (d["client"], d["group"], d["agent"], d["source"], d["reason"], d["timeout"]) == (
        CLIENT, "sales", "1002", "manual", "manual", 20.0)
    assert [leg["agent"] for leg in d["fallback"]] == ["1001", "1002", "1003"]
    assert all(set(leg) >= {"agent", "dial_string", "timeout"} for leg in d["fallback"])
    assert json.loads(json.dumps(d)) == d


def test_plan_as_dict_without_sticky_leg():
    d = plan({}, client=None).as_dict()
    assert (d["client"], d["agent"], d["source"], d["reason"], d["timeout"]) == (
        None, None, None, "not_a_client", None)
    json.dumps(d)


def test_route_plan_agent_property():
    leg = Leg("1001", "user/1001@x", timedelta(seconds=20))
    assert RoutePlan(CLIENT, "sales", leg, AUTO, "auto").agent == "1001"
    assert RoutePlan(CLIENT, "sales", None, None, "no_binding").agent is None


def test_decide_is_pure():
    bs = bindings(manual("1002"), auto("1001"))
    assert plan(bs) == plan(bs)
