"""`fsrouter report`: the figures (fsrouter.core.report), the page (fsrouter.http.report_html) as headless
Chromium shows it, and the command."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta

import pytest
from browser import chromium_path as _chromium
from click.testing import CliRunner

from fsrouter.binding_path import BindingPath
from fsrouter.cli import main
from fsrouter.core import report
from fsrouter.core.missed import missed_calls
from fsrouter.core.model import INBOUND, OUTBOUND, Call
from fsrouter.core.settings import Settings
from fsrouter.http.report_html import render
from fsrouter.store import Store

T0 = datetime(2024, 5, 1, 9, 0, tzinfo=UTC)
A, B, C = "+380501234567", "+380671112233", "+380931112233"


def inbound(client, minute, agent=None, sticky=None, route=None, rung=(), talk=60.0, group="sales", day=0):
    start = T0 + timedelta(days=day, minutes=minute)
    return Call(INBOUND, client, agent, start, start + timedelta(seconds=talk if agent else 20),
                talk_seconds=talk if agent else 0.0, answered=agent is not None,
                uuid=f"in-{client}-{day}-{minute}", group=group, rung=tuple(rung), route=route,
                sticky_agent=sticky, outcome="answered" if agent else "missed")


def outbound(client, minute, agent, answered=True, day=0):
    start = T0 + timedelta(days=day, minutes=minute)
    return Call(OUTBOUND, client, agent, start, start + timedelta(seconds=30), talk_seconds=30.0 if answered else 0,
                answered=answered, uuid=f"out-{client}-{day}-{minute}")


def office_week():
    """Day 0: A's sticky call to 1001 answered; B's sticky call to 1002 falls back to 1001; C missed
    (sticky 1002), called back by 1002 after ~10 min. Day 1: A missed (no sticky leg), called back
    by 1001 after ~1 h; a call of another group."""
    calls = [
        inbound(A, 0, "1001", sticky="1001", route="sticky", rung=("1001",)),
        inbound(B, 5, "1001", sticky="1002", route="fallback", rung=("1002", "1001", "1003")),
        inbound(C, 10, None, sticky="1002", route="none", rung=("1002", "1001", "1003")),
        outbound(C, 20, "1002"),
        inbound(A, 0, None, route="none", rung=("1001", "1002", "1003"), day=1),
        outbound(A, 60, "1001", answered=False, day=1),
        inbound(B, 30, "1003", group="support", rung=("1003",), day=1),
    ]
    changes = [{"client": B, "from_agent": "1002", "to_agent": "1001", "at": T0 + timedelta(minutes=6),
                "call_uuid": calls[1].uuid, "group": "sales"},
               {"client": A, "from_agent": None, "to_agent": "1001", "at": T0, "call_uuid": None,
                "group": "sales"}]
    return calls, changes


def build(group=None, since=T0):
    calls, changes = office_week()
    missed = missed_calls(calls, {A: "1001", B: "1001", C: "1002"})
    return report.build(calls, missed, changes, since=since, group=group, agents=("1001", "1002", "1003", "1004"))


# -- figures ------------------------------------------------------------------------------------

def test_percentile_is_linear_between_ranks():
    assert report.percentile([], 50) is None
    assert report.percentile([7], 90) == 7
    assert report.percentile([1, 2, 3, 4], 50) == 2.5
    assert report.percentile(range(1, 11), 90) == pytest.approx(9.1)


def test_totals_count_every_inbound_call_once():
    total = build().total
    assert (total.offered, total.answered) == (5, 3)
    assert (total.sticky_attempts, total.sticky_answered, total.hit_rate) == (3, 1, pytest.approx(1 / 3))
    assert total.fallbacks == 1
    assert (total.missed, total.called_back, total.callbacks_made) == (2, 2, 2)
    # C: from the end of the missed call (20 s) to the callback at 20 min; A: to 60 min.
    assert total.callback_median_s == pytest.approx((580 + 3580) / 2)
    assert total.callback_p90_s == pytest.approx(580 + 3000 * 0.9)


def test_per_agent_figures():
    agents = {f.agent: f for f in build().agents}
    assert list(agents) == ["1001", "1002", "1003", "1004"]
    a, b, c = agents["1001"], agents["1002"], agents["1003"]
    assert (a.offered, a.answered, a.sticky_attempts, a.sticky_answered, a.fallbacks) == (4, 2, 1, 1, 1)
    assert (b.offered, b.answered, b.sticky_attempts, b.sticky_answered, b.hit_rate) == (3, 0, 2, 0, 0.0)
    assert (c.offered, c.answered) == (4, 1)
    assert (a.rebinds_in, a.rebinds_out, b.rebinds_in, b.rebinds_out) == (1, 0, 0, 1)
    # C's missed call is 1002's (the sticky leg); A's second is 1001's (the bound agent).
    assert (b.missed, b.called_back, b.callbacks_made, b.callback_median_s) == (1, 1, 1, 580.0)
    assert (a.missed, a.called_back, a.callbacks_made, a.callback_median_s) == (1, 1, 1, 3580.0)
    assert agents["1004"].as_dict()["hit_rate"] is None


def test_rebinds_say_from_whom_to_whom_and_a_first_binding_is_none():
    assert [(r.from_agent, r.to_agent, r.count) for r in build().rebinds] == [("1002", "1001", 1)]


def test_per_day_hit_rate_and_callback_times():
    days = build().days
    assert [d.day.isoformat() for d in days] == ["2024-05-01", "2024-05-02"]
    assert (days[0].sticky_attempts, days[0].sticky_answered, days[0].callbacks) == (3, 1, 1)
    assert days[0].callback_median_s == 580.0
    assert (days[1].sticky_attempts, days[1].hit_rate, days[1].callbacks, days[1].callback_p90_s) == (
        0, None, 1, 3580.0)


def test_group_and_since_narrow_the_report():
    support = build(group="support").total
    assert (support.offered, support.answered, support.missed, support.rebinds_in) == (1, 1, 0, 0)
    later = build(since=T0 + timedelta(days=1)).total
    assert (later.offered, later.sticky_attempts, later.missed, later.rebinds_in) == (2, 0, 1, 0)


# -- the page -----------------------------------------------------------------------------------

def test_the_page_is_self_contained_and_escapes_what_it_shows():
    page = render(build())
    assert 'id="agents"' in page and 'id="hit-rate-chart"' in page and 'id="callback-chart"' in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page), "the page must not load anything"
    assert "<script" not in page
    hostile = report.build([inbound(A, 0, "<b>x</b>", rung=("<b>x</b>",))], [])
    assert "<b>x</b>" not in render(hostile) and "&lt;b&gt;x&lt;/b&gt;" in render(hostile)


def _run_chromium(tmp_path, *args) -> subprocess.CompletedProcess:
    command = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
               f"--user-data-dir={tmp_path / 'chromium-profile'}", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def test_report_html_renders_in_headless_chromium_with_its_tables_and_charts(tmp_path):
    page = tmp_path / "report.html"
    page.write_text(render(build()), encoding="utf-8")
    done = _run_chromium(tmp_path, "--dump-dom", page.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    # The DOM as Chromium parsed it: the tables with their rows, the charts with their bars.
    agents = re.search(r'<table id="agents">(.*?)</table>', dom, re.DOTALL).group(1)
    assert len(re.findall(r"<tr", agents)) == 1 + 4 + 1  # header, four agents, total
    assert "33%" in agents
    days = re.search(r'<table id="days">(.*?)</table>', dom, re.DOTALL).group(1)
    assert "2024-05-01" in days and "2024-05-02" in days
    assert re.search(r'<table id="rebinds">.*?1002.*?1001', dom, re.DOTALL)
    hit_chart = re.search(r'<svg id="hit-rate-chart".*?</svg>', dom, re.DOTALL).group(0)
    assert len(re.findall(r'<rect class="bar"', hit_chart)) == 1  # day 2 had no sticky attempt
    callback_chart = re.search(r'<svg id="callback-chart".*?</svg>', dom, re.DOTALL).group(0)
    assert len(re.findall(r'<rect class="bar"', callback_chart)) == 2
    assert len(re.findall(r'class="tick"', callback_chart)) == 2
    # And it paints: a screenshot with the charts' blue and the p90 ticks' red in it.
    shot = tmp_path / "report.png"
    done = _run_chromium(tmp_path, f"--screenshot={shot}", "--window-size=1400,1100", page.as_uri())
    assert done.returncode == 0 and shot.stat().st_size > 10_000, done.stderr[-2000:]
    if os.environ.get("FSROUTER_KEEP_SCREENSHOT"):
        shutil.copy(shot, os.environ["FSROUTER_KEEP_SCREENSHOT"])


# -- the command --------------------------------------------------------------------------------

def test_report_command_prints_json_and_writes_the_page(tmp_path):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    now = datetime.now(UTC)
    calls, _ = office_week()
    with Store.open(url) as s:
        s.add_group("sales")
        s.add_group("support")
        for ext in ("1001", "1002", "1003"):
            s.add_agent(ext, ext, groups=["sales"])
        shift = now - timedelta(days=2) - T0
        for c in calls:
            BindingPath(s).record_call(Call(**{**c.__dict__, "started_at": c.started_at + shift,
                                  "ended_at": c.ended_at + shift}), Settings())
    runner = CliRunner()
    html = tmp_path / "out.html"
    result = runner.invoke(main, ["--db", url, "report", "--since", "7d", "--group", "sales", "--json",
                                  "--html", str(html)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert (data["total"]["offered"], data["total"]["sticky_attempts"], data["total"]["missed"]) == (4, 3, 2)
    assert [f["agent"] for f in data["agents"]] == ["1001", "1002", "1003"]
    assert 'id="hit-rate-chart"' in html.read_text()
    result = runner.invoke(main, ["--db", url, "report"])
    assert result.exit_code == 0 and result.output.splitlines()[0].split()[:3] == ["AGENT", "OFFERED", "ANSWERED"]
    assert runner.invoke(main, ["--db", url, "report", "--group", "nope"]).output.startswith("Error: unknown group")
