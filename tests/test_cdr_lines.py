"""core/cdr.py against the CDR bytes of a real FreeSWITCH 1.10.12 (../shared/cdr-captures)."""
from __future__ import annotations

import csv
import json
import re
from datetime import UTC, datetime

import pytest
from captures import ROOT, cdr_captures_dir
from cdr_lines import AGENTS, EXTRA_VARIABLES, PASS2, REGION, SITUATIONS, listener_calls, shipped_lines

from fsrouter.core.cdr import COLUMNS, BadCdr, call_from_cdr


def cells(line: bytes) -> list[str]:
    return next(csv.reader([line.decode()]))


def cdr_calls() -> dict:
    calls = {}
    for name in ("fsrouter_in.csv", "fsrouter_out.csv"):
        for line in shipped_lines(name):
            call = call_from_cdr(cells(line), AGENTS, REGION)
            calls[call.uuid] = call
    return calls


def test_every_situation_of_the_captures_has_its_line():
    assert set(cdr_calls()) == set(SITUATIONS.values())


def test_cdr_lines_give_the_calls_the_listener_makes_of_the_same_calls():
    from_cdr, live = cdr_calls(), listener_calls()
    for situation, uuid in SITUATIONS.items():
        got, want = from_cdr[uuid], live[uuid]
        # Not answered_at: the CDR's is the client's bridge, some ms after the agent's answer.
        same = ("direction", "client", "agent", "answered", "started_at", "ended_at", "group", "route",
                "sticky_agent", "outcome", "uuid")
        assert {f: getattr(got, f) for f in same} == {f: getattr(want, f) for f in same}, situation
        # The listener counts from the agent leg's answer, the CDR from the client's last bridge:
        # 12 s against 11 s in (c), where the bridge came 20 ms later (README, pass 2 table).
        assert abs(got.talk_seconds - want.talk_seconds) <= 1, situation


def test_cdr_lines_give_the_agent_and_talk_the_readme_names_as_the_truth():
    # README "Pass 2 lines": truth column (agent, talk floored) and situation.
    truth = {"a": ("1003", 12), "b": (None, 0), "c": ("1002", 11), "d": ("1004", 0), "e": ("1004", 5),
             "f": ("1001", 11), "f2": ("1001", 6), "g": ("1001", 11), "d_receiver_down": ("1004", 0)}
    calls = cdr_calls()
    assert {s: (calls[u].agent, calls[u].talk_seconds) for s, u in SITUATIONS.items()} == truth
    assert {calls[u].direction for s, u in SITUATIONS.items() if s.startswith(("d", "e"))} == {"outbound"}
    # att_xfer swapped the client channel's caller ID for 1001's; the client is still the client.
    assert calls[SITUATIONS["g"]].client == "+380671112233"


def test_a_blind_transfers_talk_is_the_final_agents_not_billsec():
    # f2: 1003 talked 4.1 s, then 1001 6.9 s; billsec said 11, which would bind (min_talk 10).
    call = cdr_calls()[SITUATIONS["f2"]]
    assert (call.agent, call.talk_seconds) == ("1001", 6.0)


def test_cdr_calls_end_when_freeswitch_says_they_ended():
    # live2-calls.json: the daemon's own records of these calls (fsrouter 1f5ed78, the rig).
    live = {c["uuid"]: c for c in json.loads((cdr_captures_dir() / "work" / "live2-calls.json").read_text())}
    calls = cdr_calls()
    for uuid, record in live.items():
        assert calls[uuid].ended_at == datetime.fromisoformat(record["ended_at"]).astimezone(UTC), uuid
        assert calls[uuid].agent == record["agent"], uuid


def test_the_documented_template_lines_are_refused_with_one_line():
    # Pass 1 (docs/operations.md's old templates) and pass 1b (its att_xfer line with the client
    # and agent swapped): 6 cells, no end time.
    root = cdr_captures_dir()
    for path in (root / "fsrouter_in.csv", root / "pass1b-doc-templates-legs-ab" / "fsrouter_in.csv"):
        for line in path.read_bytes().splitlines():
            with pytest.raises(BadCdr, match="6 cells, the template has 12") as info:
                call_from_cdr(cells(line), AGENTS, REGION)
            assert "\n" not in str(info.value)


def line(**values) -> list[str]:
    row = {"started_at": "2026-12-03T08:46:38Z", "direction": "inbound", "client": "+380671112233",
           "agent": "1003", "talk_seconds": "12", "uuid": "9540196b-8ef9-4649-9d42-3646842689a2",
           "start_uepoch": "1796287598623225", "bridge_uepoch": "1796287598683420",
           "end_uepoch": "1796287610723561", "group": "sales", "route": "sticky", "sticky_agent": "1003"}
    row.update(values)
    return [row[c] for c in COLUMNS]


def test_a_caller_id_that_forges_cells_is_refused():
    # mod_cdr_csv quotes each cell without escaping a `"` inside it.
    forged = '+380671112233","1001","99","9540196b-8ef9-4649-9d42-3646842689a2'
    text = ",".join(f'"{c}"' for c in line(client=forged))
    with pytest.raises(BadCdr, match="15 cells"):
        call_from_cdr(cells(text.encode()), AGENTS, REGION)


@pytest.mark.parametrize("field, value, message", [
    ("direction", "sideways", "bad direction"),
    ("uuid", "../../etc/passwd", "bad uuid"),
    ("end_uepoch", "9" * 30, "end_uepoch is not a time"),
    ("start_uepoch", "-5", "start_uepoch is not a time"),
    ("bridge_uepoch", "1796287999000000", "times out of order"),
    ("group", "sales;rm -rf", "bad group"),
    ("sticky_agent", "x" * 100, "bad sticky agent"),
])
def test_a_hostile_cell_is_refused_with_one_line(field, value, message):
    with pytest.raises(BadCdr, match=message) as info:
        call_from_cdr(line(**{field: value}), AGENTS, REGION)
    assert "\n" not in str(info.value) and len(str(info.value)) < 200


def test_an_agent_the_store_does_not_know_answered_nobody():
    # A phone that sends no P-Asserted-Identity leaves its Contact user (README: `gw+a1003`).
    call = call_from_cdr(line(agent="gw+a1003"), AGENTS, REGION)
    assert (call.agent, call.answered, call.talk_seconds, call.outcome) == (None, False, 0.0, "missed")


def test_lines_that_are_nobodys_call_give_none():
    # An agent calling the office; an outside call of someone who is not an agent.
    assert call_from_cdr(line(client="1001"), AGENTS, REGION) is None
    assert call_from_cdr(line(direction="outbound", client="+380672223355", agent="2001"), AGENTS, REGION) is None
    assert call_from_cdr(line(direction="outbound", client="5100", agent="1004"), AGENTS, REGION) is None


def templates(text: str) -> dict[str, str]:
    return dict(re.findall(r'<template name="(fsrouter_\w+)">(.*?)</template>', text))


def test_the_shipped_templates_are_the_recorded_ones_plus_plain_variables():
    shipped = templates((ROOT / "conf" / "cdr_csv.conf.xml").read_text())
    recorded = templates((cdr_captures_dir() / PASS2 / "cdr_csv.conf.xml").read_text())
    extra = "".join(f',"${{{name}}}"' for name in EXTRA_VARIABLES)
    assert shipped == {name: text + extra for name, text in recorded.items()}
    assert set(shipped) == {"fsrouter_in", "fsrouter_out"}
    assert len(COLUMNS) == 6 + len(EXTRA_VARIABLES)
    assert '<param name="legs" value="ab"/>' in (ROOT / "conf" / "cdr_csv.conf.xml").read_text()


def test_the_dialplan_snippets_send_fsrouters_calls_to_its_templates():
    assert 'data="accountcode=fsrouter_in"' in (ROOT / "dialplan/public/01_fsrouter_sales.xml").read_text()
    assert 'data="accountcode=fsrouter_out"' in (ROOT / "dialplan/default/00_fsrouter_outbound.xml").read_text()
