"""Service: routing through the store with a cache, the degraded plan, and CSV imports and exports."""

import io
from datetime import UTC, datetime, timedelta

import pytest

from fsrouter.binding_path import BindingPath
from fsrouter.core.model import AUTO, MANUAL, Call
from fsrouter.service import Service, ServiceError, spreadsheet_safe, spreadsheet_unescape
from fsrouter.store import Store

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
CLIENT = "+380501234567"
HEADER = "started_at,direction,client,agent,talk_seconds\n"


class FakeClock:
    def __init__(self, now=T0):
        self.now = now

    def __call__(self):
        return self.now

    def advance(self, **kwargs):
        self.now += timedelta(**kwargs)


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def service_store(tmp_path):
    """An SQLite store with group sales and agents 1001 (Anna), 1002 (Bohdan) in it."""
    with Store.open(f"sqlite:///{tmp_path / 'fsrouter.db'}") as store:
        store.add_group("sales")
        store.add_agent("1001", "Anna", groups=["sales"])
        store.add_agent("1002", "Bohdan", groups=["sales"])
        yield store


@pytest.fixture
def service(service_store, clock):
    return Service(service_store, clock=clock, cache_ttl=5.0)


def rows_of(text):
    """Dicts as csv.DictReader gives them."""
    import csv

    return list(csv.DictReader(io.StringIO(text)))


# -- routing -----------------------------------------------------------------------------------


def test_route_rings_the_manually_bound_agent_first(service, service_store):
    BindingPath(service_store).set_manual_binding(CLIENT, "1002", T0)
    plan = service.route(CLIENT, "sales")
    assert (plan.client, plan.agent, plan.source, plan.reason) == (CLIENT, "1002", MANUAL, "manual")
    assert plan.sticky.timeout == timedelta(seconds=20)
    assert [leg.agent for leg in plan.fallback] == ["1001", "1002"]


@pytest.mark.parametrize("raw", ["0501234567", "380501234567", "+380501234567", "+38 (050) 123-45-67"])
def test_route_finds_the_client_whichever_way_the_number_is_written(service, service_store, raw):
    BindingPath(service_store).set_manual_binding(CLIENT, "1001", T0)
    assert service.route(raw, "sales").agent == "1001"


def test_route_reads_national_numbers_in_the_configured_region(service, service_store):
    service_store.set_setting("default_region", "DE")
    BindingPath(service_store).set_manual_binding("+4915112345678", "1001", T0)
    assert service.route("015112345678", "sales").agent == "1001"


@pytest.mark.parametrize("raw", ["1001", "", "anonymous", "0501234567\nuuid_kill"])
def test_route_of_a_caller_that_is_not_a_client_rings_the_group_only(service, raw):
    plan = service.route(raw, "sales")
    assert (plan.client, plan.sticky, plan.reason) == (None, None, "not_a_client")
    assert [leg.agent for leg in plan.fallback] == ["1001", "1002"]


def test_route_to_an_unknown_group_is_a_service_error(service):
    with pytest.raises(ServiceError, match="unknown group 'support'"):
        service.route(CLIENT, "support")


def test_route_finds_a_group_added_after_the_cache_was_filled(service, service_store):
    service.route(CLIENT, "sales")
    service_store.add_group("support")
    assert service.route(CLIENT, "support").group == "support"


def test_route_applies_the_lookback_window_at_the_time_given(service, service_store):
    BindingPath(service_store).learn(
        Call("inbound", CLIENT, "1002", T0, T0 + timedelta(minutes=1), 60, True), service.settings()
    )
    assert service.route(CLIENT, "sales", now=T0 + timedelta(days=29)).agent == "1002"
    late = service.route(CLIENT, "sales", now=T0 + timedelta(days=31))
    assert (late.agent, late.reason) == (None, "expired")


def test_settings_and_agents_are_cached_until_the_ttl_passes(service, service_store, clock):
    service.route(CLIENT, "sales")
    service_store.set_setting("sticky_timeout", "45s")
    service_store.set_agent_enabled("1001", False)
    BindingPath(service_store).set_manual_binding(CLIENT, "1001", T0)
    clock.advance(seconds=4)
    assert service.settings().sticky_timeout == timedelta(seconds=20)
    assert service.route(CLIENT, "sales").agent == "1001"  # the cached agent is still enabled
    clock.advance(seconds=1)
    assert service.settings().sticky_timeout == timedelta(seconds=45)
    assert service.route(CLIENT, "sales").reason == "agent_disabled"


def test_invalidate_drops_the_cache_at_once(service, service_store):
    service.settings()
    service_store.set_setting("mode", "manual")
    assert service.settings().mode == "both"
    service.invalidate()
    assert service.settings().mode == "manual"


def test_bindings_are_never_cached(service, service_store):
    service.route(CLIENT, "sales")
    BindingPath(service_store).set_manual_binding(CLIENT, "1002", T0)
    assert service.route(CLIENT, "sales").agent == "1002"


# -- the degraded plan -------------------------------------------------------------------------


class DeadStore:
    """A store whose database is gone: any use fails."""

    def __getattr__(self, name):
        raise AssertionError(f"fallback_plan touched the database ({name})")


def test_fallback_plan_rings_the_cached_group_without_touching_the_database(service, service_store):
    BindingPath(service_store).set_manual_binding(CLIENT, "1002", T0)
    service.route(CLIENT, "sales")
    service.store = DeadStore()
    plan = service.fallback_plan("0501234567", "sales")
    assert (plan.client, plan.sticky, plan.reason) == (CLIENT, None, "database_unavailable")
    assert [leg.agent for leg in plan.fallback] == ["1001", "1002"]


def test_fallback_plan_uses_the_cache_even_after_its_ttl(service, clock):
    service.route(CLIENT, "sales")
    service.store = DeadStore()
    clock.advance(hours=1)
    assert service.fallback_plan(CLIENT, "sales") is not None


def test_fallback_plan_is_none_when_nothing_was_ever_cached(service):
    service.store = DeadStore()
    assert service.fallback_plan(CLIENT, "sales") is None


def test_fallback_plan_is_none_for_an_unknown_group_and_group_only_for_a_non_client(service):
    service.route(CLIENT, "sales")
    service.store = DeadStore()
    assert service.fallback_plan(CLIENT, "support") is None
    assert service.fallback_plan("1001", "sales").reason == "not_a_client"


# -- learning from calls -----------------------------------------------------------------------


def test_record_call_learns_with_the_stored_settings(service, service_store):
    service_store.set_setting("min_talk", "2m")
    short = Call("inbound", CLIENT, "1001", T0, T0 + timedelta(seconds=90), 90, True, uuid="a")
    long = Call("inbound", CLIENT, "1001", T0, T0 + timedelta(seconds=130), 130, True, uuid="b")
    assert service.record_call(short) is None
    assert service.record_call(long).agent == "1001"
    assert {c.uuid for c in service_store.calls()} == {"a", "b"}


def test_import_calls_builds_calls_and_learns_through_bindings_record_calls(service, service_store, monkeypatch):
    # bindings.record_calls: what record_call(call, settings, notify=False) does for each call in turn
    # (tests/test_import_scale.py holds it to that).
    seen = []
    real = service.bindings.record_calls
    monkeypatch.setattr(
        service.bindings, "record_calls",
        lambda calls, settings: real(seen.extend(calls) or list(seen), settings)
    )
    result = service.import_calls(
        rows_of(
            HEADER + "2024-05-01T09:30:00Z,inbound,0501234567,1001,95\n"
            "2024-05-01T10:00:00+03:00,outbound,0671112233,1002,0\n"
        )
    )
    assert (result.calls, result.learned) == (2, 2)
    first, second = seen
    assert (first.client, first.agent, first.talk_seconds, first.answered) == (CLIENT, "1001", 95.0, True)
    assert first.ended_at == datetime(2024, 5, 1, 9, 31, 35, tzinfo=UTC)
    assert (second.direction, second.answered, second.started_at) == (
        "outbound",
        False,
        datetime(2024, 5, 1, 7, 0, tzinfo=UTC),
    )
    assert service_store.bindings_for("+380671112233")[AUTO].agent == "1002"  # an unanswered outbound binds


def test_import_calls_lets_the_later_ended_call_win_whatever_the_row_order(service, service_store):
    service.import_calls(
        rows_of(
            HEADER + "2024-05-02T09:00:00Z,inbound,0501234567,1002,60\n"
            "2024-05-01T09:00:00Z,inbound,0501234567,1001,60\n"
        )
    )
    assert service_store.bindings_for(CLIENT)[AUTO].agent == "1002"


def test_import_calls_twice_does_not_double_the_records(service, service_store):
    text = HEADER + "2024-05-01T09:30:00Z,inbound,0501234567,1001,95\n"
    service.import_calls(rows_of(text))
    assert service.import_calls(rows_of(text)).learned == 0
    assert len(service_store.calls()) == 1


def test_import_calls_skips_a_uuid_the_daemon_already_recorded(service, service_store):
    daemon_saw = Call("inbound", CLIENT, "1001", T0, T0 + timedelta(seconds=95), 95, True,
                      uuid="3ec877f3-56c5-47d8-8602-43e9aea34b93", group="sales", route="sticky")
    service.record_call(daemon_saw)
    text = (HEADER.rstrip("\n") + ",uuid\n"
            "2024-05-01T09:30:00Z,inbound,0501234567,1001,95,3ec877f3-56c5-47d8-8602-43e9aea34b93\n"
            "2024-05-01T09:40:00Z,outbound,0671112233,1002,0,9f0c7d1e-0000-4000-8000-000000000001\n"
            "2024-05-01T09:50:00Z,outbound,0671112233,1002,0,\n")
    result = service.import_calls_csv(io.StringIO(text))
    assert (result.calls, result.known) == (2, 1)
    records = {c.uuid: c for c in service_store.calls()}
    assert len(records) == 3 and records[daemon_saw.uuid].route == "sticky"  # the daemon's record stays
    assert "9f0c7d1e-0000-4000-8000-000000000001" in records


def test_import_calls_refuses_a_uuid_that_is_not_one(service, service_store):
    text = HEADER.rstrip("\n") + ",uuid\n2024-05-01T09:30:00Z,inbound,0501234567,1001,95,${uuid};rm\n"
    with pytest.raises(ServiceError, match="line 2: bad uuid"):
        service.import_calls_csv(io.StringIO(text))
    assert service_store.calls() == []


@pytest.mark.parametrize(
    "bad_row, message",
    [
        ("yesterday,inbound,0501234567,1001,95", "bad time"),
        ("2024-05-01T09:30:00Z,sideways,0501234567,1001,95", "bad direction"),
        ("2024-05-01T09:30:00Z,inbound,12,1001,95", "internal extension"),
        ("2024-05-01T09:30:00Z,inbound,0501234567,9999,95", "unknown agent '9999'"),
        ("2024-05-01T09:30:00Z,inbound,0501234567,1001,-3", "bad talk_seconds"),
        ("2024-05-01T09:30:00Z,inbound,0501234567,1001,nan", "bad talk_seconds"),
        ("2024-05-01T09:30:00Z,inbound,0501234567,1001", "missing talk_seconds"),
        ("2024-05-01T09:30:00Z,inbound,0501234567,1001,95,extra", "more cells"),
    ],
)
def test_import_calls_checks_every_row_first_and_names_the_bad_line(service, service_store, bad_row, message):
    text = HEADER + "2024-05-01T09:00:00Z,inbound,0671112233,1001,60\n" * 2 + bad_row + "\n"
    with pytest.raises(ServiceError, match=f"^line 4: .*{message}"):
        service.import_calls(rows_of(text))
    assert service_store.calls() == []
    assert service_store.list_bindings() == []


def test_import_calls_csv_requires_the_header(service):
    with pytest.raises(ServiceError, match="line 1: the header lacks talk_seconds"):
        service.import_calls_csv(io.StringIO("started_at,direction,client,agent\n"))
    with pytest.raises(ServiceError, match="line 1"):
        service.import_calls_csv(io.StringIO(""))


def test_import_calls_csv_counts_physical_lines_and_reads_a_spaced_header(service):
    text = " Started_At , direction,client,agent,talk_seconds\n\n2024-05-01T09:00:00Z,inbound,bad,1001,60\n"
    with pytest.raises(ServiceError, match="^line 3: "):
        service.import_calls_csv(io.StringIO(text))


# -- bindings CSV ------------------------------------------------------------------------------


def test_import_bindings_csv_sets_manual_bindings_with_or_without_header(service, service_store):
    assert service.import_bindings_csv(io.StringIO("client,agent\n0501234567,1001\n")) == 1
    assert service.import_bindings_csv(io.StringIO("'+380671112233,1002\n\n")) == 1
    assert service_store.bindings_for(CLIENT)[MANUAL].agent == "1001"
    assert service_store.bindings_for("+380671112233")[MANUAL].agent == "1002"


@pytest.mark.parametrize(
    "bad_row, message",
    [
        ("0501234567,9999", "unknown agent '9999'"),
        ("garbage,1001", "not a phone number"),
        ("0671112233", "expected 2 cells"),
        ("+380671112233,1002", "already on line 2"),
    ],
)
def test_import_bindings_csv_is_all_or_nothing_and_names_the_line(service, service_store, bad_row, message):
    text = "client,agent\n0671112233,1001\n0931234567,1002\n" + bad_row + "\n"
    with pytest.raises(ServiceError, match=f"^line 4: .*{message}"):
        service.import_bindings_csv(io.StringIO(text))
    assert service_store.list_bindings() == []


def test_export_writes_the_binding_each_client_would_ring_first_escaped_for_spreadsheets(
    service, service_store, clock
):
    BindingPath(service_store).set_manual_binding(CLIENT, "1002", T0)
    BindingPath(service_store).learn(Call("inbound", CLIENT, "1001", T0, T0, 60, True), service.settings())
    BindingPath(service_store).learn(Call("inbound", "+380671112233", "1001", T0, T0, 60, True), service.settings())
    service_store.add_agent("1003", "Gone")
    BindingPath(service_store).set_manual_binding("+380931234567", "1003", T0)
    service_store.remove_agent("1003")  # stale: not exported
    out = io.StringIO()
    assert service.export_bindings_csv(out) == 2
    assert out.getvalue() == "client,agent\n'+380501234567,1002\n'+380671112233,1001\n"


def test_export_then_import_moves_the_same_bindings(service, service_store, tmp_path):
    BindingPath(service_store).set_manual_binding(CLIENT, "1002", T0)
    out = io.StringIO()
    service.export_bindings_csv(out)
    with Store.open(f"sqlite:///{tmp_path / 'other.db'}") as other:
        other.add_agent("1002", "Bohdan")
        Service(other, clock=lambda: T0).import_bindings_csv(io.StringIO(out.getvalue()))
        assert other.bindings_for(CLIENT)[MANUAL].agent == "1002"


@pytest.mark.parametrize("cell", ["=1+1", "+380501234567", "-1001", "@SUM(A1)", "\tx"])
def test_cells_a_spreadsheet_would_run_are_escaped_and_read_back(cell):
    assert spreadsheet_safe(cell).startswith("'")
    assert spreadsheet_unescape(spreadsheet_safe(cell)) == cell


def test_plain_cells_are_not_escaped():
    assert spreadsheet_safe("1001") == "1001"
    assert spreadsheet_unescape("'1001") == "'1001"
