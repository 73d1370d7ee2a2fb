"""One event-socket consumer for the ingestion figure, in its own process.

    python bench/ingest_worker.py fsrouter --port P --database URL --stats FILE [--webhook URL]
    python bench/ingest_worker.py baseline --port P --stats FILE

fsrouter: the daemon's own listener half, exactly as `fsrouter run` wires it (Daemon: EventListener
+ CallTracker + CallWriter writing call records and bindings to the database); its outbound server
listens on a free port and gets no calls. baseline: a bare greenswitch InboundESL, subscribed to
the same events, whose handler does nothing (greenswitch still reads and parses every event).
With --webhook, fsrouter's live stream is on as in a daemon with webhooks and an open page: every
call transition is published to the hub (one subscriber reads them all) and written into the
outbox (LiveEvents), whose sender posts them to URL.
Every 50 ms one JSON line of counters is appended to FILE.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time

import gevent
from gevent.event import Event
from subscription import EVENTS


def fsrouter_worker(port: int, database: str, log_path: str, webhook: str | None = None):
    from fsrouter.config import Config
    from fsrouter.logs import configure_logging
    from fsrouter.wiring import build_daemon
    configure_logging("json", os.environ.get("BENCH_LOG_LEVEL", "info"), stream=open(log_path, "w"))  # noqa: SIM115
    hooks = {"webhook_urls": (webhook,), "webhook_secret": "bench"} if webhook else {}
    daemon = build_daemon(Config(database=database, esl_port=port, listen_port=0, drain_timeout=1.0, **hooks))
    daemon.start()
    seen = {"transitions": 0}
    if webhook:
        page = daemon.hub.subscribe()

        def read() -> None:
            while True:
                seen["transitions"] += len(page.get(1.0))

        gevent.spawn(read)
    live = daemon.live_events

    def counters() -> dict:
        conn = daemon.listener._conn
        return {"events": daemon.listener.stats.events, "calls": daemon.tracker.stats.calls,
                "written": daemon.writer.written,
                "pending": len(daemon.writer.pending) + (len(live.pending) if live else 0),
                "transitions": seen["transitions"], "webhooks_written": live.written if live else 0,
                "webhooks_sent": daemon.sender.sent if daemon.sender else 0,
                "sender_yielded": daemon.sender.yielded if daemon.sender else 0,
                "unread_bytes": daemon.listener.connection.unread_bytes(),
                "commits": daemon.writer.commits if hasattr(daemon.writer, "commits") else None,
                "bindings": daemon.writer.bindings_changed, "open": daemon.tracker.stats.open,
                "queue": conn._esl_event_queue.qsize() if conn is not None else 0,
                "unknown": daemon.tracker.stats.unknown, "late": daemon.tracker.stats.late}

    return counters, daemon.stop


def baseline_worker(port: int):
    import logging

    from greenswitch.esl import InboundESL
    logging.disable(logging.CRITICAL)
    seen = {"events": 0}

    def nothing(event):
        seen["events"] += 1

    conn = InboundESL("127.0.0.1", port, "ClueCon", timeout=5)
    with gevent.Timeout(10):
        conn.connect()
    conn.register_handle("*", nothing)
    with gevent.Timeout(10):
        conn.send(f"event plain {EVENTS}")

    def counters() -> dict:
        return {"events": seen["events"], "queue": conn._esl_event_queue.qsize(), "pending": 0}

    return counters, lambda: None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=("fsrouter", "baseline"))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--database")
    parser.add_argument("--stats", required=True)
    parser.add_argument("--log", default=os.devnull)
    parser.add_argument("--max-seconds", type=float, default=300.0)
    parser.add_argument("--webhook", help="fsrouter: the live stream on, its webhooks posted to this URL")
    args = parser.parse_args(argv)
    if args.kind == "fsrouter":
        counters, stop = fsrouter_worker(args.port, args.database, args.log, args.webhook)
    else:
        counters, stop = baseline_worker(args.port)
    done = Event()
    gevent.signal_handler(signal.SIGTERM, done.set)
    deadline = time.monotonic() + args.max_seconds
    with open(args.stats, "a", buffering=1) as out:
        while not done.wait(0.05) and time.monotonic() < deadline:
            out.write(json.dumps({"t": time.perf_counter(), **counters()}) + "\n")
        stop()
        out.write(json.dumps({"t": time.perf_counter(), "stopped": True, **counters()}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
