"""`fsrouter calls gaps`: the loss windows and what was recovered for each."""
from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from office import cli_office

from fsrouter.core.loss import DAEMON_START, DISCONNECT
from fsrouter.store import Store


def test_calls_gaps_lists_windows_with_what_was_recovered(tmp_path, monkeypatch):
    cli = cli_office(tmp_path, monkeypatch)
    now = datetime.now(UTC)
    with Store.open(cli.url) as store:
        store.start_loss_window("pbx1", now - timedelta(days=30), DISCONNECT, "old")  # before --since 7d
        store.close_loss_window("pbx1", now - timedelta(days=30) + timedelta(seconds=5))
        first = store.start_loss_window("pbx1", now - timedelta(hours=2), DAEMON_START, "fsrouter was not running")
        store.close_loss_window("pbx1", now - timedelta(hours=2) + timedelta(seconds=31.5))
        with store.transaction():
            store.count_recovered(first.id, 4, 3)
        store.start_loss_window("pbx2", now - timedelta(minutes=1), DISCONNECT, "connection closed")
    rows = json.loads(cli("calls", "gaps", "--json"))
    assert [(r["node"], r["why"], r["seconds"], r["recovered"], r["learned"], r["to"] is None) for r in rows] == [
        ("pbx1", DAEMON_START, 31.5, 4, 3, False), ("pbx2", DISCONNECT, None, 0, 0, True)]
    text = cli("calls", "gaps", "--node", "pbx2")
    assert "open" in text and "connection closed" in text and "pbx1" not in text


def test_calls_gaps_with_a_bad_since_is_one_line(tmp_path, monkeypatch):
    cli = cli_office(tmp_path, monkeypatch)
    out = cli("calls", "gaps", "--since", "yesterday-ish", code=1)
    assert "bad --since" in out and "Traceback" not in out and len(out.strip().splitlines()) == 1
