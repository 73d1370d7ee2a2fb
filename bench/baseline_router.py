"""The baseline: a bare greenswitch outbound-socket application, as its README shows one.

    python bench/baseline_router.py --listen-port 18084 [--esl-port 18021]

Every call is bridged at once to one fixed dial string: `myevents` (greenswitch waits for its
reply: one blocking round trip), then `bridge` with block=True (greenswitch waits for the reply,
then for the bridge's CHANNEL_EXECUTE_COMPLETE, which an application needs to know whether anybody
answered). No decision, no database, no logging. With --esl-port, the same process also runs a
bare greenswitch InboundESL subscribed to the CHANNEL events fsrouter's listener takes, with a
handler that does nothing: the event-socket library's own cost of the events a router must read.

fsrouter's module is not imported here, so greenswitch parses events with its own code.
Note greenswitch's accept loop: a non-blocking accept() that sleeps 0.1 s whenever no connection
is waiting, and a listen backlog of 100.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys

import gevent
from greenswitch.esl import InboundESL, OutboundESLServer
from subscription import EVENTS

DIAL = "user/1001@127.0.0.1"


class BridgeAtOnce:
    def __init__(self, session):
        self.session = session

    def run(self):
        self.session.myevents()
        self.session.bridge(DIAL, block=True, response_timeout=3600)


def listen_events(port: int) -> None:
    counter = {"events": 0}

    def nothing(event):
        counter["events"] += 1

    while True:
        try:
            conn = InboundESL("127.0.0.1", port, "ClueCon", timeout=5)
            with gevent.Timeout(5):
                conn.connect()
            conn.register_handle("*", nothing)
            with gevent.Timeout(5):
                conn.send(f"event plain {EVENTS}")
            while conn.connected and not conn._receive_events_greenlet.dead:
                gevent.sleep(0.2)
        except Exception:  # noqa: BLE001, S110  (reconnect, as the baseline has no logging)
            pass
        gevent.sleep(0.1)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen-port", type=int, required=True)
    parser.add_argument("--esl-port", type=int, default=0)
    args = parser.parse_args(argv)
    logging.disable(logging.CRITICAL)  # greenswitch logs every call at INFO
    server = OutboundESLServer("127.0.0.1", args.listen_port, BridgeAtOnce, max_connections=20000)
    gevent.signal_handler(signal.SIGTERM, server.stop)
    if args.esl_port:
        gevent.spawn(listen_events, args.esl_port)
    print("baseline.started", flush=True)
    server.listen()
    return 0


if __name__ == "__main__":
    sys.exit(main())
