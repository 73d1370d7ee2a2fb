"""The fake FreeSWITCH as a separate process that the benchmark steers over stdin/stdout.

    python bench/fake_driver.py --router 127.0.0.1:PORT

It is `python -m fsrouter.fakefs` (same FakeFreeSWITCH, same per-call measurements, same
summary) with what a benchmark run needs on top: several measured phases against one running
router, a wait until the router's event listener has subscribed (so no call's events are missed),
calls held open for the memory figure, and the fake's own CPU time per phase (to show when the
fake, not the router, is what limits a rate).

Commands, one JSON object per line on stdin; one JSON answer per line on stdout:
    {"cmd": "wait_listener", "timeout": 10}
    {"cmd": "run", "calls": 1000, "rate": 100, "hold": 0, "first": 0}
    {"cmd": "hold", "calls": 5000, "rate": 250, "timeout": 120}     calls stay up, talking
    {"cmd": "release", "timeout": 60}                                callers hang up
    {"cmd": "quit"}
Every wait is bounded; everything listens and connects on 127.0.0.1 only.
"""
from __future__ import annotations

import argparse
import json
import resource
import socket
import struct
import sys
import time

import gevent
from gevent.fileobject import FileObject

from fsrouter.fakefs import FakeFreeSWITCH
from fsrouter.fakefs import session as fake_session
from fsrouter.fakefs.__main__ import summary
from fsrouter.fakefs.wire import CommandReader

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux

AGENTS = ("1001", "1002", "1003", "1004")
CODES = ("67", "50", "63", "66", "68", "73", "93", "95", "96", "97", "98", "99")
SPREAD = 7919  # a prime: consecutive calls come from clients far apart in the table


def client_number(i: int) -> str:
    """The i-th client of the benchmark's numbering (bench/dbs.py binds 9 in 10 of them)."""
    return f"+380{CODES[i // 10_000_000]}{i % 10_000_000:07d}"


def caller_index(k: int, span: int) -> int:
    return (k * SPREAD + 13) % span


def kernel_receive_stamps() -> None:
    """The fake stamps a command when its reader greenlet gets to recv() it, so a busy fake adds
    its own delay to the latency it measures. With this, each command is also stamped with the
    time the kernel received its bytes (SO_TIMESTAMPNS); the first bridge's is kept on the call's
    handle as `first_bridge_kernel_at`: the router's own latency, whatever the fake was doing."""
    def commands(self):
        reader = CommandReader()
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        except OSError:
            pass
        while not self.closed.is_set():
            try:
                data, ancillary, _flags, _addr = self.sock.recvmsg(65536, 64)
            except OSError:
                return
            if not data:
                return
            now = time.perf_counter()
            kernel = None
            for level, kind, raw in ancillary:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(raw) >= 16:
                    sec, nsec = struct.unpack("qq", raw[:16])
                    kernel = now - (time.time() - (sec + nsec / 1e9))
            try:
                batch = reader.feed(data, now)
            except ValueError:
                return
            for command in batch:
                if (getattr(self.handle, "first_bridge_kernel_at", None) is None and command.name == "sendmsg"
                        and command.headers.get("execute-app-name", "").strip() == "bridge"):
                    self.handle.first_bridge_kernel_at = min(kernel, now) if kernel is not None else now
                self._account(command)
                yield command

    fake_session.SocketSession.commands = commands


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Driver:
    def __init__(self, args):
        host, _, port = args.router.rpartition(":")
        self.fake = FakeFreeSWITCH("127.0.0.1", args.esl_port, time_scale=args.time_scale,
                                   router=(host or "127.0.0.1", int(port)), keep_events=0).start()
        self.span = args.span
        self.script(answers_after=args.answer_after, talk=args.talk)
        self.lags: list[float] = []
        gevent.spawn(self._watch_loop)

    def _watch_loop(self) -> None:
        """How late the fake's own loop wakes a 1 ms sleep: its scheduling delay, in ms."""
        while True:
            t = time.perf_counter()
            gevent.sleep(0.001)
            self.lags.append(1000 * (time.perf_counter() - t - 0.001))
            if len(self.lags) > 200_000:
                del self.lags[:100_000]

    def script(self, answers_after: float, talk: float) -> None:
        for ext in AGENTS:
            self.fake.agent(ext, answers_after=answers_after, talk=talk)

    def listener_subscribed(self) -> bool:
        return any(c.authed and c.names for c in self.fake.inbound.connections)

    def wait_listener(self, timeout: float = 10.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.listener_subscribed():
            gevent.sleep(0.02)
        return {"subscribed": self.listener_subscribed()}

    def place(self, calls: int, rate: float, first: int, hold: float) -> float:
        """Places `calls` calls at `rate` per second; returns the wall seconds it took."""
        started = time.perf_counter()
        interval = 1.0 / rate if rate > 0 else 0.0
        for n in range(calls):
            i = caller_index(first + n, self.span)
            self.fake.place_call(client_number(i), group="sales", hold=hold)
            due = started + (n + 1) * interval
            gevent.sleep(max(0.0, due - time.perf_counter()))
        return time.perf_counter() - started

    def clock(self) -> dict:
        """The fake's clock: an event time `us` happened at monotonic mono0 + (us - epoch_us) / 1e6 * scale
        (CLOCK_MONOTONIC is one clock for every process of the machine)."""
        clock = self.fake.clock
        return {"epoch_us": clock._epoch_us, "mono0": clock._mono0, "scale": clock.scale}

    def run(self, calls: int, rate: float, first: int = 0, hold: float = 0.0, timeout: float = 120.0,
            answers_after: float | None = None, talk: float | None = None) -> dict:
        if answers_after is not None or talk is not None:
            self.script(answers_after if answers_after is not None else 1.0, talk if talk is not None else 12.0)
        self.fake.calls = []
        cpu0, t0 = cpu_seconds(), time.perf_counter()
        placing = self.place(calls, rate, first, hold)
        ended = self.fake.wait_calls(timeout)
        result = summary(self.fake, time.perf_counter() - t0)
        result.update(placing_seconds=round(placing, 3), all_ended=ended,
                      fake_cpu_seconds=round(cpu_seconds() - cpu0, 3),
                      latencies_ms=sorted(round(c.decision_latency * 1000, 4) for c in self.fake.calls
                                          if c.decision_latency is not None))
        wire = sorted(1000 * (_first_bridge_kernel_time(c) - c.connect_reply_at) for c in self.fake.calls
                      if c.connect_reply_at is not None and _first_bridge_kernel_time(c) is not None)
        result["wire_latency_ms"] = {"p50": _pct(wire, 0.5), "p99": _pct(wire, 0.99),
                                     "max": wire[-1] if wire else None}
        lags = sorted(self.lags)
        self.lags = []
        result["fake_loop_lag_ms"] = {"p50": _pct(lags, 0.5), "p99": _pct(lags, 0.99),
                                      "max": lags[-1] if lags else None}
        return result

    def hold(self, calls: int, rate: float, first: int = 0, timeout: float = 120.0) -> dict:
        """Calls that are answered and then talk for ever (until release)."""
        self.script(answers_after=0.5, talk=10_000_000.0)
        self.fake.calls = []
        t0 = time.perf_counter()
        self.place(calls, rate, first, 0.0)
        deadline = time.monotonic() + timeout

        def talking(handle) -> bool:
            return bool(handle.bridges) and handle.bridges[0].disposition == "SUCCESS"

        while time.monotonic() < deadline:
            up = sum(talking(h) and not h.done.is_set() for h in self.fake.calls)
            if up >= calls:
                break
            gevent.sleep(0.1)
        up = sum(talking(h) and not h.done.is_set() for h in self.fake.calls)
        return {"held": up, "placed": len(self.fake.calls), "seconds": round(time.perf_counter() - t0, 2),
                "ended_early": sum(h.done.is_set() for h in self.fake.calls)}

    def release(self, timeout: float = 60.0) -> dict:
        for handle in self.fake.calls:
            if not handle.done.is_set():
                handle.hangup("NORMAL_CLEARING")
                gevent.sleep(0)
        ended = self.fake.wait_calls(timeout)
        self.script(answers_after=1.0, talk=12.0)
        return {"all_ended": ended}


def _first_bridge_kernel_time(handle) -> float | None:
    return getattr(handle, "first_bridge_kernel_at", None)


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return round(values[min(len(values) - 1, round(q * (len(values) - 1)))], 4)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--router", required=True, help="host:port of the outbound-socket router")
    parser.add_argument("--esl-port", type=int, default=0)
    parser.add_argument("--time-scale", type=float, default=0.01)
    parser.add_argument("--answer-after", type=float, default=1.0, help="FreeSWITCH seconds")
    parser.add_argument("--talk", type=float, default=12.0, help="FreeSWITCH seconds")
    parser.add_argument("--span", type=int, default=1_000_000, help="callers are drawn from this many clients")
    args = parser.parse_args(argv)
    kernel_receive_stamps()
    driver = Driver(args)
    out = sys.stdout
    out.write(json.dumps({"ready": True, "esl_port": driver.fake.esl_address[1]}) + "\n")
    out.flush()
    commands = FileObject(sys.stdin.buffer, "rb")
    for line in commands:
        request = json.loads(line)
        cmd = request.pop("cmd")
        if cmd == "quit":
            break
        try:
            answer = getattr(driver, cmd)(**request)
        except Exception as exc:  # noqa: BLE001  (reported; the orchestrator decides)
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        out.write(json.dumps(answer) + "\n")
        out.flush()
    driver.fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
