"""`fsrouter run` as the service runs it: a separate process, configured from FSROUTER_* variables,
stopped with SIGTERM while calls are in flight."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import gevent

from fsrouter.fakefs import FakeFreeSWITCH
from fsrouter.store import Store


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        gevent.sleep(0.05)
    return False


def start_daemon(tmp_path, esl_port: int, listen_port: int, **extra):
    env = dict(os.environ, FSROUTER_DATABASE=f"sqlite:///{tmp_path}/run.db", FSROUTER_ESL_PORT=str(esl_port),
               FSROUTER_LISTEN_PORT=str(listen_port), FSROUTER_DRAIN_TIMEOUT="20",
               FSROUTER_LOG_FORMAT="json", **extra)
    log = open(tmp_path / "daemon.log", "wb")
    return subprocess.Popen([sys.executable, "-m", "fsrouter.cli", "run"], env=env, stdout=log,
                            stderr=subprocess.STDOUT)


def test_sigterm_lets_calls_in_flight_finish_writes_them_and_exits_zero(tmp_path):
    store = Store.open(f"sqlite:///{tmp_path}/run.db")
    store.add_group("sales")
    store.add_agent("1001", "Anna", dial_string="user/1001@127.0.0.1", groups=["sales"])
    store.close()
    fake = FakeFreeSWITCH(time_scale=0.01).start()
    fake.agent("1001", answers_after=1, talk=300)  # 3 s of wall time
    listen_port = free_port()
    proc = start_daemon(tmp_path, fake.esl_address[1], listen_port)
    try:
        assert wait_for(lambda: _accepts(listen_port), 10), "the daemon never listened"
        # ... and its event listener is subscribed: a call whose CHANNEL_CREATE it missed is not recorded.
        assert wait_for(lambda: any("CHANNEL_CREATE" in c.names for c in fake.inbound.connections), 10)
        call = fake.place_call(caller="0501234567", router=("127.0.0.1", listen_port))
        assert wait_for(lambda: call.bridges, 5), "the call was never bridged"
        gevent.sleep(0.3)  # answered after 1 s of FreeSWITCH time: talking now
        assert not call.done.is_set()
        proc.send_signal(signal.SIGTERM)
        gevent.sleep(0.5)
        assert proc.poll() is None, "the daemon quit with a call in flight"
        assert not _accepts(listen_port), "a stopping daemon must not take new calls"
        assert call.wait(10) and call.talk_seconds == 300
        assert wait_for(lambda: proc.poll() is not None, 15), "the daemon never exited"
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        fake.stop()
    store = Store.open(f"sqlite:///{tmp_path}/run.db")
    [record] = store.calls()
    assert (record.agent, record.talk_seconds) == ("1001", 300)
    assert store.bindings_for("+380501234567")["auto"].agent == "1001"
    log = (tmp_path / "daemon.log").read_text()
    assert "Traceback" not in log and "daemon.stopped" in log


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False
