"""An office for end-to-end tests: a store with agents and a group, the fake FreeSWITCH, and the
real daemon between them over loopback TCP. Also: the same office set up on the command line
(cli_office), and the waits the tests share, each for a condition and bounded (wait_until, hears,
settle): a fixed sleep is too short on a loaded machine sooner or later."""
from __future__ import annotations

import os
import re
import socket
import time

import gevent
from click.testing import CliRunner

from fsrouter import config as config_module
from fsrouter.cli import main
from fsrouter.config import Config
from fsrouter.daemon import Daemon
from fsrouter.fakefs import FakeFreeSWITCH
from fsrouter.wiring import build_daemon

AGENTS = ("1001", "1002", "1003", "1004")


class Office:
    def __init__(self, tmp_path, time_scale: float = 0.005, **config):
        self.url = f"sqlite:///{tmp_path}/office.db"
        self.fake = FakeFreeSWITCH(time_scale=time_scale).start()
        self.config = Config(database=self.url, esl_port=self.fake.esl_address[1], listen_port=0,
                             drain_timeout=5.0, **config)
        # fsrouter run's wiring; the test reads and writes on the daemon's own connection.
        self.daemon = build_daemon(self.config, one_connection=True, cache_ttl=0.0)
        self.service = self.daemon.service
        self.store = self.service.store
        self.store.add_group("sales")
        for ext in AGENTS:
            self.store.add_agent(ext, f"Agent {ext}", dial_string=f"user/{ext}@127.0.0.1", groups=["sales"])
        self.daemon.start()
        assert self.daemon.listener.connected.wait(5), "the listener never connected to the fake"

    @property
    def router(self):
        return self.daemon.outbound.address

    def call(self, caller: str, group: str = "sales"):
        """A client calls; returns the fake's record once the call is over and written."""
        handle = self.fake.place_call(caller=caller, group=group, router=self.router)
        assert handle.wait(15), "the call never ended"
        self.settle()
        return handle

    def settle(self, timeout: float = 5.0) -> None:
        """Until every event the fake sent so far reached the daemon, and every call they finished
        reached the store."""
        assert hears(self.daemon, self.fake, timeout), "the daemon's event socket is not following"
        assert settle(self.daemon, timeout), "the finished calls never reached the store"

    def binding(self, client: str, source: str = "auto"):
        binding = self.store.bindings_for(client).get(source)
        return binding.agent if binding else None

    def close(self) -> None:
        self.daemon.stop()
        self.fake.stop()
        self.store.close()


class Cli:
    """`fsrouter` on the command line against one database: `cli("agent", "list")` is its output,
    the exit code checked (`code=`)."""

    def __init__(self, url: str):
        self.url = url
        self.runner = CliRunner()

    def __call__(self, *args: str, code: int = 0) -> str:
        result = self.runner.invoke(main, ["--db", self.url, *args])
        assert result.exit_code == code, (result.output, result.exception)
        return result.output


def cli_office(tmp_path, monkeypatch, agents=("1001", "1002")) -> Cli:
    """An office set up on the command line: a fresh database in tmp_path with the group `sales`
    and `agents` in it, and neither a config file nor FSROUTER_* variables to read."""
    monkeypatch.setattr(config_module, "DEFAULT_CONFIG_PATH", str(tmp_path / "absent.toml"))
    for name in list(os.environ):
        if name.startswith("FSROUTER_"):
            monkeypatch.delenv(name)
    cli = Cli(f"sqlite:///{tmp_path / 'cli.db'}")
    cli("group", "add", "sales")
    for ext in agents:
        cli("agent", "add", ext, "--name", f"Agent {ext}", "--group", "sales")
    return cli


_UUID = re.compile(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}")


def without_uuids(text: str) -> str:
    """`text` with every UUID masked. A random UUID holds a marker such as "6666" often enough (a
    few calls' commands in a thousand) that a test looking for the marker fails by chance."""
    return _UUID.sub("<uuid>", text)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def accepts(port: int) -> bool:
    """Does something take connections on this loopback port now?"""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def wait_until(condition, timeout: float, every: float = 0.02) -> bool:
    """Until `condition()` holds, for at most `timeout` seconds (the loop goes on meanwhile)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        gevent.sleep(every)
    return bool(condition())


def settle(daemon: Daemon, timeout: float = 5.0) -> bool:
    """Until every finished call's events reached the store (of the events the daemon has read),
    and their webhook events the outbox."""
    gevent.sleep(0.05)
    live_events = daemon.live_events
    if not wait_until(lambda: not daemon.writer.pending and not daemon.tracker.stats.open
                      and not (live_events and live_events.pending), timeout, 0.05):
        return False
    gevent.sleep(0.05)
    return True


def hears(daemon: Daemon, fake: FakeFreeSWITCH, timeout: float = 10.0) -> bool:
    """Until a HEARTBEAT the fake sends now reaches the daemon's event handler.

    One connection delivers in order, so every event sent before it was handled too, and the event
    socket is connected, subscribed and in step: whatever garbage came before it was read, or cost
    a reconnect (the events sent meanwhile are lost, as with a real FreeSWITCH). A probe sent on a
    connection that is about to be found broken is lost with it: another is sent, until one arrives.
    """
    listener = daemon.listener
    handler = listener.on_event
    heard = set()

    def spy(headers) -> None:
        if headers.get("Event-Name") == "HEARTBEAT":
            heard.add(str(headers.get("Event-Sequence")))
        handler(headers)

    listener.on_event = spy
    try:
        deadline, patience = time.monotonic() + timeout, 0.25
        while time.monotonic() < deadline:
            probe = str(fake.bus.plain_event("HEARTBEAT", [("Event-Info", "System Ready")]).seq)
            if wait_until(lambda p=probe: p in heard, min(patience, deadline - time.monotonic()), 0.01):
                return True
            patience = min(patience * 2, 2.0)
        return False
    finally:
        listener.on_event = handler
