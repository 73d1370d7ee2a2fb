"""The event bus: one Event-Sequence for the whole fake FreeSWITCH, and delivery by subscription.

Every event gets the next sequence number whether or not anyone listens, as on a real switch, so
a listener subscribed to a few event names sees gaps; `drop(n)` loses the next n events after
numbering them, which is what a lost event looks like on the wire. A restart gives the switch a
new Core-UUID and starts the sequence again from 1.

Each event is rendered once as plain bytes (what history and listeners keep), and once more as
JSON only when a subscriber that asked for `event json` takes it.
"""
from __future__ import annotations

import uuid as uuidlib
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from .channel import Channel
from .clock import Clock, date_gmt, date_local
from .wire import event_json, event_plain, json_frame


@dataclass
class SentEvent:
    seq: int
    name: str
    uuid: str | None
    data: bytes
    subclass: str | None = None


class Subscriber(ABC):
    """Anything that takes events: an inbound connection or an outbound-socket session."""

    # "plain" or "json": the frames deliver() is given (as the subscriber's `event` command said).
    event_format: str = "plain"

    @abstractmethod
    def wants(self, name: str, uuid: str | None, subclass: str | None = None) -> bool:
        """Does this subscriber receive this event?"""

    @abstractmethod
    def deliver(self, data: bytes) -> None:
        """Send one rendered event frame."""


class EventBus:
    def __init__(self, clock: Clock, keep: int = 20000):
        self.clock = clock
        self.core_uuid = str(uuidlib.uuid4())
        self.seq = 0
        self.subscribers: list[Subscriber] = []
        self.history: deque[SentEvent] = deque(maxlen=keep)
        self.dropped: list[int] = []
        self._drop = 0
        self.listeners: list[Callable[[SentEvent], None]] = []
        self.cdr = None  # a cdr.CdrWriter: mod_cdr_csv writing each call as its channel reports

    def restart(self) -> None:
        self.core_uuid = str(uuidlib.uuid4())
        self.seq = 0

    def drop(self, count: int = 1) -> None:
        self._drop += count

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def channel_event(self, channel: Channel, shape: str, name: str, at_us: int | None = None,
                      app: tuple[str, str, str] | None = None, response: str = "_none_") -> SentEvent:
        if name == "CHANNEL_HANGUP_COMPLETE" and self.cdr is not None:
            self.cdr.channel_reported(channel)  # the reporting state comes before the event
        seq = self.next_seq()
        if not (self.history.maxlen or self.listeners) and not any(
                s.wants(name, channel.uuid) for s in self.subscribers):
            # Nobody would see it: number it (a listener's sequence shows the gap) and skip the
            # rendering, which is most of the fake's cost under load.
            return SentEvent(seq, name, channel.uuid, b"")
        now = at_us if at_us is not None else self.clock.now_us()
        block = channel.render(shape, name, seq, now, self.core_uuid, app, response)
        data = b"Content-Length: %d\nContent-Type: text/event-plain\n\n" % (len(block) + 1) + block + b"\n"
        # Rendered now if at all (the channel changes after this event), at most once.
        as_json = lambda: json_frame(channel.render(shape, name, seq, now, self.core_uuid, app, response, "json"))
        return self._publish(SentEvent(seq, name, channel.uuid, data), as_json)

    def plain_event(self, name: str, headers: list[tuple[str, str]], body: bytes = b"",
                    calling: tuple[str, str, str] = ("mod_event_socket.c", "api_exec", "1572"),
                    subclass: str | None = None) -> SentEvent:
        """An event with no channel (BACKGROUND_JOB; CUSTOM with its subclass, which FreeSWITCH
        puts before Event-Name), with the common headers FreeSWITCH puts first."""
        seq = self.next_seq()
        now = self.clock.now_us()
        common = [("Event-Subclass", subclass)] if subclass else []
        common += [("Event-Name", name), ("Core-UUID", self.core_uuid), ("FreeSWITCH-Hostname", "vm"),
                  ("FreeSWITCH-Switchname", "vm"), ("FreeSWITCH-IPv4", "192.0.2.2"),
                  ("FreeSWITCH-IPv6", "fd00::2"), ("Event-Date-Local", date_local(now)),
                  ("Event-Date-GMT", date_gmt(now)), ("Event-Date-Timestamp", str(now)),
                  ("Event-Calling-File", calling[0]), ("Event-Calling-Function", calling[1]),
                  ("Event-Calling-Line-Number", calling[2]), ("Event-Sequence", str(seq))]
        headers = common + headers
        return self._publish(SentEvent(seq, name, None, event_plain(headers, body), subclass),
                             lambda: event_json(headers, body))

    def _publish(self, event: SentEvent, as_json: Callable[[], bytes]) -> SentEvent:
        if self._drop > 0:
            self._drop -= 1
            self.dropped.append(event.seq)
            return event
        self.history.append(event)
        json_data = None
        for subscriber in list(self.subscribers):
            if subscriber.wants(event.name, event.uuid, event.subclass):
                if subscriber.event_format == "json":
                    json_data = json_data or as_json()
                    subscriber.deliver(json_data)
                else:
                    subscriber.deliver(event.data)
        for listener in self.listeners:
            listener(event)
        return event
