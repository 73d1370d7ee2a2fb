"""core/ownership.py: the one rule of which binding routes, and why the others do not."""
from datetime import UTC, datetime, timedelta

from fsrouter.core import ownership
from fsrouter.core.model import AUTO, CRM, MANUAL, SCOPE_MEMBERS, Agent, Binding, Group
from fsrouter.core.settings import Settings

CLIENT = "+380501234567"
NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)  # a Wednesday
AGENTS = {ext: Agent(ext, f"Agent {ext}", groups=frozenset({"sales"})) for ext in ("1001", "1002", "1003")}


def bound(source, ext, **kw):
    return Binding(client=CLIENT, agent=ext, source=source, at=kw.pop("at", NOW - timedelta(days=1)), **kw)


def bindings(*items):
    return {b.source: b for b in items}


def test_ownership_gives_every_source_its_verdict_in_the_order_tried():
    owned = ownership.decide(CLIENT, bindings(bound(AUTO, "1002"), bound(MANUAL, "1001"), bound(CRM, "1003")),
                             AGENTS, Settings(), NOW, blocked={"1003"})
    assert [(v.source, v.agent, v.state) for v in owned.verdicts] == [
        (CRM, "1003", "agent_blocked"), (MANUAL, "1001", "active"), (AUTO, "1002", "active")]
    assert (owned.agent, owned.reason, owned.holder) == ("1001", MANUAL, "1001")


def test_ownership_a_source_the_mode_does_not_route_says_mode():
    owned = ownership.decide(CLIENT, bindings(bound(AUTO, "1002")), AGENTS, Settings(mode="manual"), NOW)
    assert (owned.of(AUTO).state, owned.owner, owned.reason, owned.holder) == ("mode", None, "mode", None)


def test_ownership_group_settings_beat_the_global_ones():
    group = Group("sales", overrides=(("mode", "manual"),))
    owned = ownership.decide(CLIENT, bindings(bound(AUTO, "1002")), AGENTS, Settings(), NOW, group=group)
    assert owned.reason == "mode"


def test_ownership_holder_survives_transient_reasons_only():
    night = Group("sales", sticky_hours="mon-fri 09:00-10:00")
    assert ownership.decide(CLIENT, bindings(bound(MANUAL, "1001")), AGENTS, Settings(), NOW,
                            group=night).holder == "1001"
    busy = ownership.decide(CLIENT, bindings(bound(MANUAL, "1001")), AGENTS, Settings(), NOW,
                            availability={"1001": ownership.BUSY})
    assert (busy.reason, busy.owner, busy.holder) == ("agent_busy", None, "1001")
    blocked = ownership.decide(CLIENT, bindings(bound(MANUAL, "1001")), AGENTS, Settings(), NOW,
                               blocked={"1001"})
    assert (blocked.reason, blocked.holder) == ("agent_blocked", None)


def test_ownership_without_a_group_applies_no_scope_and_no_hours():
    outsider = {**AGENTS, "2001": Agent("2001", "Support", groups=frozenset({"support"}))}
    members = Group("sales", sticky_scope=SCOPE_MEMBERS, sticky_hours="mon 00:00-00:01")
    b = bindings(bound(MANUAL, "2001"))
    assert ownership.decide(CLIENT, b, outsider, Settings(), NOW).reason == MANUAL
    assert ownership.decide(CLIENT, b, outsider, Settings(), NOW, group=members).reason == "outside_hours"
    members = Group("sales", sticky_scope=SCOPE_MEMBERS)
    assert ownership.decide(CLIENT, b, outsider, Settings(), NOW, group=members).reason == "outside_scope"


def test_ownership_shared_number_fails_every_binding():
    owned = ownership.decide(CLIENT, bindings(bound(MANUAL, "1001"), bound(AUTO, "1002")), AGENTS,
                             Settings(), NOW, shared=True)
    assert {v.state for v in owned.verdicts} == {"shared_number"} and owned.holder is None


def test_routable_sources_is_the_sources_order_filtered_by_mode():
    assert ownership.routable_sources(Settings()) == (CRM, MANUAL, AUTO)
    assert ownership.routable_sources(Settings(mode="auto", sources=(AUTO, CRM, MANUAL))) == (AUTO, CRM)
    assert ownership.routable_sources(Settings(mode="manual")) == (CRM, MANUAL)


def test_barred_is_what_decide_applies_for_a_shared_number_and_a_blocked_agent():
    assert ownership.barred("1001", blocked={"1001"}) == "agent_blocked"
    assert ownership.barred("1001", blocked={"1001"}, shared=True) == "shared_number"
    assert ownership.barred("1001", blocked={"1002"}) is None
    b = bindings(bound(MANUAL, "1001"))
    assert ownership.decide(CLIENT, b, AGENTS, Settings(), NOW, blocked={"1001"}).reason == "agent_blocked"
    assert ownership.decide(CLIENT, b, AGENTS, Settings(), NOW, shared=True).reason == "shared_number"


def stale(bindings, agents, groups, **kw):
    def decided(group=None):
        return ownership.decide(CLIENT, bindings, agents, Settings(), NOW, group=group, **kw)
    return ownership.lasting(decided(), [decided(ownership.any_hour(g)) for g in groups])


def test_lasting_is_what_routes_in_no_group_at_any_hour():
    sam = {**AGENTS, "2001": Agent("2001", "Sam", groups=frozenset({"support"}))}
    sales = Group("sales", sticky_scope=SCOPE_MEMBERS, sticky_hours="mon 00:00-00:01")
    support = Group("support")
    to_sam = bindings(bound(MANUAL, "2001"))
    # Outside sales's scope, but support rings 2001: not stale; only sales: stale.
    assert stale(to_sam, sam, [sales, support]) == {}
    assert stale(to_sam, sam, [sales]) == {MANUAL: "outside_scope"}
    # Blocked everywhere: the reason without a group, not the first group's outside_scope.
    assert stale(to_sam, sam, [sales, support], blocked={"2001"}) == {MANUAL: "agent_blocked"}
    # Sticky hours and presence pass by themselves; an expiry does not, whatever the hour.
    dnd = {**AGENTS, "1001": Agent("1001", "A", groups=frozenset({"sales"}), dnd=True)}
    assert stale(bindings(bound(MANUAL, "1001")), dnd, [sales]) == {}
    gone = bindings(bound(MANUAL, "1001", expires_at=NOW - timedelta(hours=1)))
    assert stale(gone, AGENTS, [sales]) == {MANUAL: "expired"}
    assert stale(gone, AGENTS, []) == {MANUAL: "expired"}
