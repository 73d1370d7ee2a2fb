"""Rule: the settings keys, their defaults (one table) and their text forms."""
from dataclasses import fields
from datetime import timedelta

import pytest

from fsrouter.core.settings import SETTINGS, Settings, format_duration, parse_bool, parse_duration

KEYS = ["lookback", "sticky_timeout", "min_talk", "mode", "learn_from", "outbound_requires_answer",
        "fallback_excludes_sticky", "default_region", "sources", "max_sticky_misses"]


@pytest.mark.parametrize("text, value", [
    ("30d", timedelta(days=30)), ("20s", timedelta(seconds=20)), ("90m", timedelta(minutes=90)),
    ("2h", timedelta(hours=2)), ("1w", timedelta(days=7)), ("45", timedelta(seconds=45)),
    ("1.5h", timedelta(minutes=90)), ("0", timedelta(0)), (" 30D ", timedelta(days=30)),
    ("0.25s", timedelta(milliseconds=250)), ("10 s", timedelta(seconds=10)),
])
def test_parse_duration_reads_units(text, value):
    assert parse_duration(text) == value


@pytest.mark.parametrize("bad", ["", "d", "30x", "-5s", "30 days", "1e3s", "thirty", "30d5h", "5s\nx",
                                 "٣٠d", "9" * 40 + "d", "1.s", ".5s", None])
def test_bad_duration_is_a_value_error(bad):
    with pytest.raises(ValueError) as info:
        parse_duration(bad)
    assert "bad duration" in str(info.value)


@pytest.mark.parametrize("value, text", [
    (timedelta(days=30), "30d"), (timedelta(seconds=20), "20s"), (timedelta(minutes=90), "90m"),
    (timedelta(hours=2), "2h"), (timedelta(days=14), "2w"), (timedelta(0), "0s"),
    (timedelta(seconds=1234567), "1234567s"), (timedelta(milliseconds=1500), "1.5s"),
    (timedelta(microseconds=1), "0.000001s"),
])
def test_format_duration_is_short_and_reads_back(value, text):
    assert format_duration(value) == text
    assert parse_duration(text) == value


def test_defaults_match_the_issue():
    s = Settings()
    assert s.lookback == timedelta(days=30)
    assert s.sticky_timeout == timedelta(seconds=20)
    assert s.min_talk == timedelta(seconds=10)
    assert s.mode == "both"
    assert s.learn_from == "both"
    assert s.outbound_requires_answer is False
    assert s.fallback_excludes_sticky is False


def test_defaults_come_from_one_table():
    # SETTINGS (parse/format/help) and the Settings fields (defaults) describe the same keys ...
    assert list(SETTINGS) == KEYS
    assert [f.name for f in fields(Settings)] == KEYS
    # ... and the text form of the defaults reads back to the defaults.
    assert Settings.from_text(Settings().as_text()) == Settings()
    assert Settings().as_text() == {
        "lookback": "30d", "sticky_timeout": "20s", "min_talk": "10s", "mode": "both",
        "learn_from": "both", "outbound_requires_answer": "false", "fallback_excludes_sticky": "false",
        "default_region": "UA", "sources": "crm,manual,auto", "max_sticky_misses": "0",
    }


def test_every_setting_has_help():
    assert all(spec.help for spec in SETTINGS.values())


@pytest.mark.parametrize("key, text, value", [
    ("lookback", "7d", timedelta(days=7)), ("lookback", "0", timedelta(0)),
    ("sticky_timeout", "15s", timedelta(seconds=15)), ("min_talk", "1m", timedelta(minutes=1)),
    ("mode", "manual", "manual"), ("mode", "AUTO", "auto"), ("mode", "both", "both"),
    ("learn_from", "inbound", "inbound"), ("learn_from", "outbound", "outbound"),
    ("outbound_requires_answer", "true", True), ("outbound_requires_answer", "off", False),
    ("fallback_excludes_sticky", "yes", True), ("default_region", "de", "DE"),
    ("sources", "manual, CRM", ("manual", "crm")), ("sources", "auto", ("auto",)),
])
def test_with_text_sets_one_key(key, text, value):
    updated = Settings().with_text(key, text)
    assert getattr(updated, key) == value
    others = {k for k in KEYS if k != key}
    assert all(getattr(updated, k) == getattr(Settings(), k) for k in others)


def test_unknown_key_is_refused():
    with pytest.raises(KeyError) as info:
        Settings().with_text("lookbak", "30d")
    assert "lookbak" in str(info.value)


@pytest.mark.parametrize("value", ["sometimes", "", "manual,auto", "learned"])
def test_bad_mode_is_refused(value):
    with pytest.raises(ValueError):
        Settings().with_text("mode", value)


@pytest.mark.parametrize("value", ["in", "all", ""])
def test_bad_learn_from_is_refused(value):
    with pytest.raises(ValueError):
        Settings().with_text("learn_from", value)


@pytest.mark.parametrize("value", ["", ",", "crm,crm", "crm,learned", "ldap"])
def test_bad_sources_are_refused(value):
    with pytest.raises(ValueError):
        Settings().with_text("sources", value)


@pytest.mark.parametrize("region", ["ZZ", "UK", "Ukraine", "", "U", "001", "380"])
def test_region_validation_refuses_unknown_regions(region):
    with pytest.raises(ValueError):
        Settings().with_text("default_region", region)


@pytest.mark.parametrize("key, text", [("lookback", "soon"), ("sticky_timeout", "0"), ("min_talk", "0s"),
                                       ("sticky_timeout", "-1s"), ("outbound_requires_answer", "maybe")])
def test_bad_values_are_value_errors(key, text):
    with pytest.raises(ValueError):
        Settings().with_text(key, text)


def test_lookback_zero_is_allowed_and_shown_as_0s():
    assert Settings().with_text("lookback", "0").as_text()["lookback"] == "0s"


def test_parse_bool():
    assert parse_bool("TRUE") is True and parse_bool("0") is False
    with pytest.raises(ValueError):
        parse_bool("2")


def test_from_text_reads_back_every_changed_key():
    changed = Settings(lookback=timedelta(days=7), sticky_timeout=timedelta(seconds=5),
                       min_talk=timedelta(seconds=3), mode="manual", learn_from="outbound",
                       outbound_requires_answer=True, fallback_excludes_sticky=True, default_region="DE",
                       sources=("auto", "crm"))
    assert Settings.from_text(changed.as_text()) == changed
