"""Store: schema and migrations, agents, groups, bindings, call records and learning.

Every test of a `store` runs on an SQLite file and on PostgreSQL (a fresh schema, dropped
afterwards): conftest.py's store fixture, the storage contract shared with the other test modules.
"""

import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import peewee
import pytest
from databases import PG_URL
from hypothesis import given
from hypothesis import strategies as st

from fsrouter import store as store_module
from fsrouter.binding_path import BindingPath
from fsrouter.core import rules
from fsrouter.core.model import AUTO, INBOUND, MANUAL, OUTBOUND, Call
from fsrouter.core.settings import Settings
from fsrouter.service import Service
from fsrouter.store import Store, StoreError, sqltext

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
CLIENT = "+380501234567"
OTHER = "+380671112233"


@pytest.fixture
def staffed(store):
    """A store with group sales and agents 1001 (Anna) and 1002 (Bohdan) in it."""
    store.add_group("sales")
    store.add_agent("1001", "Anna", groups=["sales"])
    store.add_agent("1002", "Bohdan", groups=["sales"])
    return store


def inbound(agent="1001", ended=T0, talk=60.0, client=CLIENT, uuid_=None):
    return Call(
        direction=INBOUND,
        client=client,
        agent=agent,
        started_at=ended - timedelta(seconds=talk + 5),
        ended_at=ended,
        talk_seconds=talk,
        answered=talk > 0,
        uuid=uuid_,
    )


# -- schema and migrations ---------------------------------------------------------------------


def test_open_creates_every_table_at_the_latest_schema_version(store):
    assert store.schema_version() == store_module.MIGRATIONS[-1][0]
    for table in (
        "schema_version",
        "setting",
        "agent",
        "agent_group",
        "membership",
        "binding",
        "call_record",
    ):
        assert store.db.table_exists(table), table


def test_reopening_keeps_data_and_applies_no_migration_twice(store_url):
    with Store.open(store_url) as first:
        first.add_agent("1001", "Anna")
    with Store.open(store_url) as second:
        assert list(second.agents()) == ["1001"]
        assert second.m.SchemaVersion.select().count() == len(store_module.MIGRATIONS)


def test_migration_8_gives_a_version_7_outbox_state_id_for_state_next_at(store_url):
    with Store.open(store_url) as made:
        index = next(i.name for i in made.db.get_indexes("outbox") if i.columns == ["state", "id"])
        made.db.execute_sql(f'DROP INDEX "{index}"')
        made.db.execute_sql('CREATE INDEX "outboxrow_state_next_at" ON "outbox" ("state", "next_at")')
        made.m.SchemaVersion.delete().where(made.m.SchemaVersion.version == 8).execute()
    with Store.open(store_url) as upgraded:
        assert upgraded.schema_version() == 8
        columns = [i.columns for i in upgraded.db.get_indexes("outbox")]
        assert ["state", "id"] in columns and ["state", "next_at"] not in columns


def test_a_new_migration_is_applied_on_open_with_playhouse_migrate(store_url, monkeypatch):
    Store.open(store_url).close()

    def add_note(db, migrator, m):
        from playhouse.migrate import migrate

        migrate(migrator.add_column("agent", "note", peewee.TextField(default="")))

    latest = store_module.MIGRATIONS[-1][0]
    monkeypatch.setattr(store_module, "MIGRATIONS",
                        store_module.MIGRATIONS + [(latest + 1, "agent note", add_note)])
    with Store.open(store_url) as upgraded:
        assert upgraded.schema_version() == latest + 1
        assert "note" in [c.name for c in upgraded.db.get_columns("agent")]


def test_a_failing_migration_leaves_the_database_as_it_was(store_url, monkeypatch):
    Store.open(store_url).close()

    def broken(db, migrator, m):
        from playhouse.migrate import migrate

        migrate(migrator.add_column("agent", "note", peewee.TextField(default="")))
        raise RuntimeError("disk on fire")

    latest = store_module.MIGRATIONS[-1][0]
    monkeypatch.setattr(store_module, "MIGRATIONS", store_module.MIGRATIONS + [(latest + 1, "broken", broken)])
    with pytest.raises(RuntimeError):
        Store.open(store_url)
    monkeypatch.undo()
    with Store.open(store_url) as again:
        assert again.schema_version() == latest
        assert "note" not in [c.name for c in again.db.get_columns("agent")]


def test_a_database_newer_than_the_code_is_refused(store_url):
    with Store.open(store_url) as newer:
        newer.m.SchemaVersion.create(version=99, name="from the future", applied_at=T0)
    with pytest.raises(StoreError, match="newer"):
        Store.open(store_url)


def test_sqlite_runs_in_wal_mode_with_foreign_keys_and_a_busy_timeout(tmp_path):
    with Store.open(f"sqlite:///{tmp_path / 'x.db'}") as sqlite:
        assert sqlite.db.execute_sql("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert sqlite.db.execute_sql("PRAGMA foreign_keys").fetchone()[0] == 1
        assert sqlite.db.execute_sql("PRAGMA busy_timeout").fetchone()[0] >= 1000


@pytest.mark.parametrize(
    "url", ["nosuchdb://x/y", "postgresql://127.0.0.1:5432", "postgresql://nobody@127.0.0.1:1/x"]
)
def test_a_bad_or_unreachable_database_url_is_a_one_line_store_error(url):
    with pytest.raises(StoreError) as caught:
        Store.open(url)
    assert "\n" not in str(caught.value)


def test_a_password_in_the_url_is_not_repeated_in_errors():
    with pytest.raises(StoreError) as caught:
        Store.open("postgresql://bob:hunter2@127.0.0.1:1/x")
    assert "hunter2" not in str(caught.value)


# -- settings ----------------------------------------------------------------------------------


def test_settings_are_the_defaults_of_settings_py_when_none_are_stored(store):
    assert store.settings() == Settings()
    assert store.m.Setting.select().count() == 0


def test_set_setting_stores_the_normalised_text_and_survives_reopening(store_url):
    with Store.open(store_url) as first:
        assert first.set_setting("lookback", "1440m").lookback == timedelta(days=1)
        first.set_setting("mode", "MANUAL")
        assert first.m.Setting.get_by_id("lookback").value == "1d"
    with Store.open(store_url) as second:
        assert second.settings() == Settings(lookback=timedelta(days=1), mode="manual")


@pytest.mark.parametrize(
    "key, text",
    [
        ("nope", "1"),
        ("lookback", "soon"),
        ("sticky_timeout", "0"),
        ("mode", "sometimes"),
        ("default_region", "XX"),
    ],
)
def test_set_setting_refuses_unknown_keys_and_bad_values_with_one_line(store, key, text):
    with pytest.raises(StoreError) as caught:
        store.set_setting(key, text)
    assert "\n" not in str(caught.value)
    assert store.settings() == Settings()


# -- agents ------------------------------------------------------------------------------------


def test_add_agent_defaults_its_dial_string_and_fills_its_groups(staffed):
    anna = staffed.agents()["1001"]
    assert anna.dial_string == "user/1001@${domain_name}"
    assert anna.groups == frozenset({"sales"}) and anna.enabled and anna.priority == 100


def test_add_agent_keeps_a_given_dial_string_and_priority(store):
    store.add_agent("1003", "Olena", dial_string="sofia/gateway/gw/380441234567", priority=5)
    olena = store.agents()["1003"]
    assert (olena.dial_string, olena.priority) == ("sofia/gateway/gw/380441234567", 5)


@pytest.mark.parametrize("ext", ["", "10 01", "1001;hangup", "x" * 33, "1001\n"])
def test_add_agent_refuses_an_extension_outside_the_safe_characters(store, ext):
    with pytest.raises(StoreError):
        store.add_agent(ext, "Anna")
    assert store.agents() == {}


@pytest.mark.parametrize("dial", ["user/1001\napi hupall", "user/1001\r", "user/\x001001", "user/1001\t"])
def test_add_agent_refuses_a_dial_string_with_newlines_or_control_characters(store, dial):
    with pytest.raises(StoreError):
        store.add_agent("1001", "Anna", dial_string=dial)
    assert store.agents() == {}


def test_add_agent_with_an_unknown_group_fails_and_adds_nothing(store):
    store.add_group("sales")
    with pytest.raises(StoreError, match="unknown group 'support'"):
        store.add_agent("1001", "Anna", groups=["sales", "support"])
    assert store.agents() == {}
    assert store.m.Member.select().count() == 0


def test_add_agent_twice_is_a_duplicate_error(staffed):
    with pytest.raises(StoreError, match="already exists"):
        staffed.add_agent("1001", "Someone else")
    assert staffed.agents()["1001"].name == "Anna"


def test_disable_and_enable_an_agent(staffed):
    staffed.set_agent_enabled("1001", False)
    assert not staffed.agents()["1001"].enabled
    staffed.set_agent_enabled("1001", True)
    assert staffed.agents()["1001"].enabled


@pytest.mark.parametrize(
    "action",
    [
        lambda s: s.set_agent_enabled("9999", False),
        lambda s: s.remove_agent("9999"),
        lambda s: s.update_agent("9999", name="X"),
    ],
)
def test_changing_an_unknown_agent_is_an_error(staffed, action):
    with pytest.raises(StoreError, match="unknown agent '9999'"):
        action(staffed)


def test_remove_agent_keeps_their_bindings_and_drops_their_memberships(staffed):
    BindingPath(staffed).set_manual_binding(CLIENT, "1001", T0)
    staffed.remove_agent("1001")
    assert "1001" not in staffed.agents()
    assert staffed.bindings_for(CLIENT)[MANUAL].agent == "1001"
    assert staffed.m.Member.select().where(staffed.m.Member.agent == "1001").count() == 0


def test_update_agent_changes_only_what_is_given(staffed):
    staffed.update_agent("1001", priority=3)
    anna = staffed.agents()["1001"]
    assert (anna.name, anna.priority, anna.dial_string) == ("Anna", 3, "user/1001@${domain_name}")
    with pytest.raises(StoreError):
        staffed.update_agent("1001", dial_string="user/1001\nx")


# -- groups ------------------------------------------------------------------------------------


def test_add_group_stores_strategy_scope_and_ring_timeout(store):
    store.add_group("support", "sequential", "members", timedelta(seconds=15))
    support = store.group("support")
    assert (support.strategy, support.sticky_scope, support.ring_timeout) == (
        "sequential",
        "members",
        timedelta(seconds=15),
    )
    assert list(store.groups()) == ["support"]
    assert store.group("nope") is None


@pytest.mark.parametrize(
    "args",
    [
        ("bad name",),
        ("sales\n",),
        ("g", "round-robin"),
        ("g", "simultaneous", "everyone"),
        ("g", "simultaneous", "any", timedelta(0)),
    ],
)
def test_add_group_refuses_bad_names_strategies_scopes_and_timeouts(store, args):
    with pytest.raises(StoreError):
        store.add_group(*args)
    assert store.groups() == {}


def test_add_group_twice_is_a_duplicate_error(store):
    store.add_group("sales")
    with pytest.raises(StoreError, match="already exists"):
        store.add_group("sales", "sequential")
    assert store.group("sales").strategy == "simultaneous"


def test_remove_group_keeps_its_agents_and_drops_the_memberships(staffed):
    staffed.remove_group("sales")
    assert staffed.groups() == {}
    assert set(staffed.agents()) == {"1001", "1002"}
    assert all(not a.groups for a in staffed.agents().values())
    with pytest.raises(StoreError, match="unknown group"):
        staffed.remove_group("sales")


def test_group_membership_can_be_added_and_removed(staffed):
    staffed.add_group("support")
    staffed.add_member("support", "1002")
    staffed.add_member("support", "1002")  # twice is harmless
    assert staffed.agents()["1002"].groups == {"sales", "support"}
    staffed.remove_member("sales", "1002")
    assert staffed.agents()["1002"].groups == {"support"}
    with pytest.raises(StoreError):
        staffed.add_member("nope", "1002")


# -- bindings ----------------------------------------------------------------------------------


def test_bindings_for_returns_manual_and_learned_keyed_by_source_in_utc(staffed):
    BindingPath(staffed).set_manual_binding(CLIENT, "1001", T0, expires_at=T0 + timedelta(days=3))
    BindingPath(staffed).learn(inbound("1002"), Settings())
    found = staffed.bindings_for(CLIENT)
    assert set(found) == {MANUAL, AUTO}
    assert (found[MANUAL].agent, found[MANUAL].at, found[MANUAL].expires_at) == (
        "1001",
        T0,
        T0 + timedelta(days=3),
    )
    assert found[AUTO].agent == "1002" and found[AUTO].at.tzinfo == UTC
    assert staffed.bindings_for(OTHER) == {}


def test_bindings_for_is_one_query(staffed, monkeypatch):
    BindingPath(staffed).set_manual_binding(CLIENT, "1001", T0)
    seen = []
    real = staffed.db.execute_sql
    monkeypatch.setattr(
        staffed.db,
        "execute_sql",
        lambda sql, params=None, *a, **k: (seen.append(sql), real(sql, params, *a, **k))[1],
    )
    staffed.bindings_for(CLIENT)
    assert len(seen) == 1


def test_bindings_for_uses_the_primary_key_index_on_sqlite(tmp_path):
    with Store.open(f"sqlite:///{tmp_path / 'x.db'}") as sqlite:
        plan = " ".join(
            str(row)
            for row in sqlite.db.execute_sql(
                "EXPLAIN QUERY PLAN " + sqlite._bindings_sql, (CLIENT,)
            ).fetchall()
        )
        assert "USING INDEX" in plan or "PRIMARY KEY" in plan, plan
        assert "SCAN" not in plan.replace("SEARCH", ""), plan


def test_times_with_another_offset_are_stored_as_utc(staffed):
    kyiv = timezone(timedelta(hours=3))
    BindingPath(staffed).set_manual_binding(CLIENT, "1001", datetime(2024, 5, 1, 15, 0, tzinfo=kyiv))
    assert staffed.bindings_for(CLIENT)[MANUAL].at == T0
    assert staffed.bindings_for(CLIENT)[MANUAL].at.utcoffset() == timedelta(0)


def test_set_manual_binding_requires_a_known_agent(staffed):
    with pytest.raises(StoreError, match="unknown agent '9999'"):
        BindingPath(staffed).set_manual_binding(CLIENT, "9999", T0)
    assert staffed.bindings_for(CLIENT) == {}


def test_set_manual_binding_refuses_an_expiry_in_the_past_and_a_raw_number(staffed):
    with pytest.raises(StoreError, match="future"):
        BindingPath(staffed).set_manual_binding(CLIENT, "1001", T0, expires_at=T0)
    for raw in ("0501234567", CLIENT + "\n"):
        with pytest.raises(StoreError, match="E.164"):
            BindingPath(staffed).set_manual_binding(raw, "1001", T0)


def test_set_manual_binding_replaces_the_previous_manual_one(staffed):
    BindingPath(staffed).set_manual_binding(CLIENT, "1001", T0, expires_at=T0 + timedelta(days=1))
    BindingPath(staffed).set_manual_binding(CLIENT, "1002", T0 + timedelta(hours=1))
    manual = staffed.bindings_for(CLIENT)[MANUAL]
    assert (manual.agent, manual.at, manual.expires_at) == ("1002", T0 + timedelta(hours=1), None)
    assert staffed.m.Binding.select().count() == 1


def test_remove_bindings_removes_only_the_sources_asked(staffed):
    BindingPath(staffed).set_manual_binding(CLIENT, "1001", T0)
    BindingPath(staffed).learn(inbound("1002"), Settings())
    assert BindingPath(staffed).remove_bindings(CLIENT, [AUTO]) == 1
    assert set(staffed.bindings_for(CLIENT)) == {MANUAL}
    assert BindingPath(staffed).remove_bindings(CLIENT, [MANUAL, AUTO]) == 1
    assert staffed.bindings_for(CLIENT) == {}


def test_list_bindings_filters_by_agent(staffed):
    BindingPath(staffed).set_manual_binding(CLIENT, "1001", T0)
    BindingPath(staffed).set_manual_binding(OTHER, "1002", T0)
    assert [b.client for b in staffed.list_bindings()] == [CLIENT, OTHER]
    assert [b.client for b in staffed.list_bindings(agent="1002")] == [OTHER]


def test_list_stale_shows_disabled_deleted_expired_and_too_old_bindings_only(staffed):
    now = T0 + timedelta(days=40)
    staffed.add_agent("1003", "Olena")
    staffed.add_agent("1004", "Petro")
    BindingPath(staffed).set_manual_binding("+380501000001", "1001", T0)  # fine: manual never ages
    BindingPath(staffed).set_manual_binding("+380501000002", "1002", T0)  # agent disabled below
    BindingPath(staffed).set_manual_binding("+380501000003", "1003", T0)  # agent deleted below
    BindingPath(staffed).set_manual_binding("+380501000004", "1001", T0, expires_at=T0 + timedelta(days=1))  # expired
    BindingPath(staffed).learn(
        inbound("1004", ended=now - timedelta(days=31), client="+380501000005"), Settings()
    )  # too old
    BindingPath(staffed).learn(
        inbound("1004", ended=now - timedelta(days=30), client="+380501000006"), Settings()
    )  # just in
    staffed.set_agent_enabled("1002", False)
    staffed.remove_agent("1003")
    # Stale is the ownership rule's answer (binding list --stale), over what the store lists.
    service = Service(staffed, clock=lambda: now)

    def stale():
        service.invalidate()
        found = staffed.list_bindings()
        standings = service.standings(found)
        return [b for b in found if b.source in standings[b.client].stale]

    assert [b.client for b in stale()] == ["+380501000002", "+380501000003", "+380501000004", "+380501000005"]
    staffed.set_setting("lookback", "0")
    forever = stale()
    assert "+380501000005" not in [b.client for b in forever]


def test_import_bindings_sets_manual_bindings_and_leaves_learned_ones(staffed):
    BindingPath(staffed).learn(inbound("1002"), Settings())
    count = BindingPath(staffed).import_bindings([(CLIENT, "1001"), (OTHER, "1002")], now=T0)
    assert count == 2
    assert staffed.bindings_for(CLIENT)[MANUAL].agent == "1001"
    assert staffed.bindings_for(CLIENT)[AUTO].agent == "1002"
    assert staffed.bindings_for(OTHER)[MANUAL].why == "imported"


def test_import_bindings_is_all_or_nothing(staffed):
    BindingPath(staffed).set_manual_binding(CLIENT, "1002", T0)
    with pytest.raises(StoreError, match="unknown agent '9999'"):
        BindingPath(staffed).import_bindings([(CLIENT, "1001"), (OTHER, "9999")], now=T0)
    assert staffed.bindings_for(CLIENT)[MANUAL].agent == "1002"
    assert staffed.bindings_for(OTHER) == {}


def test_import_bindings_spans_several_statements_and_replaces_existing_rows(staffed):
    rows = [(f"+38050{i:07d}", "1001") for i in range(12_000)]  # several chunks of bound parameters
    assert BindingPath(staffed).import_bindings(rows, now=T0) == 12_000
    BindingPath(staffed).import_bindings([(client, "1002") for client, _ in rows], now=T0 + timedelta(hours=1))
    assert staffed.m.Binding.select().count() == 12_000
    assert staffed.m.Binding.select().where(staffed.m.Binding.agent == "1002").count() == 12_000
    assert staffed.bindings_for(rows[-1][0])[MANUAL].at == T0 + timedelta(hours=1)


# -- calls -------------------------------------------------------------------------------------


def test_save_call_round_trips_every_field_in_utc(store):
    call = Call(
        direction=OUTBOUND,
        client=CLIENT,
        agent="1001",
        started_at=T0,
        ended_at=T0 + timedelta(minutes=2),
        talk_seconds=95.5,
        answered=True,
        uuid="abc",
        group="sales",
        answered_at=T0 + timedelta(seconds=20),
        rung=("1001", "1002"),
        route="sticky",
        outcome="answered",
    )
    store.save_call(call)
    assert store.calls() == [call]


def test_save_call_twice_updates_the_record_instead_of_doubling_it(store):
    store.save_call(inbound(uuid_="u1", talk=5))
    store.save_call(inbound(uuid_="u1", talk=50))
    saved = store.calls()
    assert len(saved) == 1 and saved[0].talk_seconds == 50


def test_a_call_without_uuid_gets_one_derived_from_the_call_so_it_is_saved_once(store):
    first = store.save_call(inbound())
    second = store.save_call(inbound())
    assert first.uuid and first.uuid == second.uuid
    assert len(store.calls()) == 1
    assert store.save_call(inbound(talk=61)).uuid != first.uuid


def test_calls_filters_by_time_and_client_newest_first(store):
    store.save_call(inbound(ended=T0, uuid_="a"))
    store.save_call(inbound(ended=T0 + timedelta(hours=1), uuid_="b"))
    store.save_call(inbound(ended=T0 + timedelta(hours=2), uuid_="c", client=OTHER))
    assert [c.uuid for c in store.calls()] == ["c", "b", "a"]
    assert [c.uuid for c in store.calls(since=T0 + timedelta(minutes=30))] == ["c", "b"]
    assert [c.uuid for c in store.calls(client=CLIENT)] == ["b", "a"]
    assert [c.uuid for c in store.calls(limit=1)] == ["c"]


# -- learning ----------------------------------------------------------------------------------


def test_learn_creates_then_replaces_the_learned_binding(staffed):
    first = BindingPath(staffed).learn(inbound("1001", ended=T0), Settings())
    assert (first.agent, first.source, first.at) == ("1001", AUTO, T0)
    second = BindingPath(staffed).learn(inbound("1002", ended=T0 + timedelta(hours=1)), Settings())
    assert second.agent == "1002"
    assert staffed.bindings_for(CLIENT)[AUTO] == second


def test_learn_returns_none_and_writes_nothing_for_a_call_that_does_not_qualify(staffed):
    assert BindingPath(staffed).learn(inbound("1001", talk=3), Settings()) is None
    assert staffed.bindings_for(CLIENT) == {}


def test_learn_never_touches_a_manual_binding(staffed):
    BindingPath(staffed).set_manual_binding(CLIENT, "1001", T0)
    BindingPath(staffed).learn(inbound("1002", ended=T0 + timedelta(hours=1)), Settings())
    assert staffed.bindings_for(CLIENT)[MANUAL].agent == "1001"
    assert staffed.bindings_for(CLIENT)[AUTO].agent == "1002"


def test_the_call_that_ended_later_wins_when_processed_first(staffed):
    BindingPath(staffed).learn(inbound("1002", ended=T0 + timedelta(minutes=1)), Settings())
    assert BindingPath(staffed).learn(inbound("1001", ended=T0), Settings()) is None
    assert staffed.bindings_for(CLIENT)[AUTO].agent == "1002"


def test_learn_does_not_overwrite_a_later_binding_written_after_it_read(staffed, monkeypatch):
    # Another process writes the later call between our read and our write (insert path).
    BindingPath(staffed).learn(inbound("1002", ended=T0 + timedelta(minutes=1)), Settings())
    real = staffed.bindings_for
    reads = []

    def first_read_is_stale(client):
        reads.append(client)
        return {} if len(reads) == 1 else real(client)

    monkeypatch.setattr(staffed, "bindings_for", first_read_is_stale)
    assert BindingPath(staffed).learn(inbound("1001", ended=T0), Settings()) is None
    assert len(reads) == 2
    assert real(CLIENT)[AUTO].agent == "1002"


def test_learn_does_not_overwrite_a_binding_changed_after_it_read(staffed, monkeypatch):
    # Same, on the update path: we read an old binding, another process already replaced it.
    BindingPath(staffed).learn(inbound("1001", ended=T0 - timedelta(days=1)), Settings())
    stale_view = staffed.bindings_for(CLIENT)
    BindingPath(staffed).learn(inbound("1002", ended=T0 + timedelta(minutes=1)), Settings())
    real = staffed.bindings_for
    reads = []
    monkeypatch.setattr(
        staffed,
        "bindings_for",
        lambda client: (reads.append(client), stale_view if len(reads) == 1 else real(client))[1],
    )
    assert BindingPath(staffed).learn(inbound("1001", ended=T0), Settings()) is None
    assert real(CLIENT)[AUTO].agent == "1002"


def test_concurrent_writers_leave_the_latest_ended_call_bound(store_url):
    with Store.open(store_url) as setup:
        for ext in ("1001", "1002", "1003", "1004"):
            setup.add_agent(ext, ext)
    calls = [
        inbound(f"100{1 + i % 4}", ended=T0 + timedelta(seconds=i), uuid_=f"c{i:03d}") for i in range(80)
    ]
    latest = calls[-1]
    errors = []

    def worker(mine):
        try:
            with Store.open(store_url) as own:
                for call in mine:
                    BindingPath(own).record_call(call, Settings())
        except Exception as exc:  # noqa: BLE001  (surfaced below, whatever it is)
            errors.append(exc)

    # Four connections, each fed the calls in a different order, the latest-ended first for one.
    batches = [calls[i::4][::-1] if i % 2 else calls[i::4] for i in range(4)]
    threads = [threading.Thread(target=worker, args=(batch,)) for batch in batches]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with Store.open(store_url) as check:
        bound = check.bindings_for(CLIENT)[AUTO]
        assert (bound.agent, bound.at, bound.call_uuid) == (latest.agent, latest.ended_at, latest.uuid)
        assert len(check.calls()) == 80


def test_record_call_saves_and_learns_or_does_neither(staffed, monkeypatch):
    assert BindingPath(staffed).record_call(inbound("1001", uuid_="ok"), Settings()).agent == "1001"
    assert [c.uuid for c in staffed.calls()] == ["ok"]

    def boom(*args):
        raise RuntimeError("learning broke")

    monkeypatch.setattr(rules, "learn", boom)
    with pytest.raises(RuntimeError):
        BindingPath(staffed).record_call(inbound("1002", ended=T0 + timedelta(hours=1), uuid_="lost"), Settings())
    assert [c.uuid for c in staffed.calls()] == ["ok"]


def test_record_call_uses_the_settings_given(staffed):
    outbound_unanswered = replace(inbound("1002", talk=0), direction=OUTBOUND, answered=False)
    assert BindingPath(staffed).record_call(outbound_unanswered, Settings(outbound_requires_answer=True)) is None
    assert BindingPath(staffed).record_call(outbound_unanswered, Settings()).agent == "1002"


def test_a_connection_the_server_dropped_is_replaced_on_the_next_call(postgres_url):
    import psycopg2

    with Store.open(postgres_url) as opened:
        opened.add_agent("1001", "Anna")
        BindingPath(opened).set_manual_binding(CLIENT, "1001", T0)
        pid = opened.db.execute_sql("SELECT pg_backend_pid()").fetchone()[0]
        admin = psycopg2.connect(PG_URL)
        admin.autocommit = True
        with admin.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(%s)", (pid,))
        admin.close()
        with pytest.raises((peewee.OperationalError, peewee.InterfaceError)):
            opened.bindings_for(CLIENT)
        assert opened.bindings_for(CLIENT)[MANUAL].agent == "1001"


def test_routing_inputs_is_client_of_and_bindings_for_in_one_statement(staffed, monkeypatch):
    store = staffed
    store.add_agent("1003", "Oksana", groups=["sales"])
    other, third, switchboard = "+380671112233", "+380931112233", "+380441234567"
    BindingPath(store).set_manual_binding(CLIENT, "1001", T0)
    BindingPath(store).record_call(inbound(agent="1002", client=CLIENT), Settings())
    BindingPath(store).link_numbers(CLIENT, other)
    BindingPath(store).block(CLIENT, "1003")
    store.set_shared(switchboard, True)
    BindingPath(store).set_manual_binding(third, "1002", T0)
    for number in (CLIENT, other, third, switchboard, "+380500000000"):
        owner, shared, blocked = store.client_of(number)
        expected = (owner, shared, blocked, store.bindings_for(owner))
        statements = []
        real = store.db.execute_sql

        def spy(sql, params=None, *args, statements=statements, real=real, **kwargs):
            statements.append(sql)
            return real(sql, params, *args, **kwargs)

        monkeypatch.setattr(store.db, "execute_sql", spy)
        assert store.routing_inputs(number) == expected, number
        monkeypatch.undo()
        assert len(statements) == 1
    assert store.routing_inputs(other)[0] == CLIENT and set(store.routing_inputs(other)[3]) == {"manual", "auto"}
    assert store.routing_inputs(other)[2] == frozenset({"1003"})


@given(st.lists(st.integers(), max_size=50), st.integers(min_value=1, max_value=60))
def test_statement_chunks_are_the_items_in_order_none_empty_none_over_size(items, size):
    chunks = list(sqltext.chunks(iter(items), size))
    assert [x for chunk in chunks for x in chunk] == items
    assert all(0 < len(chunk) <= size for chunk in chunks)
    assert len(chunks) == -(-len(items) // size)
