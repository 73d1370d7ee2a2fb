"""Where a call in progress stands now, folded from its story (core.live transitions). Pure.

The agent's screen pop and the office board both ask the same questions of a call in progress:
whose phones ring, who is talking to the client, who passed the call on, since when. This is
the one place that answers them, from the transitions the hub keeps (hub.Hub.calls()).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from .live import ANSWERED, ENDED, MISSED, RINGING, TRANSFERRED, Transition

RINGING_NOW = "ringing"  # nobody answered yet: `ringing` names the phones that ring
TALKING = "talking"  # `agent` talks to the client
OVER = "over"  # missed or ended: the call is no longer in progress


@dataclass(frozen=True)
class CallNow:
    call_uuid: str
    client: str
    direction: str
    state: str  # RINGING_NOW, TALKING or OVER
    since: datetime  # when the call's story began (its first transition)
    state_since: datetime  # when it reached its state (the last ring, the answer, the hand-over)
    ringing: tuple[str, ...] = ()  # agents whose phones ring now, in the order they started
    agent: str | None = None  # TALKING: who talks to the client; OVER: who talked last
    from_agent: str | None = None  # who passed the call on to `agent` (after a transfer)
    # How fsrouter rang the leg that answered (else the first leg that rang): "sticky" |
    # "fallback" | None (the listener may learn it only at the answer: capture 12)
    route: str | None = None
    group: str | None = None
    missed: bool = False  # OVER: nobody answered

    def concerns(self, ext: str) -> bool:
        """Does the call belong on `ext`'s screen now: it rings their phone, or they talk."""
        return ext in self.ringing or (self.state == TALKING and self.agent == ext)


def call_now(story: Iterable[Transition]) -> CallNow | None:
    """The call's standing after its transitions (in their order); None for an empty story."""
    now: CallNow | None = None
    for t in story:
        if now is None:
            now = CallNow(t.call_uuid, t.client, t.direction, RINGING_NOW, t.at, t.at, group=t.group)
        group = now.group or t.group
        if t.kind == RINGING:
            if now.state != RINGING_NOW:
                # A ring after an answer is the leg of a transfer being set up: the client's call
                # stays with whoever talks until the transfer says otherwise.
                continue
            ringing = now.ringing if t.agent is None or t.agent in now.ringing else (*now.ringing, t.agent)
            now = CallNow(now.call_uuid, now.client, now.direction, RINGING_NOW, now.since, t.at, ringing,
                          route=now.route or t.route, group=group)
        elif t.kind == ANSWERED:
            if now.state == TALKING and now.agent is not None and t.agent != now.agent:
                continue  # the other end of a consultation call (att_xfer) answered: not the client's
            now = CallNow(now.call_uuid, now.client, now.direction, TALKING, now.since, t.at, (), t.agent,
                          now.from_agent, t.route or now.route, group)
        elif t.kind == TRANSFERRED:
            now = CallNow(now.call_uuid, now.client, now.direction, TALKING, now.since, t.at, (), t.agent,
                          t.from_agent, now.route, group)
        elif t.kind in (MISSED, ENDED):
            agent = t.agent if t.kind == ENDED else None
            now = CallNow(now.call_uuid, now.client, now.direction, OVER, now.since, t.at, (),
                          agent or now.agent, now.from_agent, now.route, group, missed=t.kind == MISSED)
    return now
