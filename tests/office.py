"""An office for end-to-end tests: a store with agents and a group, the fake FreeSWITCH, and the
real daemon between them over loopback TCP."""
from __future__ import annotations

import gevent

from fsrouter.config import Config
from fsrouter.daemon import Daemon
from fsrouter.fakefs import FakeFreeSWITCH
from fsrouter.service import Service
from fsrouter.store import Store

AGENTS = ("1001", "1002", "1003", "1004")


class Office:
    def __init__(self, tmp_path, time_scale: float = 0.005, **config):
        self.url = f"sqlite:///{tmp_path}/office.db"
        self.store = Store.open(self.url)
        self.store.add_group("sales")
        for ext in AGENTS:
            self.store.add_agent(ext, f"Agent {ext}", dial_string=f"user/{ext}@127.0.0.1", groups=["sales"])
        self.fake = FakeFreeSWITCH(time_scale=time_scale).start()
        self.config = Config(database=self.url, esl_port=self.fake.esl_address[1], listen_port=0,
                             drain_timeout=5.0, **config)
        self.service = Service(self.store, cache_ttl=0.0)
        self.daemon = Daemon(self.config, self.service)
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
        settle(self.daemon, timeout)

    def binding(self, client: str, source: str = "auto"):
        binding = self.store.bindings_for(client).get(source)
        return binding.agent if binding else None

    def close(self) -> None:
        self.daemon.stop()
        self.fake.stop()
        self.store.close()


def settle(daemon: Daemon, timeout: float = 5.0) -> None:
    """Until every finished call's events reached the store."""
    with gevent.Timeout(timeout, False):
        while True:
            gevent.sleep(0.05)
            if not daemon.writer.pending and not daemon.tracker.stats.open:
                gevent.sleep(0.05)
                return
