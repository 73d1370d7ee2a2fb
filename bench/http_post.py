"""What one webhook POST costs the sender's process: a new connection per POST (what the sender
did), connections kept open (client.KeepAlive, what it does), and geventhttpclient when it is
installed (a C parser; not a dependency: see bench/README.md, "Live call events").

    .venv/bin/python bench/http_post.py [--requests 3000] [--concurrency 16]

Posts a call event's body to webhook_receiver.py (its own process, on loopback) from 16 greenlets
and prints the client process's CPU per request (time.process_time: the kernel's loopback work
is charged to the process that sends) and requests per second, each variant twice, interleaved.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import gevent.pool

from fsrouter.http.client import KeepAlive, request

HERE = Path(__file__).resolve().parent


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args(argv)
    receiver = subprocess.Popen([sys.executable, str(HERE / "webhook_receiver.py"), "--out", "/dev/null"],
                                stdout=subprocess.PIPE)
    try:
        url = f"http://127.0.0.1:{json.loads(receiver.stdout.readline())['port']}/hook"
        body = json.dumps({"type": "call.ringing", "id": "0" * 36, "at": "2026-12-03T12:00:00.000000Z",
                           "data": {"call_uuid": "1" * 36, "seq": 1, "agent": "1001", "client": "+380501234567",
                                    "group": "sales", "route": "sticky", "notify": {"agents": ["1001"]}}}).encode()
        headers = {"Content-Type": "application/json", "X-Fsrouter-Event": "call.ringing",
                   "X-Fsrouter-Signature": "t=1764763200,v1=" + "a" * 64}
        kept = KeepAlive(max_idle=args.concurrency)
        variants = {"new connection per POST": lambda: request("POST", url, body=body, headers=headers),
                    "kept open (KeepAlive)": lambda: kept.request("POST", url, body=body, headers=headers)}
        try:
            from geventhttpclient import HTTPClient
            from geventhttpclient.url import URL
            other = HTTPClient.from_url(URL(url), concurrency=args.concurrency)

            def via_geventhttpclient():
                answer = other.post("/hook", body=body, headers=headers)
                answer.read()
                answer.release()
            variants["geventhttpclient"] = via_geventhttpclient
        except ImportError:
            pass
        for _ in range(2):
            for name, post in variants.items():
                pool = gevent.pool.Pool(args.concurrency)
                cpu, wall = time.process_time(), time.perf_counter()
                for _ in range(args.requests):
                    pool.spawn(post)
                pool.join()
                cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
                print(f"{name:26s} {1e6 * cpu / args.requests:7.1f} µs CPU/POST {args.requests / wall:7.0f} POST/s")
    finally:
        receiver.terminate()
        receiver.wait(5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
