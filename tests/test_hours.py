"""Sticky hours (hours.py) and a group's own settings (overrides.py): pure, the time passed in."""
import json
from datetime import UTC, datetime, timedelta

import pytest
from office import cli_office

from fsrouter.core import hours, overrides
from fsrouter.core.model import AUTO, Agent, Binding, Group
from fsrouter.core.routing import decide
from fsrouter.core.settings import Settings

CLIENT = "+380501234567"
# 2024-05-01 was a Wednesday; Kyiv is UTC+3 in May (summer time), UTC+2 in January.
WED_NOON_UTC = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
AGENTS = {"1001": Agent("1001", "Anna", "user/1001@pbx", groups=frozenset({"sales"}))}


def learned(at):
    return {AUTO: Binding(CLIENT, "1001", AUTO, at=at)}


def kyiv(y, mo, d, h, mi=0):
    return datetime(y, mo, d, h, mi, tzinfo=hours.zone("Europe/Kyiv")).astimezone(UTC)


# -- parsing and evaluation -------------------------------------------------------------------

def test_hours_weekdays_window_in_the_groups_time_zone():
    spec, tz = "mon-fri 09:00-18:00", "Europe/Kyiv"
    assert hours.within(spec, tz, kyiv(2024, 5, 1, 9, 0))  # Wednesday 09:00 Kyiv: start is inclusive
    assert hours.within(spec, tz, kyiv(2024, 5, 1, 17, 59))
    assert not hours.within(spec, tz, kyiv(2024, 5, 1, 18, 0))  # end is exclusive
    assert not hours.within(spec, tz, kyiv(2024, 5, 1, 8, 59))
    assert not hours.within(spec, tz, kyiv(2024, 5, 4, 12, 0))  # Saturday


def test_hours_follow_summer_time():
    spec, tz = "mon-fri 09:00-18:00", "Europe/Kyiv"
    # 06:30 UTC is 09:30 in Kyiv in summer (UTC+3) but 08:30 in winter (UTC+2).
    assert hours.within(spec, tz, datetime(2024, 7, 3, 6, 30, tzinfo=UTC))
    assert not hours.within(spec, tz, datetime(2024, 1, 3, 6, 30, tzinfo=UTC))


def test_hours_without_a_time_zone_are_utc():
    assert hours.within("mon-fri 09:00-18:00", "", WED_NOON_UTC)
    assert not hours.within("mon-fri 13:00-18:00", None, WED_NOON_UTC)


def test_hours_several_parts_lists_of_days_and_every_day():
    spec = "mon-fri 09:00-13:00, mon-fri 14:00-18:00; sat 10:00-14:00"
    assert hours.within(spec, "UTC", datetime(2024, 5, 1, 10, tzinfo=UTC))
    assert not hours.within(spec, "UTC", datetime(2024, 5, 1, 13, 30, tzinfo=UTC))  # lunch
    assert hours.within(spec, "UTC", datetime(2024, 5, 4, 11, tzinfo=UTC))  # Saturday
    assert not hours.within(spec, "UTC", datetime(2024, 5, 5, 11, tzinfo=UTC))  # Sunday
    assert hours.within("mon,wed 09:00-10:00", "UTC", datetime(2024, 5, 1, 9, 30, tzinfo=UTC))
    assert not hours.within("mon,wed 09:00-10:00", "UTC", datetime(2024, 5, 2, 9, 30, tzinfo=UTC))
    assert hours.within("00:00-24:00", "UTC", datetime(2024, 5, 5, 23, 59, tzinfo=UTC))


def test_hours_window_past_midnight_belongs_to_the_day_it_starts():
    spec = "fri 22:00-06:00"
    assert hours.within(spec, "UTC", datetime(2024, 5, 3, 23, tzinfo=UTC))  # Friday night
    assert hours.within(spec, "UTC", datetime(2024, 5, 4, 5, 59, tzinfo=UTC))  # Saturday morning
    assert not hours.within(spec, "UTC", datetime(2024, 5, 4, 23, tzinfo=UTC))  # Saturday night
    assert not hours.within(spec, "UTC", datetime(2024, 5, 3, 5, tzinfo=UTC))  # Friday morning


def test_hours_day_range_wraps_over_the_weekend():
    assert hours.within("fri-mon 09:00-18:00", "UTC", datetime(2024, 5, 5, 12, tzinfo=UTC))  # Sunday
    assert not hours.within("fri-mon 09:00-18:00", "UTC", WED_NOON_UTC)


@pytest.mark.parametrize("spec", ["", "mon-fri", "mon-fri 9-18", "xyz 09:00-18:00", "mon 25:00-26:00",
                                  "mon 09:00-09:00", "mon 09:60-10:00", "mon 24:30-01:00"])
def test_hours_bad_spec_is_one_readable_error(spec):
    with pytest.raises(hours.HoursError):
        hours.parse_windows(spec)


def test_hours_unknown_time_zone_is_an_error():
    with pytest.raises(hours.HoursError, match="unknown time zone"):
        hours.zone("Europe/Atlantis")


def test_hours_need_an_aware_time():
    with pytest.raises(hours.HoursError):
        hours.parse("09:00-18:00").contains(datetime(2024, 5, 1, 12))


# -- the decision -----------------------------------------------------------------------------

def test_outside_sticky_hours_no_sticky_leg_reason_outside_hours():
    group = Group("sales", sticky_hours="mon-fri 09:00-18:00", timezone="Europe/Kyiv")
    evening = kyiv(2024, 5, 1, 19, 0)
    plan = decide(CLIENT, group, evening, Settings(), learned(evening - timedelta(days=1)), AGENTS)
    assert (plan.sticky, plan.reason) == (None, "outside_hours")
    assert [leg.agent for leg in plan.fallback] == ["1001"]  # the group still rings


def test_inside_sticky_hours_the_bound_agent_rings():
    group = Group("sales", sticky_hours="mon-fri 09:00-18:00", timezone="Europe/Kyiv")
    morning = kyiv(2024, 5, 1, 10, 0)
    plan = decide(CLIENT, group, morning, Settings(), learned(morning - timedelta(days=1)), AGENTS)
    assert (plan.agent, plan.reason) == ("1001", "auto")


# -- per-group settings -----------------------------------------------------------------------

def test_group_sticky_timeout_beats_the_global_one():
    group = Group("sales", overrides=(("sticky_timeout", "8s"),))
    plan = decide(CLIENT, group, WED_NOON_UTC, Settings(), learned(WED_NOON_UTC), AGENTS)
    assert plan.sticky.timeout == timedelta(seconds=8)
    plain = decide(CLIENT, Group("sales"), WED_NOON_UTC, Settings(), learned(WED_NOON_UTC), AGENTS)
    assert plain.sticky.timeout == timedelta(seconds=20)


def test_group_lookback_beats_the_global_one():
    old = learned(WED_NOON_UTC - timedelta(days=10))
    short = Group("sales", overrides=(("lookback", "7d"),))
    assert decide(CLIENT, short, WED_NOON_UTC, Settings(), old, AGENTS).reason == "expired"
    longer = Group("sales", overrides=(("lookback", "60d"),))
    assert decide(CLIENT, longer, WED_NOON_UTC, Settings(lookback=timedelta(days=7)), old, AGENTS).agent == "1001"


def test_group_mode_beats_the_global_one():
    group = Group("sales", overrides=(("mode", "manual"),))
    assert decide(CLIENT, group, WED_NOON_UTC, Settings(), learned(WED_NOON_UTC), AGENTS).reason == "mode"


def test_overrides_sources_say_which_value_came_from_where():
    group = Group("sales", overrides=(("mode", "manual"), ("sticky_timeout", "8s")))
    found = overrides.sources(Settings(lookback=timedelta(days=7)), group)
    assert found == {"sticky_timeout": ("8s", "group"), "lookback": ("1w", "global"),
                     "learn_from": ("both", "global"), "mode": ("manual", "group")}


def test_overrides_check_refuses_keys_a_group_cannot_set_and_bad_values():
    assert overrides.check([("sticky_timeout", "25")]) == (("sticky_timeout", "25s"),)
    with pytest.raises(ValueError, match="cannot set"):
        overrides.check([("min_talk", "5s")])
    with pytest.raises(ValueError):
        overrides.check([("mode", "sometimes")])


# -- store and command line ---------------------------------------------------------------------

@pytest.fixture
def fsrouter(tmp_path, monkeypatch):
    run = cli_office(tmp_path, monkeypatch, agents=("1001",))
    run("binding", "set", "0501234567", "1001")
    return run


def test_group_set_sticky_hours_outside_them_route_says_outside_hours(fsrouter):
    out = fsrouter("group", "set", "sales", "--sticky-hours", "mon-fri 09:00-18:00", "--timezone", "Europe/Kyiv")
    assert "mon-fri 09:00-18:00 (Europe/Kyiv)" in out
    # 2024-05-01 is a Wednesday; 16:00 UTC is 19:00 in Kyiv.
    evening = json.loads(fsrouter("route", "0501234567", "--group", "sales", "--at", "2024-05-01T16:00:00Z",
                                  "--json"))
    assert (evening["agent"], evening["reason"]) == (None, "outside_hours")
    noon = json.loads(fsrouter("route", "0501234567", "--group", "sales", "--at", "2024-05-01T09:00:00Z",
                               "--json"))
    assert (noon["agent"], noon["reason"]) == ("1001", "manual")
    fsrouter("group", "set", "sales", "--sticky-hours", "")
    assert json.loads(fsrouter("route", "0501234567", "--group", "sales", "--at", "2024-05-01T16:00:00Z",
                               "--json"))["agent"] == "1001"


def test_group_set_bad_hours_or_zone_is_a_one_line_error(fsrouter):
    assert "bad sticky hours" in fsrouter("group", "set", "sales", "--sticky-hours", "weekdays", code=1)
    assert "unknown time zone" in fsrouter("group", "set", "sales", "--timezone", "Mars/Olympus", code=1)
    assert "bad" in fsrouter("group", "set", "sales", "--sticky-timeout", "soon", code=1)


def test_route_shows_which_value_came_from_where(fsrouter):
    fsrouter("settings", "set", "lookback", "60d")
    fsrouter("group", "set", "sales", "--sticky-timeout", "8s", "--mode", "manual")
    plan = json.loads(fsrouter("route", "0501234567", "--group", "sales", "--json"))
    assert plan["timeout"] == 8.0
    assert plan["settings"]["sticky_timeout"] == {"value": "8s", "from": "group"}
    assert plan["settings"]["mode"] == {"value": "manual", "from": "group"}
    assert plan["settings"]["lookback"] == {"value": "60d", "from": "global"}
    assert plan["settings"]["learn_from"] == {"value": "both", "from": "global"}
    text = fsrouter("route", "0501234567", "--group", "sales")
    assert "sticky_timeout 8s (group)" in text and "lookback       60d (global)" in text
    fsrouter("group", "set", "sales", "--unset", "sticky_timeout")
    plan = json.loads(fsrouter("route", "0501234567", "--group", "sales", "--json"))
    assert plan["settings"]["sticky_timeout"] == {"value": "20s", "from": "global"}


def test_group_learn_from_beats_the_global_one_when_calls_are_recorded(fsrouter):
    from fsrouter.core.model import Call
    from fsrouter.service import Service
    from fsrouter.store import Store
    fsrouter("group", "set", "sales", "--learn-from", "outbound")
    fsrouter("group", "add", "support")
    with Store.open(fsrouter.url) as store:
        service = Service(store)
        t = datetime(2024, 5, 1, 12, tzinfo=UTC)

        def inbound(client, group):
            return Call("inbound", client, "1001", t, t + timedelta(seconds=60), talk_seconds=60,
                        answered=True, group=group)
        assert service.record_call(inbound("+380671112233", "sales")) is None  # sales learns from outbound only
        assert service.record_call(inbound("+380931112233", "support")).agent == "1001"  # global: both
