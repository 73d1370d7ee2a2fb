"""The fake's end of one outbound-socket connection: FreeSWITCH's `socket` application talking to
the router. It reads the router's commands, writes replies and the channel's events in one
ordered stream, and measures what a benchmark needs.

Blocking round trips before the first bridge. After the `connect` reply is written, every
command the router sends before its first `bridge` gets one response frame from the fake (the
command/reply). A command counts as a blocking round trip when that response had already been
written before the router's next command arrived: the router may have waited for it. Commands
the router pipelines arrive before their replies are written and do not count. Timing alone
can mistake a slow router for a waiting one, so `hold` (seconds) makes it causal: before the
first bridge each response is held back until the next command arrives or `hold` passes; a
command whose next one arrived while its reply was held back was certainly not waited for.
`connect` itself is not counted: it is where the latency measurement starts.
"""
from __future__ import annotations

import time

import gevent
from gevent.event import Event
from gevent.queue import Queue

from .bus import Subscriber
from .wire import Command, CommandReader

_CLOSE = object()


class SocketSession(Subscriber):
    def __init__(self, sock, channel_uuid: str, handle, hold: float = 0.0):
        self.sock = sock
        self.uuid = channel_uuid
        self.handle = handle
        self.hold = hold
        self.myevents = False
        self.my_names: set[str] = set()  # what `myevents` subscribes (this channel's only), less nixed
        self.names: set[str] = set()
        self.all_events = False
        self.lingering = False
        self.closed = Event()
        self._queue: Queue = Queue()
        self._gate = Event()
        self._gate.set()
        self._gate_timer = None
        self._counting = False          # between the connect reply and the first bridge
        self._last_counted: Command | None = None
        self._response_at: dict[int, float] = {}
        self._writer = gevent.spawn(self._write_loop)

    # -- events from the bus -----------------------------------------------------------------------
    def wants(self, name: str, uuid: str | None, subclass: str | None = None) -> bool:
        if self.closed.is_set():
            return False
        return (self.myevents and uuid == self.uuid and name in self.my_names) or self.all_events or name in self.names

    def deliver(self, data: bytes) -> None:
        at = data.find(b"Event-Name: ")
        self.handle.events_sent.append(data[at + 12:data.find(b"\n", at)].decode() if at >= 0 else "")
        self._queue.put((data, None))

    # -- writing -----------------------------------------------------------------------------------
    def send(self, data: bytes, answering: Command | None = None, on_sent=None) -> None:
        """Queue a frame; `answering` names the command it answers (for the round-trip count)."""
        self._queue.put((data, (answering, on_sent)))

    def close_after_queue(self) -> None:
        self._queue.put((_CLOSE, None))

    def _write_loop(self) -> None:
        try:
            while True:
                data, meta = self._queue.get()
                self._gate.wait()
                if data is _CLOSE:
                    break
                self.sock.sendall(data)
                if meta:
                    answering, on_sent = meta
                    now = time.perf_counter()
                    if answering is not None:
                        self._response_at.setdefault(id(answering), now)
                    if on_sent is not None:
                        on_sent(now)
        except OSError:
            pass
        finally:
            self._close_socket()

    def _close_socket(self) -> None:
        if not self.closed.is_set():
            self.closed.set()
            try:
                self.sock.close()
            except OSError:
                pass

    def kill(self) -> None:
        self._gate.set()
        self._writer.kill(block=False)
        self._close_socket()

    # -- reading -----------------------------------------------------------------------------------
    def commands(self):
        """Yield the router's commands until it closes the socket."""
        reader = CommandReader()
        while not self.closed.is_set():
            try:
                data = self.sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            now = time.perf_counter()
            try:
                batch = reader.feed(data, now)
            except ValueError:
                return
            for command in batch:
                self._account(command)
                yield command

    # -- round trips ---------------------------------------------------------------------------------
    def start_counting(self) -> None:
        """Called when the connect reply is queued: from here on, waits before the bridge count."""
        self._counting = True

    def _account(self, command: Command) -> None:
        if not self._counting:
            return
        previous = self._last_counted
        if previous is not None:
            answered_at = self._response_at.get(id(previous))
            if answered_at is not None and answered_at < command.received_at:
                self.handle.blocking_round_trips += 1
                self.handle.blocking_commands.append(previous.line)
        is_bridge = (command.name == "sendmsg"
                     and command.headers.get("execute-app-name", "").strip() == "bridge")
        if is_bridge:
            self._counting = False
            self._open_gate()
            return
        self._last_counted = command
        if self.hold > 0:
            self._open_gate()
            self._gate.clear()
            self._gate_timer = gevent.spawn_later(self.hold, self._gate.set)

    def _open_gate(self) -> None:
        if self._gate_timer is not None:
            self._gate_timer.kill(block=False)
            self._gate_timer = None
        self._gate.set()
