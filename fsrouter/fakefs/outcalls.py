"""An agent's own phone calling a client (capture 09): the channel sofia/internal/<ext>@...,
inbound to FreeSWITCH, with the agent as caller and the client as destination. The outside
party's leg is not played out: in an office it is the carrier's, and a listener learns the call
from the agent's channel (its CHANNEL_BRIDGE names the other leg)."""
from __future__ import annotations

from dataclasses import dataclass, field

from gevent.event import Event

from .channel import Channel


@dataclass
class OutCallHandle:
    uuid: str
    ext: str
    client: str
    answered: bool
    talk: float
    ring: float
    done: Event = field(default_factory=Event)

    def wait(self, timeout: float | None = 10.0) -> bool:
        return self.done.wait(timeout)


class OutCall:
    def __init__(self, fake, handle: OutCallHandle):
        self.fake, self.handle = fake, handle

    def run(self) -> None:
        h, clock, bus = self.handle, self.fake.clock, self.fake.bus
        t0 = clock.now_us()
        us = lambda seconds: t0 + int(seconds * 1_000_000)
        role = "out_answer" if h.answered else "out_cancel"
        ch = Channel("out", f"sofia/internal/{h.ext}@127.0.0.1", h.ext, h.client, ext=h.ext, created_us=t0,
                     uuid=h.uuid)
        ch.role_shape = role
        peer = Channel("pstn", f"sofia/carrier/{h.client}@127.0.0.1:5080", h.ext, h.client, ext=h.ext,
                       created_us=t0)
        ch.peer_uuid = peer.uuid
        ch.other_name = peer.name
        self.fake.channels[ch.uuid] = ch
        try:
            bus.channel_event(ch, f"{role}/CHANNEL_CREATE", "CHANNEL_CREATE", t0)
            clock.sleep_until(us(h.ring))
            if h.answered:
                ch.times["answered"] = peer.times["answered"] = us(h.ring)
                ch.answer_state, ch.call_state = "answered", "ACTIVE"
                bus.channel_event(ch, f"{role}/CHANNEL_ANSWER", "CHANNEL_ANSWER", us(h.ring))
                ch.other = peer
                ch.times["bridged"] = us(h.ring)
                ch.dynamic.update({"originate_disposition": "SUCCESS", "DIALSTATUS": "SUCCESS",
                                   "last_bridge_to": peer.uuid, "bridge_uuid": peer.uuid,
                                   "signal_bond": peer.uuid, "bridge_channel": peer.name})
                bus.channel_event(ch, f"{role}/CHANNEL_BRIDGE", "CHANNEL_BRIDGE", us(h.ring))
                end = us(h.ring + h.talk)
                clock.sleep_until(end)
                ch.hangup_cause = "NORMAL_CLEARING"
            else:
                end = us(h.ring)
                ch.hangup_cause = "ORIGINATOR_CANCEL"
                ch.dynamic["originate_disposition"] = "ORIGINATOR_CANCEL"
            ch.answer_state, ch.alive = "hangup", False
            bus.channel_event(ch, f"{role}/CHANNEL_HANGUP", "CHANNEL_HANGUP", end)
            if h.answered:
                bus.channel_event(ch, f"{role}/CHANNEL_UNBRIDGE", "CHANNEL_UNBRIDGE", end)
            ch.call_state = "HANGUP"
            ch.times["hangup"] = end
            bus.channel_event(ch, f"{role}/CHANNEL_HANGUP_COMPLETE", "CHANNEL_HANGUP_COMPLETE", end)
        finally:
            self.fake.channels.pop(ch.uuid, None)
            h.done.set()


