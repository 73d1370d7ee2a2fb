"""The webhook receiver of the live-events figure, in its own process.

    python bench/webhook_receiver.py --out FILE

Answers every POST 200 at once and appends one JSON line per event to FILE: the monotonic clock
at arrival (CLOCK_MONOTONIC is one clock for every process of the machine, the fake's included),
and the event's type, id, call uuid, seq and `at` (the FreeSWITCH event's time). Prints
{"port": P} once it listens on 127.0.0.1.
"""
from __future__ import annotations

import argparse
import json
import signal
import sys
import time

import gevent
import gevent.event
from gevent.pywsgi import WSGIServer


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    out = open(args.out, "a", buffering=1 << 16)  # noqa: SIM115  (closed at exit)

    def app(environ, start_response):
        arrived = time.monotonic()
        body = environ["wsgi.input"].read()
        try:
            event = json.loads(body)
            data = event.get("data", {})
            out.write(json.dumps({"mono": arrived, "type": event.get("type"), "id": event.get("id"),
                                  "at": event.get("at"), "call_uuid": data.get("call_uuid"),
                                  "seq": data.get("seq")}) + "\n")
        except ValueError:
            pass
        start_response("200 OK", [("Content-Length", "0")])
        return [b""]

    server = WSGIServer(("127.0.0.1", 0), app, log=None, error_log=None)
    server.start()
    sys.stdout.write(json.dumps({"port": server.server_port}) + "\n")
    sys.stdout.flush()
    done = gevent.event.Event()
    gevent.signal_handler(signal.SIGTERM, done.set)
    gevent.signal_handler(signal.SIGINT, done.set)
    while not done.wait(0.2):
        out.flush()
    server.stop(timeout=1)
    out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
