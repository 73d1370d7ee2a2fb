"""`fsrouter demo`: the real daemon against the bundled fake FreeSWITCH, an office day in seconds.

Nothing here is simulated on fsrouter's side: the daemon listens on loopback ports, the fake
calls it through the outbound socket and streams CHANNEL events to its listener, exactly as in
the tests. Only the clock of the fake runs fast.
"""
from __future__ import annotations

import secrets
import tempfile
from pathlib import Path

import click
import gevent

from . import wiring
from .config import Config
from .fakefs import FakeFreeSWITCH
from .fakefs.transfers import BLIND, Transfer
from .http.links import Links
from .logs import configure_logging

AGENTS = {"1001": "Anna", "1002": "Bohdan", "1003": "Olena", "1004": "Taras"}
MARTA, IVAN = "0501234567", "+380671112233"


class Demo:
    def __init__(self, speed: float, workdir: Path, listen: str = "127.0.0.1:0", linger: float = 0.0):
        self.fake = FakeFreeSWITCH(time_scale=0.01 / max(speed, 0.01)).start()
        # The pages need the API's listener, whose token signs their links: one made up for this run.
        config = Config(database=f"sqlite:///{workdir}/demo.db", esl_port=self.fake.esl_address[1],
                        listen_port=0, drain_timeout=5.0, log_format="console", log_level="warning",
                        api_listen=listen, api_token=secrets.token_urlsafe(24))
        self.links = Links(config.api_token)
        self.linger = linger
        # The daemon of `fsrouter run`, on one connection that the demo reads too, and reading its
        # configuration afresh for each call (an agent disabled mid-day rings no more at once).
        self.daemon = wiring.build_daemon(config, one_connection=True, cache_ttl=0.0)
        self.store = self.daemon.service.store
        self.store.add_group("sales")
        for ext, name in AGENTS.items():
            self.store.add_agent(ext, name, dial_string=f"user/{ext}@${{domain_name}}", groups=["sales"])
        self.seen: dict[str, str | None] = {}

    def run(self) -> None:
        self.daemon.start()
        self.daemon.listener.connected.wait(5)
        say = click.echo
        say("fsrouter demo: the real daemon, a fake FreeSWITCH on loopback, one office day.\n"
            f"Group 'sales': {', '.join(f'{n} ({e})' for e, n in AGENTS.items())}. "
            "Sticky timeout 20 s, min talk 10 s.\n")
        host, port = self.daemon.api.address
        base = f"http://{host}:{port}"
        say("Open these in a browser; they stay live while the day plays"
            f"{f' and {self.linger:.0f} s after' if self.linger else ''}:\n"
            f"  the office board:    {self.links.board_url(base)}\n"
            f"  Bohdan's screen pop: {self.links.agent_url(base, '1002')}\n")
        self.scene("09:02", "Marta calls for the first time; everyone rings, Olena answers and talks 3 min.",
                   lambda: self.client_calls(MARTA, answer={"1003": (4, 180)}))
        self.scene("09:15", "Ivan calls; Anna answers but the call lasts only 6 s.",
                   lambda: self.client_calls(IVAN, answer={"1001": (2, 6)}))
        self.scene("09:30", "Taras calls Ivan back; Ivan does not pick up.",
                   lambda: self.agent_calls(IVAN, "1004", answered=False))
        self.scene("10:05", "Marta calls again.",
                   lambda: self.client_calls(MARTA, answer={"1003": (3, 95)}))
        self.scene("11:40", "Ivan calls; Taras does not answer, so the group rings and Bohdan talks 2 min.",
                   lambda: self.client_calls(IVAN, answer={"1002": (25, 120)}, silent=("1004",)))
        self.store.set_agent_enabled("1003", False)
        self.scene("13:00", "Olena is off this afternoon (fsrouter agent disable 1003); Marta calls.",
                   lambda: self.client_calls(MARTA, answer={"1001": (5, 40)}))
        self.scene("15:20", "A call whose caller ID is dial-string syntax: '1001,user/6666@evil'.",
                   lambda: self.client_calls("1001,user/6666@evil", answer={"1002": (2, 15)}))
        self.scene("16:10", "Marta calls; Anna answers and passes her on to Bohdan (a blind transfer): "
                   "her card moves to Bohdan's screen pop.",
                   lambda: self.client_calls(MARTA, answer={"1001": (3, 30), "1002": (2, 60)},
                                             transfers={"1001": Transfer(BLIND, "1002")}))
        self.scene("17:55", "Nobody is free: every phone is busy.",
                   lambda: self.client_calls(IVAN, busy=tuple(AGENTS)))
        say("\nThe bindings fsrouter holds at the end of the day (fsrouter binding list):")
        for binding in sorted(self.store.list_bindings(), key=lambda b: b.client):
            say(f"  {binding.client}  ->  {binding.agent} {AGENTS[binding.agent]:<7} "
                f"({binding.source}: {binding.why})")
        if self.linger:
            say(f"\nThe pages stay up for {self.linger:.0f} s (Ctrl-C ends the demo).")
            gevent.sleep(self.linger)

    def scene(self, clock: str, text: str, act) -> None:
        click.echo(f"[{clock}] {text}")
        act()

    def client_calls(self, caller: str, answer=None, silent=(), busy=(), transfers=None) -> None:
        answer, transfers = answer or {}, transfers or {}
        for ext in AGENTS:
            if ext in answer:
                after, talk = answer[ext]
                self.fake.agent(ext, answers_after=after, talk=talk, transfer=transfers.get(ext))
            elif ext in busy:
                self.fake.agent(ext, busy=True)
            else:
                self.fake.agent(ext, never_answers=True)
        call = self.fake.place_call(caller=caller, router=self.daemon.outbound.address)
        call.wait(30)
        self.settle()
        route = call.variables.get("fsrouter_route", "?")
        reason = call.variables.get("fsrouter_reason", "?")
        for bridge in call.bridges:
            click.echo(f"        bridge {bridge.dial_string}  ->  {bridge.disposition}")
        if call.answered_by:
            click.echo(f"        answered by {AGENTS.get(call.answered_by)} ({call.answered_by}) on the "
                       f"{route} leg, talked {call.talk_seconds:.0f} s   [reason: {reason}]")
            for ext, transfer in transfers.items():
                click.echo(f"        {AGENTS[ext]} passed the call on to {AGENTS[transfer.to]} ({transfer.to})")
        else:
            click.echo(f"        nobody answered: back to the dialplan (voicemail)   [reason: {reason}]")
        self.report_bindings()

    def agent_calls(self, client: str, ext: str, answered: bool) -> None:
        handle = self.fake.agent_calls_out(ext, client, answered=answered)
        handle.done.wait(30)
        self.settle()
        self.report_bindings()

    def settle(self) -> None:
        with gevent.Timeout(10, False):
            while self.daemon.writer.pending or self.daemon.tracker.stats.open:
                gevent.sleep(0.02)

    def report_bindings(self) -> None:
        for binding in self.store.list_bindings():
            before = self.seen.get(binding.client)
            if before != binding.agent:
                was = f"was {AGENTS[before]}" if before else "new"
                click.echo(f"        binding {binding.client} -> {AGENTS[binding.agent]} ({binding.agent}), "
                           f"{was}: {binding.why}")
                self.seen[binding.client] = binding.agent

    def close(self) -> None:
        self.daemon.stop()
        self.fake.stop()
        self.store.close()


def run_demo(speed: float = 1.0, listen: str = "127.0.0.1:0", linger: float = 0.0) -> None:
    configure_logging("console", "warning")
    with tempfile.TemporaryDirectory(prefix="fsrouter-demo-") as workdir:
        demo = Demo(speed, Path(workdir), listen=listen, linger=linger)
        try:
            demo.run()
        finally:
            demo.close()
