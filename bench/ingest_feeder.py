"""Pre-rendered CHANNEL events from a plain socket server, faster than the fake can render them.

    python bench/ingest_feeder.py

At start it records what the fake FreeSWITCH sends two event-socket listeners subscribed like
fsrouter's, one with `event plain`, one with `event json`, for the same CALLS_IN_TEMPLATE routed
calls (a bound agent answers and talks 12 s), then serves one listener on 127.0.0.1: `auth`,
`event plain|json ...`, and then, on command, copies of the stream in the format it subscribed
with (fsrouter's listener: json; the bare greenswitch baseline: plain), in which every channel
uuid and caller number is replaced, so each copy is new calls from other clients (same lengths,
so every Content-Length still holds, in either format: the replaced digits and hex need no JSON
escape).

Commands (JSON lines on stdin, answers on stdout):
    {"cmd": "wait_subscribed", "timeout": 10}
    {"cmd": "blast", "events": 60000}                 as fast as the listener reads
    {"cmd": "pace", "rate": 10000, "seconds": 5}      events per second, in 10 ms slices
    {"cmd": "quit"}
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time

import gevent
from fake_driver import client_number
from gevent import socket
from gevent.event import Event
from gevent.fileobject import FileObject
from gevent.lock import Semaphore
from gevent.server import StreamServer
from subscription import EVENTS

from fsrouter.fakefs import FakeFreeSWITCH

CALLS_IN_TEMPLATE = 20
TEMPLATE_CALLER = "+38067999{:04d}"
_UUID = re.compile(rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _router(sock, _peer) -> None:
    """A router that bridges at once (pipelined), so the fake plays routed calls."""
    try:
        sock.sendall(b"connect\n\n")
        sock.recv(65536)
        sock.sendall(b"myevents\n\nsendmsg\ncall-command: execute\nexecute-app-name: multiset\n"
                     b"execute-app-arg: continue_on_fail=true hangup_after_bridge=true\n\n"
                     b"sendmsg\ncall-command: execute\nexecute-app-name: bridge\n"
                     b"execute-app-arg: [leg_timeout=20]user/1001@127.0.0.1\n\n")
        while sock.recv(65536):
            pass
    except OSError:
        pass
    finally:
        sock.close()


def record_streams(calls: int, caller: str) -> dict[str, bytes]:
    """Per format ("plain", "json"): the events the fake FreeSWITCH sends a listener subscribed
    like fsrouter's, for the same `calls` routed calls (callers caller.format(0...)), as bytes.
    bench/event_parse.py times their parsing."""
    fake = FakeFreeSWITCH(time_scale=0.01, keep_events=0).start()
    fake.agent("1001", answers_after=1.0, talk=12.0)
    router = StreamServer(("127.0.0.1", 0), _router)
    router.start()
    received = {"plain": bytearray(), "json": bytearray()}
    socks, readers = [], []
    try:
        for fmt, buf in received.items():
            sock = socket.create_connection(fake.esl_address)
            socks.append(sock)
            sock.recv(4096)
            sock.sendall(b"auth ClueCon\n\n")
            gevent.sleep(0.05)
            sock.recv(4096)
            sock.sendall(f"event {fmt} {EVENTS}\n\n".encode())
            gevent.sleep(0.05)
            sock.recv(4096)

            def read(sock=sock, buf=buf) -> None:
                while True:
                    chunk = sock.recv(65536)
                    if not chunk:
                        return
                    buf.extend(chunk)

            readers.append(gevent.spawn(read))
        handles = [fake.place_call(caller.format(i), router=router.address) for i in range(calls)]
        for handle in handles:
            handle.wait(30)
        gevent.sleep(0.3)
        gevent.killall(readers)
    finally:
        for sock in socks:
            sock.close()
        router.stop()
        fake.stop()
    return {fmt: bytes(buf) for fmt, buf in received.items()}


def record_template() -> dict[str, tuple[list[bytes], list[bytes], int]]:
    """Per format ("plain", "json"): the listener's byte stream for CALLS_IN_TEMPLATE calls, split
    around every uuid and caller, the tokens, and the number of events."""
    received = record_streams(CALLS_IN_TEMPLATE, TEMPLATE_CALLER)
    templates = {}
    for fmt, blob in received.items():
        events = blob.count(f"Content-Type: text/event-{fmt}".encode())
        tokens = sorted(set(_UUID.findall(blob)) | {TEMPLATE_CALLER.format(i)[1:].encode()
                                                      for i in range(CALLS_IN_TEMPLATE)})
        pattern = re.compile(b"(" + b"|".join(re.escape(t) for t in tokens) + b")")
        templates[fmt] = (pattern.split(blob), tokens, events)
    assert templates["plain"][2] == templates["json"][2], "the two listeners saw different events"
    return templates


class Feeder:
    def __init__(self):
        self.templates = record_template()
        self.parts, tokens, self.events_per_copy = self.templates["plain"]
        self.uuids = [t for t in tokens if len(t) == 36]
        self.copies = 0
        self.format = None  # the subscribed listener's: "plain" or "json"
        self.conn = None
        self.subscribed = Event()
        # Replies (the daemon asks `api sofia_contact` on this connection) and the event stream
        # share the socket: one writer at a time, whole frames only.
        self.writing = Semaphore()
        self.server = StreamServer(("127.0.0.1", 0), self._serve)
        self.server.start()

    def copy(self) -> bytes:
        """The template again, as calls nobody has seen, from other clients."""
        n = self.copies
        self.copies += 1
        mapping = {}
        for i, token in enumerate(self.uuids):
            mapping[token] = b"%08x" % (n & 0xFFFFFFFF) + token[8:]
        for i in range(CALLS_IN_TEMPLATE):
            mapping[TEMPLATE_CALLER.format(i)[1:].encode()] = client_number(
                (n * CALLS_IN_TEMPLATE + i) % 10_000_000)[1:].encode()
        parts = self.parts
        return b"".join([mapping[p] if k % 2 else p for k, p in enumerate(parts)])

    def _serve(self, sock, _peer) -> None:
        reader = sock.makefile("rb")

        def command() -> str:
            lines = []
            while True:
                line = reader.readline()
                if not line:
                    raise OSError("closed")
                if line in (b"\n", b"\r\n"):
                    if lines:
                        return b"".join(lines).decode().strip()
                    continue
                lines.append(line)

        try:
            sock.sendall(b"Content-Type: auth/request\n\n")
            command()  # auth
            sock.sendall(b"Content-Type: command/reply\nReply-Text: +OK accepted\n\n")
            words = command().split()  # event plain|json ...
            fmt = "json" if words[1:2] == ["json"] else "plain"
            self.parts, tokens, self.events_per_copy = self.templates[fmt]
            self.uuids = [t for t in tokens if len(t) == 36]
            self.format = fmt
            sock.sendall(f"Content-Type: command/reply\nReply-Text: +OK event listener enabled {fmt}\n\n".encode())
            self.conn = sock
            self.subscribed.set()
            while True:
                line = command()
                if line.startswith("api "):  # as FreeSWITCH answers sofia_contact for nobody registered
                    body = b"error/user_not_registered"
                    reply = b"Content-Type: api/response\nContent-Length: %d\n\n%s" % (len(body), body)
                else:
                    reply = b"Content-Type: command/reply\nReply-Text: -ERR command not found\n\n"
                with self.writing:
                    sock.sendall(reply)
        except OSError:
            pass

    def wait_subscribed(self, timeout: float = 10.0) -> dict:
        return {"subscribed": self.subscribed.wait(timeout), "events_per_copy": self.events_per_copy,
                "calls_per_copy": CALLS_IN_TEMPLATE, "port": self.server.address[1], "format": self.format}

    def blast(self, events: int) -> dict:
        copies = max(1, round(events / self.events_per_copy))
        data = [self.copy() for _ in range(copies)]  # rendered before the clock starts
        started = time.perf_counter()
        for chunk in data:
            with self.writing:
                self.conn.sendall(chunk)
        return {"events": copies * self.events_per_copy, "calls": copies * CALLS_IN_TEMPLATE,
                "started": started, "sent": time.perf_counter()}

    def pace(self, rate: float, seconds: float) -> dict:
        """`rate` events per second for `seconds`: one template copy whenever it is due."""
        copies = max(1, round(rate * seconds / self.events_per_copy))
        data = [self.copy() for _ in range(copies)]
        interval = self.events_per_copy / rate
        started = time.perf_counter()
        late = 0.0
        for i, chunk in enumerate(data):
            due = started + i * interval
            wait = due - time.perf_counter()
            if wait > 0:
                gevent.sleep(wait)
            else:
                late = max(late, -wait)
            with self.writing:
                self.conn.sendall(chunk)
        return {"events": copies * self.events_per_copy, "calls": copies * CALLS_IN_TEMPLATE,
                "started": started, "sent": time.perf_counter(), "interval": interval,
                "max_late": round(late, 4)}


def main(argv=None) -> int:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    feeder = Feeder()
    out = sys.stdout
    out.write(json.dumps({"ready": True, "port": feeder.server.address[1],
                          "events_per_copy": feeder.events_per_copy}) + "\n")
    out.flush()
    for line in FileObject(sys.stdin.buffer, "rb"):
        request = json.loads(line)
        cmd = request.pop("cmd")
        if cmd == "quit":
            break
        try:
            answer = getattr(feeder, cmd)(**request)
        except Exception as exc:  # noqa: BLE001  (reported to the orchestrator)
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        out.write(json.dumps(answer) + "\n")
        out.flush()
    feeder.server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
