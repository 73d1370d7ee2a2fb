"""`fsrouter run` as the service runs it: a separate process, configured from FSROUTER_* variables,
stopped with SIGTERM while calls are in flight."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

from office import accepts, free_port, wait_until

from fsrouter.fakefs import FakeFreeSWITCH
from fsrouter.fakefs.calls import ANSWER_DELAY
from fsrouter.store import Store


def start_daemon(tmp_path, esl_port: int, listen_port: int, **extra):
    env = dict(os.environ, FSROUTER_DATABASE=f"sqlite:///{tmp_path}/run.db", FSROUTER_ESL_PORT=str(esl_port),
               FSROUTER_LISTEN_PORT=str(listen_port), FSROUTER_DRAIN_TIMEOUT="20",
               FSROUTER_LOG_FORMAT="json", **extra)
    log = open(tmp_path / "daemon.log", "wb")  # noqa: SIM115  (the daemon's stdout for its whole life)
    return subprocess.Popen([sys.executable, "-m", "fsrouter", "run"], env=env, stdout=log,
                            stderr=subprocess.STDOUT)


def test_sigterm_lets_calls_in_flight_finish_writes_them_and_exits_zero(tmp_path):
    store = Store.open(f"sqlite:///{tmp_path}/run.db")
    store.add_group("sales")
    store.add_agent("1001", "Anna", dial_string="user/1001@127.0.0.1", groups=["sales"])
    store.close()
    fake = FakeFreeSWITCH(time_scale=0.01).start()
    # The agent talks until the caller hangs up, which the test does once the daemon is seen
    # stopping: the call is in flight through the whole drain however slow this machine is.
    fake.agent("1001", answers_after=1, talk=100_000)
    listen_port = free_port()
    proc = start_daemon(tmp_path, fake.esl_address[1], listen_port)
    log_path = tmp_path / "daemon.log"

    def log_tail() -> str:  # for a failure's message
        return "\n" + log_path.read_text()[-4000:]

    try:
        # Generous bounds: a loaded machine takes seconds to start a Python process.
        assert wait_until(lambda: accepts(listen_port) and "daemon.started" in log_path.read_text(), 30), \
            "the daemon never listened" + log_tail()
        assert proc.poll() is None, "the daemon did not start" + log_tail()  # someone else has the port
        # ... and its event listener is subscribed: a call whose CHANNEL_CREATE it missed is not recorded.
        assert wait_until(lambda: any("CHANNEL_CREATE" in c.names for c in fake.inbound.connections), 15)
        call = fake.place_call(caller="0501234567", router=("127.0.0.1", listen_port))
        assert wait_until(lambda: fake.events("CHANNEL_BRIDGE", uuid=call.uuid), 15), \
            "the call was never bridged" + log_tail()
        bridged_at = fake.clock.now_us()
        assert not call.done.is_set()  # talking now
        proc.send_signal(signal.SIGTERM)
        assert wait_until(lambda: "daemon.stopping" in log_path.read_text(), 15), \
            "SIGTERM was not taken" + log_tail()
        assert wait_until(lambda: not accepts(listen_port), 15), "a stopping daemon must not take new calls"
        assert proc.poll() is None, "the daemon quit with a call in flight"
        assert not call.done.is_set()
        # Long enough a talk to bind the client (min_talk: 10 s of FreeSWITCH time), then the
        # call in flight finishes on its own, not cut by the daemon.
        assert wait_until(lambda: fake.clock.now_us() - bridged_at >= 30_000_000, 15)
        call.hangup()
        assert call.wait(15) and call.answered_by == "1001" and call.talk_seconds > 0
        assert wait_until(lambda: proc.poll() is not None, 30), "the daemon never exited" + log_tail()
        assert proc.returncode == 0, log_tail()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        fake.stop()
    store = Store.open(f"sqlite:///{tmp_path}/run.db")
    [record] = store.calls()
    # All the talk, not cut by the daemon: from the agent's answer (one media frame before the
    # caller's, where the fake counts from) to the hang-up, in whole seconds like billsec.
    talk_us = round(call.talk_seconds * 1_000_000) + round(ANSWER_DELAY * 1_000_000)
    assert (record.agent, record.talk_seconds) == ("1001", talk_us // 1_000_000)
    assert store.bindings_for("+380501234567")["auto"].agent == "1001"
    log = log_path.read_text()
    assert "Traceback" not in log and "daemon.stopped" in log
