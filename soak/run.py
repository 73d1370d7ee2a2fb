"""Fault-injection soak: a real `fsrouter run` under a steady call rate while things break.

    make soak                      # 5 minutes
    SOAK_SECONDS=60 make soak      # or: .venv/bin/python soak/run.py --seconds 60

Everything runs on loopback in a temporary directory. This process is the fake FreeSWITCH
(fsrouter.fakefs, in-process): it places client calls to the daemon's outbound socket at a
steady rate and has agents call clients, while its scripted agents answer, talk long or short,
ring out or are busy (rescripted every few seconds). fsrouter is a separate process started from
the console script with a 0600 config file, SQLite in WAL mode, JSON logs to a file.

This process is also the CRM and the webhook receiver (gevent.pywsgi on loopback). The daemon asks
the CRM two lookups per call (lead: an extension, contact: a CRM user id; each names an agent for
about 15 % of the clients, 404 for the others) within crm_budget 0.3 s, breaker reset 5 s. Its
events go through the outbox to the receiver, which checks every signature and records each event
by id; it fails on purpose now and then so the outbox retries (6 % answered 500, 2 % hang 2.5 s,
past webhook_timeout 1 s, 2 % taken but answered 503).

One fault at a time, in random order (every kind once before any comes again), with a few
seconds between them (a fault's recovery is awaited before the next one is drawn):

    fs_restart   FreeSWITCH "restarts": event-socket connections close, connections are refused
                 for 0.5-3 s, then a switch with a new Core-UUID and Event-Sequence is back
    esl_drop     the event-socket connection is cut (EOF), connections still accepted
    malformed    a frame fsrouter cannot read (one of the fake's malformed frames, or random bytes)
    db_stall     another connection holds SQLite's write lock (BEGIN EXCLUSIVE) for 2-5 s
    sigkill      fsrouter is killed with SIGKILL and started again 0.5-3 s later
    down_long    fsrouter is killed with SIGKILL and stays down 20-40 s (an upgrade, a crash loop)
    esl_reload   the event socket goes away for 1-3 s and comes back on the same switch (same
                 Core-UUID), as `reload mod_event_socket` does
    crm_hang     the CRM hangs for 3-8 s: every request is held, unanswered, until 2 s after

At the end it prints its figures and checks them (exit 1 when a check fails):

  * every call offered got a sticky or fallback bridge or was handed back to the dialplan
    (calls whose socket connect failed while fsrouter was down count as handed back: the
    dialplan's fallback covers them; so do calls whose socket was cut by the SIGKILL);
  * no binding the rules require is missing or wrong in the store, and no call record is
    missing, for every call, those of event-socket outages included: the fake writes every call's
    CDR as mod_cdr_csv does (fsrouter_in.csv / fsrouter_out.csv, conf/cdr_csv.conf.xml) and the
    daemon's catch-up recovers from them the calls whose events it missed (counted apart: calls
    that overlapped an outage, or ended less than 1 s before one began);
  * no duplicate call records, none that match no call offered;
  * no unhandled exception (traceback) in the daemon's log, and a clean exit 0 on SIGTERM;
  * the CRM: its answers routed calls, and while it hung no decision took longer than
    crm_budget + decision_budget (+0.25 s for this process's scheduling); the calls are in the
    first check;
  * webhook events lost: 0. After the calls end the soak waits for the outbox to drain (a row a
    SIGKILL cut short stays claimed for webhook_timeout + 30 s), then every event id the outbox
    committed must have reached the receiver at least once (duplicates are counted, not faults);
    so must the events each call record requires (answered or missed, ended), and the last
    binding.changed the receiver got for each client must name its learned binding's agent;
    every delivery's signature must verify.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs

import gevent
from gevent.pywsgi import WSGIServer

from fsrouter.core import webhooks
from fsrouter.core.missed import is_missed
from fsrouter.fakefs import FakeFreeSWITCH
from fsrouter.fakefs.inbound import MALFORMED
from fsrouter.store import Store

AGENTS = ("1001", "1002", "1003", "1004")
MIN_TALK = 10.0  # the default rule: FreeSWITCH seconds of talk that bind an inbound call
OUTAGE_MARGIN = 1.0  # a call ending less than this before an outage may not have been written
FAULTS = ("fs_restart", "esl_drop", "malformed", "db_stall", "sigkill", "crm_hang", "down_long", "esl_reload")
CRM_BUDGET = 0.3  # the daemon's crm_budget (its default)
DECISION_BUDGET = 0.25  # the daemon's decision_budget (its default)
CRM_SLACK = 0.25  # this process's scheduling, on top of the budgets, when judging a decision's time
WEBHOOK_TIMEOUT = 1.0  # the daemon's webhook_timeout: the receiver's hangs outlast it
HOOK_HANG = 2.5  # seconds the receiver hangs now and then
WEBHOOK_SECRET = "soak-webhook-secret"


@dataclass
class Offered:
    """One call the fake placed: a client's inbound call, or an agent's call to a client."""
    kind: str  # "in" or "out"
    handle: object
    client: str  # E.164
    placed: float  # monotonic
    placed_perf: float = 0.0  # perf_counter, the fake's clock for when commands arrived
    done_at: float | None = None
    ended_us: int | None = None  # FreeSWITCH time when it ended

    @property
    def uuid(self) -> str:
        return self.handle.uuid


@dataclass
class Outage:
    start: float
    end: float | None = None
    why: str = ""


@dataclass
class Figures:
    faults: Counter = field(default_factory=Counter)
    fault_log: list = field(default_factory=list)
    outages: list = field(default_factory=list)
    kills: list = field(default_factory=list)
    down: list = field(default_factory=list)  # (killed, back) monotonic: fsrouter not running
    daemon_starts: int = 0
    recovery_failures: list = field(default_factory=list)
    stall_seconds: float = 0.0
    crm_hangs: list = field(default_factory=list)  # (start, end) perf_counter: the CRM hung
    crm_hang_seconds: float = 0.0
    outbox_drained_seconds: float | None = None
    caught_up_seconds: float | None = None  # after the last call, until the catch-up read every CDR line


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values, q):
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class _Quiet:
    """pywsgi's error log: a hung handler writing to a client that gave up is expected here."""

    def write(self, text) -> None:
        pass

    def flush(self) -> None:
        pass


def _serve(app) -> WSGIServer:
    server = WSGIServer(("127.0.0.1", 0), app, log=None, error_log=_Quiet())
    server.start()
    return server


class CrmEndpoint:
    """The CRM on loopback. It names a responsible agent for some clients (by extension for the
    `lead` lookup, by CRM user id for `contact`), 404 for the others, and answers at once -- unless
    a `crm_hang` fault is on: then every request hangs, unanswered, until a while after it ends."""

    def __init__(self):
        self.server = _serve(self.app)
        self.url = f"http://127.0.0.1:{self.server.address[1]}"
        self.hang_until = 0.0  # monotonic
        self.requests = Counter()  # answered_agent, answered_404, hung

    @staticmethod
    def responsible(client: str, kind: str):
        """Who the CRM names: a fixed function of the client (about 15 % each lookup)."""
        h = zlib.crc32(client.encode()) % 100
        ext = AGENTS[h % len(AGENTS)]
        if kind == "lead" and h < 15:
            return {"responsible": {"ext": ext}}
        if kind == "contact" and 15 <= h < 30:
            return {"responsible": {"user_id": f"u-{ext}"}}
        return None

    def app(self, environ, start_response):
        now = time.monotonic()
        if now < self.hang_until:
            self.requests["hung"] += 1
            gevent.sleep(self.hang_until - now + 2.0)  # the daemon gave up long before
        query = parse_qs(environ.get("QUERY_STRING", ""))
        phone = query.get("phone", [""])[0]
        client = phone if phone.startswith("+") else "+" + phone
        answer = self.responsible(client, query.get("kind", [""])[0])
        if answer is None:
            self.requests["answered_404"] += 1
            start_response("404 Not Found", [("Content-Type", "application/json")])
            return [b'{"responsible": null}']
        self.requests["answered_agent"] += 1
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps(answer).encode()]

    def stop(self) -> None:
        self.server.stop(timeout=1)


class HookReceiver:
    """The webhook receiver on loopback: checks each delivery's signature and records its event by
    id. Now and then it fails on purpose, so that the outbox retries: 500 before reading the
    event, or a hang past the daemon's webhook_timeout (then it takes the event after all), or
    the event taken but 503 answered (both give a second delivery of an event already here)."""

    def __init__(self, rng: random.Random, secret: str):
        self.rng = rng
        self.secret = secret
        self.server = _serve(self.app)
        self.url = f"http://127.0.0.1:{self.server.address[1]}/hooks"
        self.events: dict[str, dict] = {}  # event id -> the body, as first received
        self.deliveries = Counter()  # per event id
        self.answers = Counter()  # ok, refused_500, hung, took_then_503, cut_short, unreadable
        self.bad_signatures = 0

    def app(self, environ, start_response):
        try:
            body = environ["wsgi.input"].read()
        except OSError:  # the daemon was SIGKILLed in the middle of a POST: nothing was delivered
            self.answers["cut_short"] += 1
            start_response("400 Bad Request", [("Content-Type", "text/plain")])
            return [b"cut short"]
        roll = self.rng.random()
        if roll < 0.06:
            self.answers["refused_500"] += 1
            start_response("500 Internal Server Error", [("Content-Type", "text/plain")])
            return [b"not now"]
        if roll < 0.08:
            self.answers["hung"] += 1
            gevent.sleep(HOOK_HANG)
        if not webhooks.verify(self.secret, environ.get("HTTP_X_FSROUTER_TIMESTAMP", ""), body,
                               environ.get("HTTP_X_FSROUTER_SIGNATURE", ""), now=time.time(), tolerance=600):
            self.bad_signatures += 1
            start_response("401 Unauthorized", [("Content-Type", "text/plain")])
            return [b"bad signature"]
        try:
            event = json.loads(body)
            event_id = event["id"]
        except (ValueError, KeyError, TypeError):
            self.answers["unreadable"] += 1
            start_response("400 Bad Request", [("Content-Type", "text/plain")])
            return [b"bad body"]
        self.deliveries[event_id] += 1
        self.events.setdefault(event_id, event)
        if 0.08 <= roll < 0.10:
            self.answers["took_then_503"] += 1
            start_response("503 Service Unavailable", [("Content-Type", "text/plain")])
            return [b"try again"]
        if roll >= 0.08:
            self.answers["ok"] += 1
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    def stop(self) -> None:
        self.server.stop(timeout=1)


class Soak:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.dir = Path(tempfile.mkdtemp(prefix="fsrouter-soak-"))
        self.db_path = self.dir / "fsrouter.db"
        self.log_path = self.dir / "daemon.log"
        self.listen_port = free_port()
        self.cdr_dir = self.dir / "cdr"
        self.fake = FakeFreeSWITCH(time_scale=args.time_scale, password=args.password, keep_events=0,
                                   router=("127.0.0.1", self.listen_port), cdr_dir=self.cdr_dir).start()
        self.offered: list[Offered] = []
        self.figures = Figures()
        self.proc: subprocess.Popen | None = None
        self.log = open(self.log_path, "ab")  # noqa: SIM115  (the daemon writes to it across restarts)
        self.stop_calls = False
        self.clients = [f"+38067{n:07d}" for n in self.rng.sample(range(10_000_000), args.clients)]
        self._covered = False
        self._broken_at: dict[int, float] = {}  # connection -> when a malformed frame was sent down it
        # The CRM and the webhook receiver, on loopback in this process; their own random draws,
        # so that a seed gives the same calls and faults with them as without.
        self.crm = CrmEndpoint()
        self.hooks = HookReceiver(random.Random(args.seed + 1), WEBHOOK_SECRET)

    # -- fsrouter ------------------------------------------------------------------------------
    def prepare(self) -> None:
        with Store.open(f"sqlite:///{self.db_path}") as store:
            store.add_group("sales")
            for ext in AGENTS:
                store.add_agent(ext, f"Agent {ext}", dial_string=f"user/{ext}@127.0.0.1", groups=["sales"])
                store.set_agent_crm_id(ext, f"u-{ext}")
        config = self.dir / "fsrouter.toml"
        config.write_text(
            f'database = "sqlite:///{self.db_path}"\nesl_host = "127.0.0.1"\n'
            f"esl_port = {self.fake.esl_address[1]}\nesl_password = \"{self.args.password}\"\n"
            f'listen_host = "127.0.0.1"\nlisten_port = {self.listen_port}\nallowed_peers = ["127.0.0.1"]\n'
            f'drain_timeout = 10.0\nlog_format = "json"\nlog_level = "info"\n'
            f"decision_budget = {DECISION_BUDGET}\ncrm_budget = {CRM_BUDGET}\ncrm_cache_ttl = 30.0\n"
            f"crm_breaker_failures = 5\ncrm_breaker_reset = 5.0\n"
            f'webhook_urls = ["{self.hooks.url}"]\nwebhook_secret = "{WEBHOOK_SECRET}"\n'
            f"webhook_timeout = {WEBHOOK_TIMEOUT}\n"
            f'cdr_dir = "{self.cdr_dir}"\nnode = "soak"\n'
            # Tables last: lead names an extension, contact a CRM user id.
            f'[[crm_lookups]]\nname = "lead"\nurl = "{self.crm.url}/responsible?kind=lead&phone={{client}}"\n'
            f'field = "responsible.ext"\n'
            f'[[crm_lookups]]\nname = "contact"\n'
            f'url = "{self.crm.url}/responsible?kind=contact&phone={{digits}}"\n'
            f'field = "responsible.user_id"\n')
        config.chmod(0o600)
        self.config = config

    def start_daemon(self) -> None:
        binary = Path(sys.executable).with_name("fsrouter")
        command = [str(binary)] if binary.exists() else [sys.executable, "-m", "fsrouter"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("FSROUTER_")}
        self.proc = subprocess.Popen(command + ["--config", str(self.config), "run"], stdout=self.log,
                                     stderr=subprocess.STDOUT, env=env, cwd=self.dir)
        self.figures.daemon_starts += 1

    def sigkill(self) -> None:
        now = time.monotonic()
        for conn in self.subscribed():  # what is sent down it from now on is never read
            self._broken_at[id(conn)] = now
        self.proc.send_signal(signal.SIGKILL)
        self.figures.kills.append(now)
        while self.proc.poll() is None:
            gevent.sleep(0.01)

    # -- the event socket's coverage -------------------------------------------------------------
    def subscribed(self) -> list:
        return [c for c in self.fake.inbound.connections if c.authed and c.names and not c.closed.is_set()]

    def watch_coverage(self) -> None:
        """Outages of the event socket: from the moment fsrouter stopped reading a connection (it
        closed, or a malformed frame broke it: what followed on it was never read) until a new
        connection subscribed. A connection replaced by the next one without a gap is an outage
        too: the events sent down the broken one are lost."""
        current = None
        while True:
            now = time.monotonic()
            live = self.subscribed()
            newest = live[-1] if live else None
            # fsrouter has one listener: a newer connection means it left the one before, which
            # the fake may still hold open for a moment (it waits up to 2 s before closing).
            if current is not None and newest is not current:
                self.figures.outages.append(Outage(self._broken_at.pop(id(current), now)))
                current = None
            if current is None and newest is not None:
                current = newest
                if self.figures.outages and self.figures.outages[-1].end is None:
                    self.figures.outages[-1].end = now
            self._covered = current is not None
            gevent.sleep(0.005)

    def wait_covered(self, timeout: float, what: str) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._covered:
                return True
            gevent.sleep(0.02)
        self.figures.recovery_failures.append(what)
        return False

    # -- calls -----------------------------------------------------------------------------------
    def _follow(self, offered: Offered) -> None:
        offered.handle.done.wait()
        offered.done_at = time.monotonic()
        offered.ended_us = self.fake.clock.now_us()

    def place_calls(self) -> None:
        interval = 1.0 / self.args.rate
        due = time.monotonic()
        while not self.stop_calls:
            client = self.rng.choice(self.clients)
            if self.rng.random() < self.args.outbound_share:
                ext = self.rng.choice(AGENTS)
                answered = self.rng.random() < 0.6
                handle = self.fake.agent_calls_out(ext, client, answered=answered,
                                                   talk=self.rng.choice((4.0, 15.0)), ring=2.0)
                offered = Offered("out", handle, client, time.monotonic())
            else:
                # Callers write their numbers as carriers deliver them: E.164 or national.
                caller = client if self.rng.random() < 0.5 else "0" + client[4:]
                handle = self.fake.place_call(caller=caller, group="sales")
                offered = Offered("in", handle, client, time.monotonic(), time.perf_counter())
            self.offered.append(offered)
            gevent.spawn(self._follow, offered)
            due += interval
            gevent.sleep(max(0.0, due - time.monotonic()))

    def heartbeats(self) -> None:
        """FreeSWITCH's HEARTBEAT, every 20 of its seconds: the daemon's FreeSWITCH clock (loss
        windows, the catch-up's settle time) moves on with it on a quiet switch."""
        while True:
            gevent.sleep(self.fake.clock.real(20.0))
            self.fake.bus.plain_event("HEARTBEAT", [("Event-Info", "System Ready")])

    def rescript_agents(self) -> None:
        while True:
            for ext in AGENTS:
                roll = self.rng.random()
                if roll < 0.55:
                    self.fake.agent(ext, answers_after=self.rng.uniform(1, 6), talk=15.0)
                elif roll < 0.75:
                    self.fake.agent(ext, answers_after=self.rng.uniform(1, 6), talk=4.0)
                elif roll < 0.9:
                    self.fake.agent(ext, never_answers=True)
                else:
                    self.fake.agent(ext, busy=True)
            gevent.sleep(self.rng.uniform(3, 10))

    # -- faults ----------------------------------------------------------------------------------
    def inject(self, fault: str) -> float:
        """Inject one fault; returns extra seconds to wait before the next one."""
        started = time.monotonic()
        self.figures.faults[fault] += 1
        extra = 0.0
        if fault == "fs_restart":
            self.fake.restart(down_for=self.rng.uniform(0.5, 3.0))
        elif fault == "esl_drop":
            self.fake.kill_connections()
        elif fault == "malformed":
            hit, accepted = self.subscribed(), self.fake.inbound.accepted
            for conn in hit:
                self._broken_at[id(conn)] = started
            if self.rng.random() < 0.6:
                self.fake.inject_malformed(self.rng.choice(sorted(MALFORMED)))
            else:
                self.fake.inject_malformed(data=bytes(self.rng.randrange(256)
                                                      for _ in range(self.rng.randrange(1, 200))))
        elif fault == "db_stall":
            seconds = self.rng.uniform(2.0, 5.0)
            self.db_stall(seconds)
            self.figures.stall_seconds += seconds
            # A writer that failed meanwhile retries with a backoff of up to 5 s: let it catch up
            # before a SIGKILL could take what it holds.
            extra = 6.0
        elif fault in ("sigkill", "down_long"):
            self.sigkill()
            gevent.sleep(self.rng.uniform(0.5, 3.0) if fault == "sigkill" else self.rng.uniform(20.0, 40.0))
            self.start_daemon()
            self.wait_covered(30.0, f"restart at {started - self.t0:.1f}s")
            self.figures.down.append((started, time.monotonic()))
        elif fault == "esl_reload":
            for conn in self.subscribed():
                self._broken_at[id(conn)] = started
            self.fake.inbound.stop()
            gevent.sleep(self.rng.uniform(1.0, 3.0))
            self.fake.inbound.start()
        elif fault == "crm_hang":
            # Every CRM request hangs, unanswered, for 3-8 s (and a while longer for those that
            # came: the daemon must have given up after its budget).
            seconds = self.rng.uniform(3.0, 8.0)
            hang_start = time.perf_counter()
            self.crm.hang_until = time.monotonic() + seconds
            try:
                gevent.sleep(seconds)
            finally:
                self.crm.hang_until = 0.0
                self.figures.crm_hangs.append((hang_start, time.perf_counter()))
                self.figures.crm_hang_seconds += time.perf_counter() - hang_start
        self.figures.fault_log.append((round(started - self.t0, 2), fault))
        if fault == "malformed":
            gevent.sleep(1.0)
            if self.fake.inbound.accepted == accepted:  # no reconnect: the frame was skipped in place
                for conn in hit:
                    self._broken_at.pop(id(conn), None)
        if fault not in ("db_stall", "crm_hang"):
            self.wait_covered(30.0, f"{fault} at {started - self.t0:.1f}s")
        return extra

    def db_stall(self, seconds: float) -> None:
        conn = sqlite3.connect(self.db_path, timeout=0, isolation_level=None)
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    conn.execute("BEGIN EXCLUSIVE")
                    break
                except sqlite3.OperationalError:
                    if time.monotonic() > deadline:
                        return
                    gevent.sleep(0.01)
            gevent.sleep(seconds)
            conn.execute("COMMIT")
        finally:
            conn.close()

    def faults(self) -> None:
        # Drawn from a shuffled bag of every kind, refilled when empty: a short run still meets
        # each fault, a long one meets them all about equally often.
        bag: list[str] = []
        gevent.sleep(self.rng.uniform(2, 5))
        while True:
            if not bag:
                bag = self.rng.sample(FAULTS, len(FAULTS))
            extra = self.inject(bag.pop())
            gevent.sleep(extra + self.rng.uniform(2, 6))

    # -- the run ---------------------------------------------------------------------------------
    def run(self) -> int:
        self.prepare()
        self.start_daemon()
        self.t0 = time.monotonic()
        greenlets = [gevent.spawn(self.watch_coverage)]
        if not self.wait_covered(30.0, "first start"):
            print("fsrouter never connected to the fake FreeSWITCH; its log:", file=sys.stderr)
            print(self.log_path.read_text(errors="replace")[-3000:], file=sys.stderr)
            return 2
        greenlets += [gevent.spawn(self.rescript_agents), gevent.spawn(self.place_calls), gevent.spawn(self.heartbeats)]
        faults = gevent.spawn(self.faults) if not self.args.no_faults else None
        gevent.sleep(self.args.seconds)
        if faults is not None:
            faults.kill()  # a fault in progress ends where it is (a stall releases its lock)
        self.stop_calls = True
        # The daemon may have been left down by a fault cut short.
        if self.proc.poll() is not None:
            self.start_daemon()
        self.wait_covered(30.0, "after the last fault")
        self.fake.wait_calls(120.0)
        gevent.sleep(0.5)
        self.wait_caught_up()
        self.wait_written()
        self.wait_outbox_drained()
        self.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 30
        while self.proc.poll() is None and time.monotonic() < deadline:
            gevent.sleep(0.05)
        exit_code = self.proc.poll()
        if exit_code is None:
            self.proc.kill()
        gevent.killall(greenlets)
        self.fake.stop()
        self.crm.stop()
        self.hooks.stop()
        self.log.close()
        return self.report(exit_code)

    def wait_caught_up(self, timeout: float = 120.0) -> None:
        """Until the daemon's CDR catch-up has read every line the fake wrote (a line waits a
        minute of FreeSWITCH time after its call ended before it is read)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            sizes = {f"{st.st_dev}:{st.st_ino}": st.st_size
                     for st in (p.stat() for p in self.cdr_dir.glob("fsrouter_*.csv*"))}
            with sqlite3.connect(self.db_path, timeout=5) as conn:
                read = dict(conn.execute("SELECT file_key, \"offset\" FROM cdr_cursor").fetchall())
            if sizes and all(read.get(key) == size for key, size in sizes.items()):
                self.figures.caught_up_seconds = round(timeout - (deadline - time.monotonic()), 1)
                return
            gevent.sleep(0.5)
        self.figures.recovery_failures.append("the CDR catch-up never read every line")

    def wait_written(self, timeout: float = 30.0) -> None:
        """Until the call records stop changing (the daemon wrote what it will write)."""
        last, stable_since = -1, time.monotonic()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with sqlite3.connect(self.db_path, timeout=5) as conn:
                count = conn.execute("SELECT COUNT(*) FROM call_record").fetchone()[0]
            if count != last:
                last, stable_since = count, time.monotonic()
            elif time.monotonic() - stable_since > 2.0:
                return
            gevent.sleep(0.2)

    def wait_outbox_drained(self, timeout: float = 150.0) -> None:
        """Until no outbox row is pending: every event delivered (or dead). A row whose delivery a
        SIGKILL cut short stays claimed for webhook_timeout + 30 s, then is tried again."""
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            with sqlite3.connect(self.db_path, timeout=5) as conn:
                pending = conn.execute("SELECT COUNT(*) FROM outbox WHERE state = 'pending'").fetchone()[0]
            if not pending:
                self.figures.outbox_drained_seconds = round(time.monotonic() - started, 1)
                return
            gevent.sleep(0.5)

    # -- checks ----------------------------------------------------------------------------------
    def events_seen(self, call: Offered) -> bool:
        """Could fsrouter's listener have seen every event of this call? Not if an event-socket
        outage (a SIGKILL is one) overlapped it or began less than OUTAGE_MARGIN after it ended:
        such a call is the CDR catch-up's to record."""
        end = call.done_at if call.done_at is not None else float("inf")
        for outage in self.figures.outages:
            stop = outage.end if outage.end is not None else float("inf")
            if outage.start - OUTAGE_MARGIN <= end and call.placed <= stop:
                return False
        return True

    def webhook_figures(self, records, learned: dict[str, str]) -> dict:
        """Did every event reach the receiver at least once (by id), SIGKILLs and failures
        notwithstanding? Judged two ways: against the outbox (every event it committed), and
        against the store (the events each call record and each learned binding require)."""
        with sqlite3.connect(self.db_path, timeout=5) as conn:
            rows = conn.execute("SELECT event_id, event_type, state, attempts FROM outbox").fetchall()
        committed = {event_id: kind for event_id, kind, _, _ in rows}
        received = self.hooks.events
        lost = [(event_id, kind) for event_id, kind in committed.items() if event_id not in received]
        # Each call record requires its live story's end (call.ended) and outcome (call.answered
        # or call.missed), whatever their ids (derived from the story: uuid, kind, place in it).
        required = {(r.uuid, kind) for r in records for kind in (
            webhooks.CALL_MISSED if is_missed(r) else webhooks.CALL_ANSWERED if r.answered else None,
            webhooks.CALL_ENDED) if kind}
        told = {(event.get("data", {}).get("call_uuid"), event.get("type")) for event in received.values()}
        required_missing = sorted(required - told)
        # The learned binding each client has must be the new_agent of the last (by the rules'
        # order) binding.changed event received for it.
        last_change: dict[str, tuple] = {}
        for event in received.values():
            data = event.get("data", {})
            if event.get("type") == webhooks.BINDING_CHANGED and data.get("source") == "auto":
                rank = (event["at"], data.get("new_agent") or "", data.get("call_uuid") or "")
                if data["client"] not in last_change or rank > last_change[data["client"]][0]:
                    last_change[data["client"]] = (rank, data.get("new_agent"))
        mismatch = [(client, agent, last_change.get(client, (None, None))[1])
                    for client, agent in learned.items() if last_change.get(client, (None, None))[1] != agent]
        deliveries = self.hooks.deliveries
        return {
            "events_committed": len(committed), "outbox_rows": len(rows),
            "events_by_type": dict(sorted(Counter(committed.values()).items())),
            "events_received": len(received), "events_lost": len(lost),
            "outbox_rows_at_end": dict(sorted(Counter(state for _, _, state, _ in rows).items())),
            "outbox_drained_after_calls_s": self.figures.outbox_drained_seconds,
            "attempts_max": max((attempts for _, _, _, attempts in rows), default=0),
            "posts": sum(self.hooks.answers.values()), "answers": dict(sorted(self.hooks.answers.items())),
            "events_delivered_more_than_once": sum(1 for n in deliveries.values() if n > 1),
            "received_not_in_outbox": sum(1 for event_id in received if event_id not in committed),
            "events_required_by_call_records": len(required),
            "events_required_missing": len(required_missing),
            "learned_bindings_checked": len(learned), "binding_changes_not_matching_the_store": len(mismatch),
            "bad_signatures": self.hooks.bad_signatures,
            "_lost": lost, "_required_missing": required_missing, "_binding_mismatch": mismatch,
        }

    def killed_during(self, call: Offered) -> bool:
        end = call.done_at if call.done_at is not None else float("inf")
        return any(call.placed - 0.1 <= kill <= end for kill in self.figures.kills)

    def report(self, exit_code) -> int:
        inbound = [c for c in self.offered if c.kind == "in"]
        outbound = [c for c in self.offered if c.kind == "out"]
        outcome = Counter()
        latencies = []
        hang = Counter()  # inbound calls whose decision came while the CRM hung
        hang_latencies = []
        crm_routed = 0
        for call in inbound:
            h = call.handle
            route = next((cmd.headers.get("execute-app-arg", "") for cmd in h.parsed
                          if cmd.headers.get("execute-app-name") == "multiset"), "")
            first = next((part.split("=", 1)[1] for part in route.split(":")
                          if part.startswith("fsrouter_route=")), None)
            if "fsrouter_reason=crm" in route.split(":"):
                crm_routed += 1
            if h.decision_latency is not None:
                latencies.append(h.decision_latency)
            asked = h.connect_reply_at
            if asked is not None and any(start - 0.05 <= asked <= end
                                         for start, end in self.figures.crm_hangs):
                hang["calls"] += 1
                if h.decision_latency is not None:
                    hang_latencies.append(h.decision_latency)
                    hang[f"route_{first}"] += 1
                elif h.done.is_set() and h.returned_to_dialplan:
                    hang["handed_back"] += 1
            if not h.done.is_set():
                outcome["not_finished"] += 1
            elif h.bridges and first in ("sticky", "fallback"):
                outcome[f"bridged_{first}"] += 1
            elif h.connect_failed:
                outcome["handed_back_connect_failed"] += 1
            elif h.returned_to_dialplan and first is not None:
                outcome["handed_back_by_fsrouter"] += 1
            elif h.returned_to_dialplan and self.killed_during(call):
                outcome["handed_back_socket_cut_by_kill"] += 1
            else:
                outcome["unhandled"] += 1
        handled = sum(n for k, n in outcome.items() if k.startswith(("bridged_", "handed_back_")))
        # How long a caller waited for the first bridge, from the moment the call reached the
        # socket application, while fsrouter was running (not across a SIGKILL and restart).
        waits = [c.handle.first_bridge_at - c.placed_perf for c in inbound if c.handle.first_bridge_at
                 and not any(c.placed - 0.5 <= back and killed <= (c.done_at or float("inf"))
                             for killed, back in self.figures.down)]
        slow = [w for w in waits if w > self.args.max_wait]

        store = Store.open(f"sqlite:///{self.db_path}")
        records = store.calls()
        windows_rows = [(w.why, w.closed_at, w.recovered) for w in store.loss_windows("soak")]
        windows = dict(sorted(Counter(why for why, _, _ in windows_rows).items()))
        learned = {b.client: b.agent for b in store.list_bindings() if b.source == "auto"}
        store.close()
        hooks = self.webhook_figures(records, learned)
        by_uuid = Counter(r.uuid for r in records)
        offered_uuids = {c.uuid for c in self.offered}
        duplicates = sum(n - 1 for n in by_uuid.values() if n > 1)
        duplicates += sum(n - 1 for n in Counter((r.client, r.direction, r.started_at) for r in records).values()
                          if n > 1)
        phantoms = sum(1 for r in records if r.uuid not in offered_uuids)

        finished = [c for c in self.offered if c.done_at is not None]
        records_missing = [c.uuid for c in finished if c.uuid not in by_uuid]

        # The binding each client must have: its last qualifying call (rules.py), when that call
        # could be seen. Two qualifying calls ending within 0.5 FreeSWITCH seconds are too close
        # for this process's clock to order, so such a client is not judged.
        qualifying: dict[str, list] = {}
        for call in self.offered:
            if call.ended_us is None:
                continue
            h = call.handle
            if call.kind == "in":
                if h.answered_by and h.talk_seconds >= MIN_TALK:
                    qualifying.setdefault(call.client, []).append((call.ended_us, h.answered_by, call))
            else:
                qualifying.setdefault(call.client, []).append((call.ended_us, h.ext, call))
        verified = missing = wrong = unjudged = 0
        wrong_examples = []
        for client, calls in qualifying.items():
            calls.sort(key=lambda item: (item[0], item[1]))
            ended_us, agent, last = calls[-1]
            close = len(calls) > 1 and ended_us - calls[-2][0] < 500_000 and calls[-2][1] != agent
            if close:
                unjudged += 1
                continue
            have = learned.get(client)
            if have is None:
                missing += 1
                wrong_examples.append((client, agent, None, last.uuid))
            elif have != agent:
                wrong += 1
                wrong_examples.append((client, agent, have, last.uuid))
            else:
                verified += 1

        tracebacks, exceptions, events = 0, 0, Counter()
        by_listener, by_catchup = Counter(), Counter()  # uuid -> times written by each path
        for line in self.log_path.read_text(errors="replace").splitlines():
            if "Traceback" in line:
                tracebacks += 1
            if line.startswith("{"):
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if "exception" in record:
                    exceptions += 1
                if record.get("event") == "call.recorded":
                    by_listener[record.get("uuid")] += 1
                elif record.get("event") == "call.recovered":
                    by_catchup[record.get("uuid")] += 1
                if record.get("level") in ("warning", "error", "critical"):
                    events[f"{record.get('level')}:{record.get('event')}"] += 1

        f = self.figures
        figures = {
            "seconds": self.args.seconds, "rate_per_second": self.args.rate, "seed": self.args.seed,
            "time_scale": self.args.time_scale,
            "calls_offered": len(self.offered), "inbound_offered": len(inbound), "agent_calls_out": len(outbound),
            "inbound_outcomes": dict(sorted(outcome.items())), "inbound_handled": handled,
            "wait_for_first_bridge_ms": {"p50": _ms(percentile(waits, 0.5)), "p99": _ms(percentile(waits, 0.99)),
                                         "max": _ms(max(waits) if waits else None),
                                         f"over_{self.args.max_wait:g}s": len(slow)},
            "decision_latency_ms": {"p50": _ms(percentile(latencies, 0.5)), "p99": _ms(percentile(latencies, 0.99)),
                                    "max": _ms(max(latencies) if latencies else None)},
            "faults": dict(sorted(f.faults.items())), "daemon_starts": f.daemon_starts,
            "db_stall_seconds": round(f.stall_seconds, 1),
            "event_socket_outages": len(f.outages),
            "fault_log": f.fault_log,
            "outages": [(round(o.start - self.t0, 2), round(o.end - self.t0, 2) if o.end else None)
                        for o in f.outages],
            "calls_with_events_lost": len([c for c in finished if not self.events_seen(c)]),
            "calls_finished": len(finished), "call_records": len(records),
            "loss_windows": windows, "calls_recovered_from_cdrs": sum(n for _, _, n in windows_rows),
            "catch_up_done_after_calls_s": self.figures.caught_up_seconds,
            "call_records_missing": len(records_missing),
            "clients_with_a_required_binding": len(qualifying), "bindings_verified": verified,
            "bindings_missing": missing, "bindings_wrong": wrong, "bindings_not_judged": unjudged,
            "duplicate_call_records": duplicates, "call_records_matching_no_call": phantoms,
            # A call written by the listener and again by the catch-up, or twice by one of them.
            "calls_recorded_twice": sum(1 for u in set(by_listener) | set(by_catchup)
                                        if by_listener[u] + by_catchup[u] > 1),
            "daemon_tracebacks": tracebacks, "daemon_exception_records": exceptions,
            "daemon_exit_on_sigterm": exit_code, "recovery_failures": f.recovery_failures,
            "daemon_warnings": dict(events.most_common(12)),
            "crm": {
                "requests": dict(sorted(self.crm.requests.items())),
                "hangs": len(f.crm_hangs), "hang_seconds": round(f.crm_hang_seconds, 1),
                "inbound_calls_routed_on_its_answer": crm_routed,
                "inbound_calls_decided_while_it_hung": dict(sorted(hang.items())),
                "decision_ms_while_it_hung": {"p50": _ms(percentile(hang_latencies, 0.5)),
                                              "max": _ms(max(hang_latencies) if hang_latencies else None),
                                              "bound": _ms(CRM_BUDGET + DECISION_BUDGET + CRM_SLACK)},
            },
            "webhooks": {k: v for k, v in hooks.items() if not k.startswith("_")},
        }
        checks = {
            "every call bridged or handed back": handled == len(inbound),
            f"no caller waited over {self.args.max_wait:g} s for a bridge while fsrouter ran": not slow,
            "no required binding missing or wrong after the catch-up": missing == 0 and wrong == 0,
            "no call record missing after the catch-up": not records_missing,
            "every loss window closed": all(closed is not None for _, closed, _ in windows_rows),
            "no call recorded twice, none matching no call":
                duplicates == 0 and phantoms == 0 and figures["calls_recorded_twice"] == 0,
            "no unhandled exception in the daemon's log": tracebacks == 0 and exceptions == 0,
            "every fault recovered from": not f.recovery_failures,
            "clean exit 0 on SIGTERM": exit_code == 0,
            "calls were offered": len(inbound) > 0,
            "the CRM's answers routed calls": crm_routed > 0,
            "the CRM hang held lookups, and no decision waited past the CRM budget":
                (not f.crm_hangs or self.crm.requests["hung"] > 0)
                and all(x <= CRM_BUDGET + DECISION_BUDGET + CRM_SLACK for x in hang_latencies),
            "no webhook event lost (every event the outbox committed was received)":
                hooks["events_committed"] > 0 and hooks["events_lost"] == 0,
            "every call record's events and every learned binding's change reached the receiver":
                hooks["events_required_missing"] == 0
                and hooks["binding_changes_not_matching_the_store"] == 0,
            "every webhook delivery correctly signed": hooks["bad_signatures"] == 0,
        }
        print(json.dumps(figures, indent=2))
        if wrong_examples:
            print("bindings missing or wrong (client, expected, found, last call):", wrong_examples[:10])
        if records_missing:
            print("call records missing (uuids):", records_missing[:10])
        if hooks["_lost"]:
            print("webhook events lost (id, type):", hooks["_lost"][:10])
        if hooks["_required_missing"] or hooks["_binding_mismatch"]:
            print("webhook events the store requires, not received:", hooks["_required_missing"][:10],
                  "; clients whose last binding.changed is not their binding:",
                  hooks["_binding_mismatch"][:10])
        print_summary(figures)
        for name, ok in checks.items():
            print(f"{'PASS' if ok else 'FAIL'}  {name}")
        if self.args.json:
            Path(self.args.json).write_text(json.dumps({"figures": figures, "checks": checks}, indent=2))
        ok = all(checks.values())
        if ok and not self.args.keep:
            shutil.rmtree(self.dir, ignore_errors=True)
        else:
            print(f"kept: {self.dir} (daemon.log, fsrouter.db)")
        return 0 if ok else 1


def print_summary(f: dict) -> None:
    """The figures that matter, as a table (the JSON above has them all)."""
    out = f["inbound_outcomes"]
    wait, crm, hooks = f["wait_for_first_bridge_ms"], f["crm"], f["webhooks"]
    hung, requests = crm["decision_ms_while_it_hung"], crm["requests"]
    handed_back = sum(n for k, n in out.items() if k.startswith("handed_back_"))
    rows = [
        ("seconds, seed", f"{f['seconds']:g} s, seed {f['seed']}"),
        ("calls offered (client calls + agents' calls)",
         f"{f['calls_offered']} ({f['inbound_offered']} + {f['agent_calls_out']})"),
        ("client calls bridged sticky / fallback",
         f"{out.get('bridged_sticky', 0)} / {out.get('bridged_fallback', 0)}"),
        ("handed back to the dialplan", f"{handed_back}"),
        ("bridged or handed back", f"{f['inbound_handled']} of {f['inbound_offered']}"),
        ("wait for the first bridge while fsrouter ran, p50 / p99 / max",
         f"{wait['p50']} / {wait['p99']} / {wait['max']} ms"),
        ("faults", ", ".join(f"{n} {k}" for k, n in f["faults"].items())),
        ("event-socket outages", f"{f['event_socket_outages']}"),
        ("calls whose events were lost / recovered from the CDRs",
         f"{f['calls_with_events_lost']} / {f['calls_recovered_from_cdrs']}"),
        ("loss windows (why: count)", ", ".join(f"{k}: {n}" for k, n in f["loss_windows"].items())),
        ("call records missing, of the calls", f"{f['call_records_missing']} of {f['calls_finished']}"),
        ("required bindings missing or wrong (verified)",
         f"{f['bindings_missing'] + f['bindings_wrong']} ({f['bindings_verified']} verified)"),
        ("calls recorded twice / duplicate records / matching no call",
         f"{f['calls_recorded_twice']} / {f['duplicate_call_records']} / {f['call_records_matching_no_call']}"),
        ("CRM requests: answered / hung",
         f"{requests.get('answered_agent', 0) + requests.get('answered_404', 0)} / {requests.get('hung', 0)}"),
        ("client calls routed on the CRM's answer", f"{crm['inbound_calls_routed_on_its_answer']}"),
        ("calls decided while the CRM hung; decision p50 / max (bound)",
         f"{crm['inbound_calls_decided_while_it_hung'].get('calls', 0)}; "
         + f"{hung['p50']} / {hung['max']} ms ({hung['bound']} ms)"),
        ("webhook events committed / received", f"{hooks['events_committed']} / {hooks['events_received']}"),
        ("webhook POSTs: ok / 500 / hung / taken then 503 / cut short by a SIGKILL",
         " / ".join(str(hooks["answers"].get(k, 0))
                    for k in ("ok", "refused_500", "hung", "took_then_503", "cut_short"))),
        ("webhook events delivered more than once", f"{hooks['events_delivered_more_than_once']}"),
        ("webhook events lost", f"{hooks['events_lost']}"),
        ("events required by call records and bindings, missing",
         f"{hooks['events_required_missing'] + hooks['binding_changes_not_matching_the_store']}"),
        ("bad webhook signatures", f"{hooks['bad_signatures']}"),
        ("tracebacks in the daemon's log / exit on SIGTERM",
         f"{f['daemon_tracebacks']} / {f['daemon_exit_on_sigterm']}"),
    ]
    width = max(len(name) for name, _ in rows)
    print()
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    print()


def _ms(seconds):
    return None if seconds is None else round(seconds * 1000, 2)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=float(os.environ.get("SOAK_SECONDS") or 300),
                        help="how long calls are placed and faults injected (default SOAK_SECONDS or 300)")
    parser.add_argument("--rate", type=float, default=8.0, help="new calls per wall second")
    parser.add_argument("--outbound-share", type=float, default=0.2, help="share of calls agents place")
    parser.add_argument("--clients", type=int, default=300, help="distinct client numbers")
    parser.add_argument("--time-scale", type=float, default=0.05,
                        help="wall seconds per FreeSWITCH second (0.05: a 15 s talk lasts 0.75 s)")
    parser.add_argument("--max-wait", type=float, default=2.0,
                        help="wall seconds a caller may wait for the first bridge while fsrouter runs")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--password", default="soak-Esl-pa55word")
    parser.add_argument("--no-faults", action="store_true", help="the same run without faults (a baseline)")
    parser.add_argument("--json", metavar="FILE", help="also write the figures and checks here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    if args.seed is None:
        args.seed = random.randrange(1 << 30)
    soak = Soak(args)
    # Bounded whatever happens: the run, the drain, the checks.
    with gevent.Timeout(args.seconds + 420, False):
        try:
            return soak.run()
        finally:
            if soak.proc is not None and soak.proc.poll() is None:
                soak.proc.kill()
    print("the soak did not finish in time", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
