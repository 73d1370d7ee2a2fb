"""Every binding change through one path (fsrouter/binding_path.py, core/binding_changes.py): each
kind of change writes exactly one binding_history row and one binding.changed outbox entry per
client whose agent moves, in the change's own transaction (a failure mid-way leaves neither),
on SQLite and PostgreSQL; expiries are reported once, whichever daemon sweeps first; the
report's rebinds count every kind."""
from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta

import gevent.lock
import peewee
import pytest
from office import cli_office

from fsrouter.binding_path import BindingPath
from fsrouter.core import binding_changes as kinds
from fsrouter.core import report
from fsrouter.core.binding_changes import BindingChange, Refused
from fsrouter.core.model import AUTO, MANUAL, Binding, Call, Group
from fsrouter.core.settings import Settings
from fsrouter.expiry import ExpirySweep
from fsrouter.http.outbox import PENDING, Outbox
from fsrouter.service import Service
from fsrouter.store import Store

A, B = "+380501234567", "+380671112233"
T0 = datetime(2024, 5, 1, 12, tzinfo=UTC)
HOOK = "http://crm.invalid/hook"


@pytest.fixture
def store(store):
    """conftest's store (SQLite, then PostgreSQL) with group sales, agents 1001-1003 and a webhook."""
    store.add_group("sales")
    for ext in ("1001", "1002", "1003"):
        store.add_agent(ext, f"Agent {ext}", groups=["sales"])
    store.webhook_urls = (HOOK,)
    return store


def call(client, agent, at=T0, **kw):
    kw.setdefault("uuid", f"call-{client}-{agent}-{at.timestamp():.0f}")
    return Call("inbound", client, agent, at, at + timedelta(seconds=60), talk_seconds=60 if agent else 0,
                answered=agent is not None, group="sales", **kw)


def learn(store, client, agent, at=T0):
    return BindingPath(store).record_call(call(client, agent, at), Settings())


def events(store) -> list[dict]:
    return [json.loads(r.body)["data"] for r in Outbox(store).entries() if r.event_type == "binding.changed"]


def moves(rows) -> list[tuple]:
    return [(r["kind"], r["client"], r["from_agent" if "from_agent" in r else "old_agent"],
             r["to_agent" if "to_agent" in r else "new_agent"]) for r in rows]


# What each kind of change needs before it (arrange) and the change itself (act); the one row and
# event it writes: (kind, client, from, to).
def _expired(store):
    return BindingPath(store).report_expired(Settings(), {}, now=T0 + timedelta(hours=2))


def _misses(store):
    miss = call(A, None, T0 + timedelta(hours=1), sticky_agent="1001", rung=("1001",), route="none")
    BindingPath(store).record_call(miss, Settings(), notify=False)
    return BindingPath(store).forget_after_misses(miss, 1)


KINDS = {
    "set": (lambda s: None, lambda s: BindingPath(s).set_manual_binding(A, "1001", T0), (None, "1001")),
    "removed": (lambda s: BindingPath(s).set_manual_binding(A, "1001", T0),
                lambda s: BindingPath(s).remove_bindings(A), ("1001", None)),
    "learned": (lambda s: None, lambda s: learn(s, A, "1001"), (None, "1001")),
    "imported": (lambda s: BindingPath(s).set_manual_binding(A, "1001", T0),
                 lambda s: BindingPath(s).import_bindings([(A, "1002")], T0), ("1001", "1002")),
    "handover": (lambda s: learn(s, A, "1001"), lambda s: BindingPath(s).handover("1001", "1002"), ("1001", "1002")),
    "released": (lambda s: learn(s, A, "1001"), lambda s: BindingPath(s).release_learned("1001"), ("1001", None)),
    "blocked": (lambda s: learn(s, A, "1001"), lambda s: BindingPath(s).block(A, "1001"), ("1001", None)),
    "missed": (lambda s: learn(s, A, "1001"), _misses, ("1001", None)),
    "expired": (lambda s: BindingPath(s).set_manual_binding(A, "1001", T0, expires_at=T0 + timedelta(hours=1)),
                _expired, ("1001", None)),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_each_kind_of_change_writes_one_history_row_and_one_binding_changed_event(store, kind):
    arrange, act, (old, new) = KINDS[kind]
    arrange(store)
    history_before = len(store.binding_changes())
    Outbox(store).purge((PENDING,))
    act(store)
    written = store.binding_changes()[history_before:]
    assert moves(written) == [(kind, A, old, new)]
    assert moves(events(store)) == [(kind, A, old, new)]


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_change_that_fails_mid_way_writes_neither_row_nor_history_nor_event(store, kind, monkeypatch):
    arrange, act, _ = KINDS[kind]
    arrange(store)
    bindings_before, history_before = store.bindings_for(A), store.binding_changes()
    Outbox(store).purge((PENDING,))

    def outbox_fails(events):
        raise peewee.OperationalError("disk full")

    monkeypatch.setattr(store, "_notify", outbox_fails)  # the last write of the transaction
    with pytest.raises(peewee.OperationalError):
        act(store)
    monkeypatch.undo()
    assert store.bindings_for(A) == bindings_before
    assert store.binding_changes() == history_before
    assert Outbox(store).entries() == []


def test_link_merge_writes_one_history_row_and_one_event_per_client_whose_agent_moves(store):
    learn(store, A, "1001")
    learn(store, B, "1002", at=T0 + timedelta(hours=1))  # the later call: B's agent wins the merge
    history_before = len(store.binding_changes())
    Outbox(store).purge((PENDING,))
    assert BindingPath(store).link_numbers(A, B) == A
    expected = [("merged", B, "1002", None), ("merged", A, "1001", "1002")]
    assert moves(store.binding_changes()[history_before:]) == expected
    assert moves(events(store)) == expected
    assert store.bindings_for(A)[AUTO].agent == "1002" and store.bindings_for(B) == {}


def test_binding_changed_names_who_is_responsible_for_the_client_after_the_change(store):
    path, recent = BindingPath(store), datetime.now(UTC) - timedelta(hours=1)  # inside the look-back window
    path.set_manual_binding(A, "1002", recent)
    learn(store, A, "1001", at=recent)  # learned 1001, but the manual binding routes first
    learn(store, B, "1001", at=recent)
    path.handover("1001", "1003")
    path.block(B, "1003")
    assert [(e["kind"], e["client"], e["bound_agent"]) for e in events(store)] == [
        ("set", A, "1002"), ("learned", A, "1002"), ("learned", B, "1001"),
        ("handover", A, "1002"), ("handover", B, "1003"), ("blocked", B, None)]


def test_a_change_that_keeps_the_agent_is_written_but_not_reported(store):
    BindingPath(store).set_manual_binding(A, "1001", T0)
    Outbox(store).purge((PENDING,))
    history_before = len(store.binding_changes())
    BindingPath(store).set_manual_binding(A, "1001", T0 + timedelta(minutes=1), expires_at=T0 + timedelta(days=1))
    assert store.bindings_for(A)[MANUAL].expires_at == T0 + timedelta(days=1)
    assert len(store.binding_changes()) == history_before and events(store) == []


def test_disable_and_rm_release_learned_bindings_with_an_event(tmp_path, monkeypatch):
    run = cli_office(tmp_path, monkeypatch, agents=("1001", "1002"))
    with Store.open(run.url) as store:
        learn(store, A, "1001", at=datetime.now(UTC) - timedelta(hours=1))
        learn(store, B, "1002", at=datetime.now(UTC) - timedelta(hours=1))
    run("agent", "disable", "1001")
    run("agent", "rm", "1002")
    with Store.open(run.url) as store:
        released = [moves([r])[0] for r in store.binding_changes() if r["kind"] == "released"]
    assert released == [("released", A, "1001", None), ("released", B, "1002", None)]


def test_agent_rm_handover_to_sends_binding_changed_and_writes_history(tmp_path, monkeypatch):
    run = cli_office(tmp_path, monkeypatch, agents=("1001", "1002", "1003"))
    with Store.open(run.url) as store:
        learn(store, A, "1002", at=datetime.now(UTC) - timedelta(hours=1))
    run("binding", "set", B, "1002")
    run("agent", "rm", "1002", "--handover-to", "1003")
    with Store.open(run.url) as store:
        handed = [moves([r])[0] for r in store.binding_changes() if r["kind"] == "handover"]
    assert sorted(handed) == [("handover", A, "1002", "1003"), ("handover", B, "1002", "1003")]


# -- expiry --------------------------------------------------------------------------------------

def test_an_expiry_is_reported_once_and_the_binding_stays_listed_as_stale(store):
    path = BindingPath(store)
    path.set_manual_binding(A, "1001", T0, expires_at=T0 + timedelta(hours=1))
    learn(store, B, "1002")
    Outbox(store).purge((PENDING,))
    assert path.report_expired(Settings(), {}, now=T0 + timedelta(minutes=30)) == 0
    later = T0 + timedelta(days=31)  # past the manual expiry and the 30-day look-back window
    assert path.report_expired(Settings(), {}, now=later, page=1) == 2
    assert path.report_expired(Settings(), {}, now=later + timedelta(minutes=1)) == 0
    assert sorted(moves(events(store))) == [("expired", A, "1001", None), ("expired", B, "1002", None)]
    standings = Service(store).standings(store.list_bindings(), now=later)
    assert {(client, source) for client, s in standings.items() for source in s.stale} == {(A, MANUAL), (B, AUTO)}


def test_a_learned_binding_expires_only_past_every_groups_look_back_window(store):
    store.set_group_options("sales", settings={"lookback": "60d"})
    learn(store, A, "1001")
    groups = store.groups()
    assert BindingPath(store).report_expired(Settings(), groups, now=T0 + timedelta(days=45)) == 0
    assert BindingPath(store).report_expired(Settings(), groups, now=T0 + timedelta(days=61)) == 1


def test_a_binding_confirmed_again_after_its_expiry_can_expire_again(store):
    learn(store, A, "1001")
    path = BindingPath(store)
    assert path.report_expired(Settings(), {}, now=T0 + timedelta(days=31)) == 1
    learn(store, A, "1001", at=T0 + timedelta(days=32))  # the client called again
    assert path.report_expired(Settings(), {}, now=T0 + timedelta(days=40)) == 0
    assert path.report_expired(Settings(), {}, now=T0 + timedelta(days=63)) == 1


def test_two_daemons_sweeping_together_report_an_expiry_once(store_url):
    if store_url.startswith("sqlite"):
        pytest.skip("two daemons share one database on PostgreSQL")
    with Store.open(store_url) as one, Store.open(store_url) as two:
        one.add_agent("1001", "Agent 1001")
        for store in (one, two):
            store.webhook_urls = (HOOK,)
        for n in range(50):
            BindingPath(one).set_manual_binding(f"+38050123{n:04d}", "1001", T0, expires_at=T0 + timedelta(hours=1))
        Outbox(one).purge((PENDING,))
        counts = []
        start = threading.Barrier(2)

        def sweep(store):
            start.wait()
            counts.append(BindingPath(store).report_expired(Settings(), {}, now=T0 + timedelta(hours=2), page=7))

        threads = [threading.Thread(target=sweep, args=(s,)) for s in (one, two)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sum(counts) == 50
        assert len([r for r in one.binding_changes() if r["kind"] == "expired"]) == 50
        assert len({r["client"] for r in one.binding_changes() if r["kind"] == "expired"}) == 50
        assert [e["kind"] for e in events(one)] == ["expired"] * 50


def test_the_daemons_expiry_sweep_reports_through_the_service_and_counts(store):
    now = [T0]
    BindingPath(store).set_manual_binding(A, "1001", T0, expires_at=T0 + timedelta(hours=1))
    sweep = ExpirySweep(Service(store, clock=lambda: now[0], cache_ttl=0), gevent.lock.RLock(), every=0.01)
    assert sweep.run_once() == 0
    now[0] = T0 + timedelta(hours=2)
    assert (sweep.run_once(), sweep.run_once(), sweep.reported) == (1, 0, 1)


# -- the report ----------------------------------------------------------------------------------

def test_the_reports_rebinds_count_handover_release_block_and_expiry(store):
    path = BindingPath(store)
    learn(store, A, "1001")
    path.handover("1001", "1002")  # A: 1001 -> 1002
    learn(store, B, "1003")
    path.block(B, "1003")  # B: 1003 -> none
    path.set_manual_binding(A, "1003", T0, expires_at=T0 + timedelta(hours=1))
    path.release_learned("1002")  # A learned: 1002 -> none
    path.report_expired(Settings(), {}, now=T0 + timedelta(hours=2))  # A manual: 1003 -> none
    built = report.build([], [], store.binding_changes(rebinds_only=True), agents=("1001", "1002", "1003"))
    by_agent = {f.agent: f for f in built.agents}
    assert {(r.from_agent, r.to_agent, r.kind, r.count) for r in built.rebinds} == {
        ("1001", "1002", "handover", 1), ("1003", None, "blocked", 1), ("1002", None, "released", 1),
        ("1003", None, "expired", 1)}
    assert (by_agent["1001"].rebinds_out, by_agent["1002"].rebinds_in, by_agent["1002"].rebinds_out) == (1, 1, 1)
    assert by_agent["1003"].rebinds_out == 2
    assert (built.total.rebinds_out, built.total.rebinds_in) == (4, 1)


def test_fsrouter_report_and_its_page_show_released_and_handed_over_rebinds(tmp_path, monkeypatch):
    run = cli_office(tmp_path, monkeypatch, agents=("1001", "1002", "1003"))
    recent = datetime.now(UTC) - timedelta(hours=1)
    with Store.open(run.url) as store:
        learn(store, A, "1001", at=recent)
        learn(store, B, "1002", at=recent)
    run("agent", "rm", "1001", "--handover-to", "1003")
    run("agent", "disable", "1002")
    out = run("report", "--since", "1d", "--html", str(tmp_path / "r.html"))
    assert "handover" in out and "released" in out
    data = json.loads(run("report", "--since", "1d", "--json"))
    assert {(r["from"], r["to"], r["kind"]) for r in data["rebinds"]} == {
        ("1001", "1003", "handover"), ("1002", None, "released")}
    page = (tmp_path / "r.html").read_text()
    assert "<td>released</td>" in page and "<td>handover</td>" in page


# -- the pure decisions --------------------------------------------------------------------------

def test_handover_releases_a_learned_binding_of_a_client_kept_away_and_leaves_a_manual_one():
    learned = Binding(A, "1001", AUTO, T0)
    manual = Binding(B, "1001", MANUAL, T0)
    changes = kinds.handed_over([learned, manual], "1001", "1002", {A: frozenset({"1002"}),
                                                                      B: frozenset({"1002"})}, T0)
    assert [(c.kind, c.client, c.to_agent) for c in changes] == [("released", A, None)]
    with pytest.raises(Refused):
        kinds.handed_over([learned], "1001", "1001", {}, T0)


def test_a_change_is_reported_only_when_the_agent_moves():
    old = Binding(A, "1001", MANUAL, T0)
    assert not BindingChange(A, MANUAL, old, Binding(A, "1001", MANUAL, T0, why="again"), kinds.SET, "", T0).reported
    assert BindingChange(A, MANUAL, old, None, kinds.REMOVED, "", T0).reported


def test_sweep_settings_take_the_longest_look_back_window_and_zero_is_forever():
    base = Settings(lookback=timedelta(days=30))
    assert kinds.sweep_settings(base, [Group("g", overrides=(("lookback", "60d"),))]).lookback == timedelta(days=60)
    assert kinds.sweep_settings(base, [Group("g", overrides=(("lookback", "0s"),))]).lookback == timedelta(0)


def test_the_cli_binding_block_drops_the_learned_binding_with_an_event(tmp_path, monkeypatch):
    run = cli_office(tmp_path, monkeypatch, agents=("1001",))
    with Store.open(run.url) as store:
        learn(store, A, "1001", at=datetime.now(UTC) - timedelta(hours=1))
    assert "dropped the learned binding" in run("binding", "block", A, "1001")
    with Store.open(run.url) as store:
        assert [moves([r])[0] for r in store.binding_changes() if r["kind"] == "blocked"] == [
            ("blocked", A, "1001", None)]

