"""Per-event parse cost of the listener: `event plain` against `event json`, in one process.

    python bench/event_parse.py [--calls 200] [--repeat 5]

Records what the fake FreeSWITCH sends two listeners subscribed like fsrouter's (bench/subscription.py),
one with `event plain`, one with `event json`, for the same routed calls (a bound agent answers
and talks), then times, best of --repeat runs over every event:
  body:   the event's body only: headers.parse_headers (FixedEvent's) against headers.json_headers;
  reader: whole frames through the listener's reader (esl.protocol.InboundConnection over the bytes:
          greenswitch's frame loop, the frame head, read_body, then the body parse), to the queue.
Prints one JSON line. Quiet: no sockets while timing, one core.
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import time

from ingest_feeder import record_streams

from fsrouter.esl.headers import json_headers, parse_headers
from fsrouter.esl.protocol import InboundConnection
from fsrouter.fakefs.wire import split_raw_frames


def record(calls: int) -> dict[str, bytes]:
    """The event frames each format's listener received for the same `calls` routed calls."""
    out = {}
    for fmt, stream in record_streams(calls, "+38067999{:04d}").items():
        frames = [raw for frame, raw in split_raw_frames(stream) if frame.content_type == f"text/event-{fmt}"]
        out[fmt] = b"".join(frames)
    return out


def bodies(stream: bytes) -> list[str]:
    return [frame.body.decode("utf-8") for frame, _ in split_raw_frames(stream)]


class _Socket:
    def close(self) -> None:
        pass


def read_all(stream: bytes) -> int:
    conn = InboundConnection("127.0.0.1", 0, "ClueCon")
    conn.sock, conn.sock_file, conn.connected = _Socket(), io.BufferedReader(io.BytesIO(stream), 64 * 1024), True
    conn.receive_events()
    assert conn.stream_error is None
    return conn._esl_event_queue.qsize()


def best(repeat: int, run) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    streams = record(args.calls)
    plain, as_json = bodies(streams["plain"]), bodies(streams["json"])
    assert len(plain) == len(as_json) > 0, (len(plain), len(as_json))
    events = len(plain)
    per = lambda seconds: round(seconds / events * 1e6, 1)
    result = {
        "events": events, "calls": args.calls, "repeat": args.repeat,
        "plain_bytes_per_event": round(len(streams["plain"]) / events),
        "json_bytes_per_event": round(len(streams["json"]) / events),
        "body_us": {"plain": per(best(args.repeat, lambda: [parse_headers(b) for b in plain])),
                    "json": per(best(args.repeat, lambda: [json_headers(b) for b in as_json]))},
        "reader_us": {"plain": per(best(args.repeat, lambda: read_all(streams["plain"]))),
                      "json": per(best(args.repeat, lambda: read_all(streams["json"])))},
    }
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
