"""Fuzzing what people and other programs hand fsrouter: caller IDs, CSV imports, the config.

The checks are fuzz/targets.py's, the same functions the atheris targets run: normalize() gives
E.164 that reads back as itself or raises NotAClient; an import is done whole or refused with
a one-line ServiceError and leaves the store as it was; the config loader gives a Config or a
one-line ConfigError, whatever the file or the FSROUTER_* variables hold.
"""
from __future__ import annotations

import csv
import io
import math
import sys
from datetime import UTC, datetime
from pathlib import Path

from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from fsrouter.config import Config, ConfigError, load_config

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fuzz"))
import targets

FAST = hsettings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ANY_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=50)


# -- caller IDs --------------------------------------------------------------------------------

DIGITS = st.sampled_from(["0123456789", "\uff10\uff11\uff12\uff13\uff14\uff15\uff16\uff17\uff18\uff19",
                          "\u0660\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669", "\u00b2\u00b3\u00b9"])
callers = st.one_of(
    ANY_TEXT,
    st.builds(lambda prefix, digits, n, junk: prefix + digits[:1] * 2 + digits * n + junk,
              st.sampled_from(["", "+", "00", "+380", "0", " ", "380"]), DIGITS, st.integers(0, 4),
              st.sampled_from(["", " ", "\n", ",", "|", "${x}", "\x00", "\u200b", "\ufeff", "#", "*"])),
    st.integers(41, 5000).map(lambda n: "+" + "1" * n),
)


@FAST
@given(callers, st.integers(0, 255))
def test_caller_ids_are_e164_or_not_a_client(caller, region):
    targets.check_numbers(bytes([region]) + caller.encode("utf-8"))


# -- CSV imports -------------------------------------------------------------------------------

GOOD_CELLS = {
    "started_at": ["2024-05-01T09:30:00Z", "2024-05-01 09:30", "2024-05-01T09:30:00+03:00"],
    "direction": ["inbound", "outbound", "INBOUND"],
    "client": ["0501234567", "+380671112233", "'+380931234567", "380501234567"],
    "agent": ["1001", "1002", ""],
    "talk_seconds": ["0", "12", "95.5", ""],
}
BAD_CELLS = ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00", "1e300", "1e18", "-1", "nan", "inf",
             "=cmd|' /C calc'!A0", "+1+1", "@SUM(A1)", "9999", "user/6666@evil", "0501234567\n", "x" * 300,
             "\x00", "'", "\"", "2024-02-30T00:00:00Z", "99999999999999999999999"]
cell = st.one_of(st.sampled_from(BAD_CELLS), ANY_TEXT)


@st.composite
def call_csvs(draw):
    header = list(targets_columns := ["started_at", "direction", "client", "agent", "talk_seconds"])
    if draw(st.booleans()):
        header = draw(st.permutations(header))
    if draw(st.integers(0, 9)) == 0:
        header = draw(st.lists(st.sampled_from(targets_columns + ["x", ""]), max_size=6))
    rows = []
    for _ in range(draw(st.integers(0, 5))):
        row = {c: draw(st.sampled_from(GOOD_CELLS[c])) for c in targets_columns}
        for _ in range(draw(st.integers(0, 2))):
            row[draw(st.sampled_from(targets_columns))] = draw(cell)
        values = [row.get(c, "") for c in header]
        if draw(st.integers(0, 9)) == 0:
            values.append(draw(cell))
        rows.append(values)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=draw(st.sampled_from(["\n", "\r\n"])))
    writer.writerow(header)
    writer.writerows(rows)
    text = out.getvalue()
    if draw(st.integers(0, 9)) == 0:  # damage the CSV itself: stray quotes, NULs, a huge field
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.sampled_from(['"', "\x00", "\r", "x" * 140000, "\n\n,,,\n"])) + text[at:]
    return text


@st.composite
def binding_csvs(draw):
    lines = []
    if draw(st.booleans()):
        lines.append(["client", "agent"])
    for _ in range(draw(st.integers(0, 5))):
        client = draw(st.one_of(st.sampled_from(GOOD_CELLS["client"]), cell))
        agent = draw(st.one_of(st.sampled_from(["1001", "1002", "1003", "9999", ""]), cell))
        extra = [draw(cell)] if draw(st.integers(0, 9)) == 0 else []
        lines.append([client, agent] + extra)
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(lines)
    return out.getvalue()


@FAST
@given(call_csvs())
def test_a_calls_import_is_whole_or_refused_and_changes_nothing(text):
    targets.check_csv(b"c" + text.encode("utf-8"))


@FAST
@given(binding_csvs())
def test_a_bindings_import_is_whole_or_refused_and_changes_nothing(text):
    targets.check_csv(b"b" + text.encode("utf-8"))


def test_a_refused_import_after_good_lines_leaves_the_store_as_it_was():
    # The check itself must notice a change: a good import does change the store.
    imports = targets._Imports() if targets._imports is None else targets._imports
    before = imports.state()
    with imports.store.db.atomic() as txn:
        imports.service.import_bindings_csv(io.StringIO("0671234567,1002\n"))
        assert imports.state() != before
        txn.rollback()
    assert imports.state() == before


# -- the config --------------------------------------------------------------------------------

def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return '"' + "".join(c if c.isprintable() and c not in '"\\' else f"\\u{ord(c):04x}" for c in value) + '"'
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return "{" + ", ".join(f'"{k}" = {toml_value(v)}' for k, v in value.items()) + "}"
    return "[" + ", ".join(toml_value(v) for v in value) + "]"


KEYS = list(Config.__dataclass_fields__) + ["esl_prot", "password", ""]
SCALARS = st.one_of(
    st.integers(), st.integers(-2**70, 2**70), st.just(10**400), st.floats(allow_nan=True), st.booleans(),
    ANY_TEXT, st.sampled_from(["127.0.0.1", "::1", "10.0.0.0/8", "not-an-address", "0", "8021", "json", "debug"]),
    st.datetimes(timezones=st.just(UTC)),
)
VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=3), st.dictionaries(st.sampled_from(["a", "b"]), SCALARS,
                                                                           max_size=2))


@FAST
@given(st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=6))
def test_any_toml_config_is_a_config_or_a_config_error(doc):
    text = "".join(f'"{key}" = {toml_value(value)}\n' for key, value in doc.items())
    targets.check_config(text.encode("utf-8"))


@FAST
@given(st.binary(max_size=200))
def test_any_bytes_as_config_are_a_config_or_a_config_error(data):
    targets.check_config(data)


@FAST
@given(st.dictionaries(st.sampled_from([f"FSROUTER_{k.upper()}" for k in Config.__dataclass_fields__]),
                       st.one_of(ANY_TEXT, st.sampled_from(["1" * 5000, "1e999", "nan", "-0", " 8021 ", ",,"])),
                       max_size=5))
def test_any_environment_is_a_config_or_a_config_error(environ):
    try:
        config = load_config(None, environ=environ)
    except ConfigError as exc:
        assert "\n" not in str(exc)
        return
    assert 0 < config.esl_port < 65536 and config.decision_budget > 0 and math.isfinite(config.drain_timeout)
