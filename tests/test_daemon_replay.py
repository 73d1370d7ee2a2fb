"""Real FreeSWITCH bytes through the running daemon: the fake replays each recorded inbound-view
capture byte for byte over TCP, the daemon's own listener (greenswitch) reads it, and the store
must hold exactly what expected.json says a correct listener learns."""
from __future__ import annotations

import json

import pytest
from office import settle
from test_events_replay import captures_dir

from fsrouter.config import Config
from fsrouter.fakefs import FakeFreeSWITCH
from fsrouter.store import Store
from fsrouter.wiring import build_daemon


def expected_cases():
    return json.loads((captures_dir() / "expected.json").read_text())["cases"]


@pytest.mark.parametrize("case", ["08-sip-call-sticky-timeout-then-group-inbound-view",
                                  "09-sip-agent-outbound-calls",
                                  "11-sip-call-answered-12s-inbound-view"])
def test_daemon_learns_from_replayed_capture_what_expected_json_says(tmp_path, case):
    expected = expected_cases()[case]
    store = Store.open(f"sqlite:///{tmp_path}/replay.db")
    store.add_group("sales")
    for ext in ("1001", "1002", "1003", "1004"):
        store.add_agent(ext, f"Agent {ext}", dial_string=f"user/{ext}@127.0.0.1", groups=["sales"])
    fake = FakeFreeSWITCH().start()
    replay = fake.serve_capture(captures_dir() / f"{case}.fs-to-client.raw")
    daemon = build_daemon(Config(database=f"sqlite:///{tmp_path}/replay.db", esl_port=fake.esl_address[1],
                                 listen_port=0), one_connection=True, cache_ttl=0.0)
    daemon.start()
    try:
        assert replay.done.wait(10), "the capture was never streamed to the daemon"
        settle(daemon)
        calls = sorted(store.calls(), key=lambda c: c.started_at)
        got = [{"direction": c.direction, "client": c.client, "agent": c.agent,
                "talk_seconds": c.talk_seconds, **({"rung": list(c.rung)} if c.direction == "inbound" else {})}
               for c in calls]
        assert got == expected["calls"]
        bindings = {b.client: b.agent for b in store.list_bindings()}
        assert bindings == expected["bindings"]
    finally:
        daemon.stop()
        fake.stop()
        store.close()

