"""Missed calls and callbacks: the pure rules (fsrouter.core.missed), the store's rows and history
(SQLite and PostgreSQL), `fsrouter calls missed`, and the daemon recording what they need."""
from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner

from fsrouter import store as store_module
from fsrouter.binding_path import BindingPath
from fsrouter.cli import main
from fsrouter.core import ownership
from fsrouter.core.missed import ANSWERED_AGAIN, CALLBACK, missed_calls
from fsrouter.core.model import AUTO, INBOUND, MANUAL, OUTBOUND, Agent, Binding, Call
from fsrouter.core.settings import Settings
from fsrouter.service import Service
from fsrouter.store import Store

T0 = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)
ANNA = "+380501234567"
BORYS = "+380671112233"


def call(direction, client, agent, at_min, talk=0.0, answered=None, uuid=None, **extra):
    start = T0 + timedelta(minutes=at_min)
    answered = (talk > 0) if answered is None else answered
    return Call(direction=direction, client=client, agent=agent, started_at=start,
                ended_at=start + timedelta(seconds=30 + talk), talk_seconds=talk, answered=answered,
                uuid=uuid or f"{direction}-{client}-{at_min}", **extra)


def missed(client, at_min, **extra):
    return call(INBOUND, client, None, at_min, **extra)


# -- the rules ----------------------------------------------------------------------------------

def test_a_missed_call_stays_open_until_something_closes_it():
    (row,) = missed_calls([missed(ANNA, 0)])
    assert row.is_open and row.closed_by is None and row.callback_agent is None
    assert row.callback_after is None and row.client_answered is None


def test_an_unanswered_callback_attempt_closes_it_and_says_the_client_did_not_answer():
    (row,) = missed_calls([missed(ANNA, 0), call(OUTBOUND, ANNA, "1002", 10, answered=False)])
    assert not row.is_open and row.closed_by == CALLBACK
    assert (row.callback_agent, row.client_answered) == ("1002", False)
    # From the end of the missed call (30 s long) to the start of the callback.
    assert row.callback_after == timedelta(minutes=10) - timedelta(seconds=30)


def test_an_answered_callback_says_the_client_answered():
    (row,) = missed_calls([missed(ANNA, 0), call(OUTBOUND, ANNA, "1001", 5, talk=40)])
    assert (row.closed_by, row.callback_agent, row.client_answered) == (CALLBACK, "1001", True)


def test_the_clients_next_answered_call_closes_it_with_the_agent_who_answered():
    (row,) = missed_calls([missed(ANNA, 0), call(INBOUND, ANNA, "1003", 60, talk=90)])
    assert (row.closed_by, row.callback_agent, row.client_answered) == (ANSWERED_AGAIN, "1003", True)
    assert row.callback_after == timedelta(minutes=59, seconds=30)


def test_a_second_missed_call_does_not_close_the_first_and_one_callback_closes_both():
    rows = missed_calls([missed(ANNA, 0), missed(ANNA, 20)])
    assert [r.is_open for r in rows] == [True, True]
    rows = missed_calls([missed(ANNA, 0), missed(ANNA, 20), call(OUTBOUND, ANNA, "1001", 30, talk=10)])
    assert {r.callback_agent for r in rows} == {"1001"}
    assert sorted(r.callback_after for r in rows) == [timedelta(minutes=9, seconds=30),
                                                       timedelta(minutes=29, seconds=30)]


def test_a_call_before_the_missed_call_or_another_clients_callback_does_not_close_it():
    rows = missed_calls([call(OUTBOUND, ANNA, "1001", -5, talk=10), missed(ANNA, 0),
                         call(OUTBOUND, BORYS, "1001", 5, talk=10)])
    assert [r.is_open for r in rows] == [True]


def test_a_missed_call_after_the_callback_is_open_again():
    rows = missed_calls([missed(ANNA, 0), call(OUTBOUND, ANNA, "1001", 5), missed(ANNA, 9)])
    assert sorted((r.call.started_at, r.is_open) for r in rows) == [
        (T0, False), (T0 + timedelta(minutes=9), True)]


def test_an_inbound_call_with_talk_but_no_agent_is_still_missed():
    # Answered by the IVR or voicemail: no agent spoke to the client.
    rows = missed_calls([call(INBOUND, ANNA, None, 0, talk=20)])
    assert rows and rows[0].is_open


def test_rows_are_listed_bound_agent_first_then_newest_first_and_filtered():
    bindings = {ANNA: "1002", BORYS: "1001"}
    calls = [missed(ANNA, 0), missed(BORYS, 1), missed("+380931112233", 2), missed(BORYS, 3),
             call(OUTBOUND, BORYS, "1001", 4)]
    rows = missed_calls(calls, bindings)
    assert [(r.bound_agent, r.call.started_at.minute) for r in rows] == [
        ("1001", 3), ("1001", 1), ("1002", 0), (None, 2)]
    assert [r.call.started_at.minute for r in missed_calls(calls, bindings, only_open=True)] == [0, 2]
    assert [r.call.started_at.minute for r in missed_calls(calls, bindings, since=T0 + timedelta(minutes=2))] \
        == [3, 2]


def test_the_bound_agent_is_the_manual_binding_before_the_learned_one():
    # Who is bound is the ownership rule's to say (calls missed asks it: Service.missed_calls).
    agents = {ext: Agent(ext, ext) for ext in ("1001", "1002")}

    def bound_agent(bindings):
        return ownership.decide(ANNA, bindings or {}, agents, Settings(), T0).holder

    both = {MANUAL: Binding(ANNA, "1001", MANUAL, T0), AUTO: Binding(ANNA, "1002", AUTO, T0)}
    assert bound_agent(both) == "1001"
    assert bound_agent({AUTO: both[AUTO]}) == "1002"
    assert bound_agent(None) is None


def test_the_owner_is_the_sticky_agent_of_the_call_else_the_bound_agent():
    rows = missed_calls([missed(ANNA, 0, sticky_agent="1003"), missed(BORYS, 0)], {ANNA: "1001", BORYS: "1002"})
    assert {r.client: r.owner for r in rows} == {ANNA: "1003", BORYS: "1002"}


# -- the store ----------------------------------------------------------------------------------

@pytest.fixture
def staffed(store):
    store.add_group("sales")
    for ext in ("1001", "1002", "1003"):
        store.add_agent(ext, f"Agent {ext}", groups=["sales"])
    return store


def test_missed_call_rows_are_the_calls_of_clients_with_a_missed_call_since_then(staffed):
    settings = Settings()
    calls = [call(INBOUND, ANNA, "1001", -120, talk=60),  # before the period
             missed(ANNA, 0), call(OUTBOUND, ANNA, "1002", 10, talk=20),
             call(INBOUND, BORYS, "1001", 5, talk=60),  # answered: Borys missed nothing
             missed("+380931112233", -60)]  # missed before the period
    for c in calls:
        BindingPath(staffed).record_call(c, settings)
    rows = staffed.missed_call_rows(since=T0)
    assert [(c.client, c.direction) for c in rows] == [(ANNA, INBOUND), (ANNA, OUTBOUND)]
    assert {c.client for c in staffed.missed_call_rows()} == {ANNA, "+380931112233"}
    (row,) = Service(staffed, clock=lambda: T0 + timedelta(hours=1)).missed_calls(since=T0)
    assert (row.bound_agent, row.callback_agent, row.client_answered) == ("1002", "1002", True)


def test_sticky_agent_is_saved_and_read_back(staffed):
    staffed.save_call(missed(ANNA, 0, sticky_agent="1002", route="none", rung=("1002", "1001")))
    (saved,) = staffed.calls()
    assert (saved.sticky_agent, saved.route, saved.rung) == ("1002", "none", ("1002", "1001"))


def test_a_change_of_learned_agent_is_written_to_the_history_with_it(staffed):
    settings = Settings()
    BindingPath(staffed).record_call(call(INBOUND, ANNA, "1001", 0, talk=60), settings)
    BindingPath(staffed).record_call(call(INBOUND, ANNA, "1001", 10, talk=60), settings)  # same agent: no change
    BindingPath(staffed).record_call(call(INBOUND, ANNA, "1002", 20, talk=60, group="sales"), settings)
    BindingPath(staffed).record_call(call(INBOUND, ANNA, "1001", 5, talk=60), settings)  # ended earlier: loses
    changes = staffed.binding_changes()
    assert [(c["from_agent"], c["to_agent"], c["group"]) for c in changes] == [(None, "1001", None),
                                                                                ("1001", "1002", "sales")]
    assert staffed.binding_changes(since=T0 + timedelta(minutes=15))[0]["to_agent"] == "1002"


def test_history_is_not_written_when_the_learned_change_is_rolled_back(staffed):
    BindingPath(staffed).record_call(call(INBOUND, ANNA, "1001", 0, talk=60), Settings())
    with pytest.raises(RuntimeError), staffed.transaction():
        BindingPath(staffed).record_call(call(INBOUND, ANNA, "1002", 20, talk=60), Settings())
        raise RuntimeError("the import broke after this call")
    assert [c["to_agent"] for c in staffed.binding_changes()] == ["1001"]
    assert staffed.bindings_for(ANNA)[AUTO].agent == "1001"


def test_migration_2_upgrades_a_version_1_database_keeping_its_calls(store_url, monkeypatch):
    monkeypatch.setattr(store_module, "MIGRATIONS", store_module.MIGRATIONS[:1])
    with Store.open(store_url) as old:
        old.db.execute_sql('ALTER TABLE "call_record" DROP COLUMN "sticky_agent"')
        old.db.execute_sql(
            'INSERT INTO "call_record" ("uuid", "direction", "client", "started_at", "ended_at", "talk_seconds", '
            '"answered", "rung", "outcome") VALUES (\'old\', \'inbound\', %s, %s, %s, 0, %s, \'\', \'missed\')'
            .replace("%s", old.db.param), (ANNA, "2024-05-01 09:00:00.000000", "2024-05-01 09:00:30.000000", False))
        assert not old.db.table_exists("binding_history")
    monkeypatch.undo()
    with Store.open(store_url) as upgraded:
        assert upgraded.schema_version() == store_module.MIGRATIONS[-1][0]
        assert upgraded.db.table_exists("binding_history")
        (kept,) = upgraded.calls()
        assert (kept.uuid, kept.sticky_agent) == ("old", None)
    # A database made by step 1 from today's models already has the column: step 2 passes.
    with Store.open(store_url) as again:
        assert "sticky_agent" in [c.name for c in again.db.get_columns("call_record")]


# -- the command line ---------------------------------------------------------------------------

def test_calls_missed_lists_open_and_called_back_calls_bound_agent_first(tmp_path):
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    now = datetime.now(UTC).replace(microsecond=0)
    with Store.open(url) as s:
        s.add_group("sales")
        for ext in ("1001", "1002"):
            s.add_agent(ext, ext, groups=["sales"])
        BindingPath(s).set_manual_binding(BORYS, "1001", now)
        for c in (replace(missed(ANNA, 0), started_at=now - timedelta(hours=2), ended_at=now - timedelta(hours=2)),
                  replace(call(OUTBOUND, ANNA, "1002", 0, talk=30), started_at=now - timedelta(hours=1),
                          ended_at=now - timedelta(minutes=59, seconds=30)),
                  replace(missed(BORYS, 0), started_at=now - timedelta(minutes=30),
                          ended_at=now - timedelta(minutes=30)),
                  replace(missed("+380931112233", 0), started_at=now - timedelta(days=3),
                          ended_at=now - timedelta(days=3))):
            BindingPath(s).record_call(c, Settings())
    runner = CliRunner()
    result = runner.invoke(main, ["--db", url, "calls", "missed", "--since", "1d", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [(r["bound_agent"], r["client"], r["open"]) for r in rows] == [("1001", BORYS, True),
                                                                          ("1002", ANNA, False)]
    assert (rows[1]["callback_agent"], rows[1]["client_answered"], rows[1]["callback_after_seconds"]) == (
        "1002", True, 3600.0)
    result = runner.invoke(main, ["--db", url, "calls", "missed", "--open"])
    lines = result.output.splitlines()
    assert lines[0].split()[:2] == ["BOUND", "AGENT"]
    assert [line.split()[0] for line in lines[1:]] == ["1001", "-"]  # 7d by default: the 3-day-old one too


# -- the daemon records what missed calls and reports need --------------------------------------

def test_the_daemon_records_the_sticky_agent_and_an_agents_callback_closes_the_missed_call(tmp_path):
    from office import AGENTS, Office

    office = Office(tmp_path)
    try:
        BindingPath(office.store).set_manual_binding(ANNA, "1002", datetime.now(UTC))
        for ext in AGENTS:
            office.fake.agent(ext, busy=True)
        office.call(ANNA)
        (record,) = office.store.calls(client=ANNA)
        assert (record.outcome, record.agent, record.sticky_agent) == ("missed", None, "1002")
        (row,) = office.service.missed_calls()
        assert row.is_open and row.bound_agent == "1002"
        handle = office.fake.agent_calls_out("1002", ANNA, answered=True, talk=3)
        assert handle.done.wait(10)
        office.settle()
        (row,) = office.service.missed_calls()
        assert (row.closed_by, row.callback_agent, row.client_answered) == (CALLBACK, "1002", True)
        assert row.callback_after >= timedelta(0)
    finally:
        office.close()
