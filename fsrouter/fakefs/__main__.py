"""The fake FreeSWITCH as its own process, for benchmarks and by hand.

    python -m fsrouter.fakefs --esl-port 8021 --router 127.0.0.1:8084 --calls 1000 --rate 200

serves the inbound event socket on --esl-port, places --calls calls at --rate per second to the
router, waits for them, and prints one JSON object: decision latency (connect reply written ->
first bridge received, ms), blocking round trips before the first bridge, outcomes. With
--calls 0 it only serves until SIGTERM/SIGINT.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import time

import gevent
from gevent.event import Event

from .server import FakeFreeSWITCH


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(fake: FakeFreeSWITCH, wall: float) -> dict:
    calls = fake.calls
    latencies = [c.decision_latency * 1000 for c in calls if c.decision_latency is not None]
    trips = [c.blocking_round_trips for c in calls if c.first_bridge_at is not None]
    dispositions: dict[str, int] = {}
    for call in calls:
        for bridge in call.bridges:
            dispositions[bridge.disposition or "PENDING"] = dispositions.get(bridge.disposition or "PENDING", 0) + 1
    return {
        "calls": len(calls), "ended": sum(c.done.is_set() for c in calls),
        "bridged": len(latencies), "wall_seconds": round(wall, 3),
        "latency_ms": {"p50": _percentile(latencies, 0.5), "p99": _percentile(latencies, 0.99),
                       "max": max(latencies) if latencies else None},
        "blocking_round_trips": {"mean": sum(trips) / len(trips) if trips else None,
                                 "max": max(trips) if trips else None},
        "dispositions": dispositions,
        "returned_to_dialplan": sum(c.returned_to_dialplan for c in calls),
        "connect_failed": sum(c.connect_failed for c in calls),
        "events_sent": fake.bus.seq,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fsrouter.fakefs", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--esl-port", type=int, default=8021)
    parser.add_argument("--password", default="ClueCon")
    parser.add_argument("--router", default="127.0.0.1:8084", help="host:port of the outbound-socket router")
    parser.add_argument("--calls", type=int, default=0)
    parser.add_argument("--rate", type=float, default=20.0, help="new calls per wall second")
    parser.add_argument("--time-scale", type=float, default=0.01)
    parser.add_argument("--hold", type=float, default=0.0, help="see fsrouter.fakefs.session")
    parser.add_argument("--agents", default="1001,1002,1003,1004")
    parser.add_argument("--answer-after", type=float, default=1.0, help="FreeSWITCH seconds")
    parser.add_argument("--talk", type=float, default=12.0, help="FreeSWITCH seconds")
    parser.add_argument("--group", default="sales")
    parser.add_argument("--timeout", type=float, default=600.0, help="wall seconds to wait for the calls")
    args = parser.parse_args(argv)

    host, _, port = args.router.rpartition(":")
    fake = FakeFreeSWITCH(args.host, args.esl_port, args.password, args.time_scale,
                          router=(host or "127.0.0.1", int(port)), hold=args.hold, keep_events=0).start()
    for ext in filter(None, args.agents.split(",")):
        fake.agent(ext.strip(), answers_after=args.answer_after, talk=args.talk)
    stop = Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(sig, stop.set)
    print(json.dumps({"esl": list(fake.esl_address), "router": args.router}), flush=True)
    if args.calls <= 0:
        stop.wait()
        fake.stop()
        return 0
    started = time.perf_counter()
    interval = 1.0 / args.rate if args.rate > 0 else 0.0
    for i in range(args.calls):
        if stop.is_set():
            break
        # Distinct, valid Ukrainian mobile numbers, so a router's bindings spread over clients.
        fake.place_call(f"+38067{i % 10_000_000:07d}", group=args.group)
        due = started + (i + 1) * interval
        gevent.sleep(max(0.0, due - time.perf_counter()))
    fake.wait_calls(args.timeout)
    print(json.dumps(summary(fake, time.perf_counter() - started)), flush=True)
    fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
