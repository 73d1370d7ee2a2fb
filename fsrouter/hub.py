"""The live stream inside the daemon: the listener publishes call transitions, pages read them.

One publisher (the event listener's greenlet), any number of readers (each open screen pop or
board holds one subscription). publish() never blocks: a reader that falls `capacity`
transitions behind loses its oldest ones and is told so (`Subscription.dropped`), so a stalled
browser can never slow the events of the switch. The hub also keeps the calls in progress,
folded from the same transitions, for a page that opens in the middle of a call.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Self

import gevent.event

from .core.live import ANSWERED, ENDED, MISSED, RINGING, TRANSFERRED, Transition


class Subscription:
    def __init__(self, hub: Hub, accept: Callable[[Transition], bool], capacity: int):
        self._hub = hub
        self._accept = accept
        self._queue: deque[Transition] = deque(maxlen=capacity)
        self._ready = gevent.event.Event()
        self.dropped = 0

    def _offer(self, transition: Transition) -> None:
        if not self._accept(transition):
            return
        if len(self._queue) == self._queue.maxlen:
            self.dropped += 1
        self._queue.append(transition)
        self._ready.set()

    def get(self, timeout: float | None = None) -> list[Transition]:
        """What arrived since the last call, waiting up to `timeout` for something ([] then)."""
        if not self._queue:
            self._ready.clear()
            self._ready.wait(timeout)
        out = list(self._queue)
        self._queue.clear()
        return out

    def close(self) -> None:
        self._hub._subscriptions.discard(self)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# A call whose story has said nothing for this long (FreeSWITCH time, as the transitions carry
# it) is taken as over: its end was never told (its hang-up lost, or the tracker dropped it at
# max_open), and the board would show it in progress for ever. The router gives up on a bridge
# after as long (esl/outbound.py MAX_CALL_SECONDS).
STALE_AFTER = timedelta(hours=12)


class Hub:
    def __init__(self, capacity: int = 1000, stale_after: timedelta = STALE_AFTER):
        self.capacity = capacity
        self.stale_after = stale_after
        self._subscriptions: set[Subscription] = set()
        self.in_progress: dict[str, list[Transition]] = {}  # call uuid -> its story so far
        self.published = 0
        self.forgotten = 0  # calls in progress dropped as stale

    def publish(self, transition: Transition) -> None:
        self.published += 1
        if transition.kind in (MISSED, ENDED):
            self.in_progress.pop(transition.call_uuid, None)
        elif transition.kind in (RINGING, ANSWERED, TRANSFERRED):
            # Moved to the end: the calls are kept in the order they last said something.
            story = self.in_progress.pop(transition.call_uuid, [])
            story.append(transition)
            self.in_progress[transition.call_uuid] = story
        self._forget_stale(transition.at)
        for subscription in list(self._subscriptions):
            subscription._offer(transition)

    def _forget_stale(self, now) -> None:
        while self.in_progress:
            uuid, story = next(iter(self.in_progress.items()))
            if story[-1].at + self.stale_after > now:
                return
            del self.in_progress[uuid]
            self.forgotten += 1

    def forget_in_progress(self) -> None:
        """The listener stopped following the calls in progress (a new connection after a loss
        window: the CDR catch-up records them): their stories end here, untold."""
        self.in_progress.clear()

    def subscribe(self, accept: Callable[[Transition], bool] = lambda _t: True,
                  capacity: int | None = None) -> Subscription:
        subscription = Subscription(self, accept, capacity or self.capacity)
        self._subscriptions.add(subscription)
        return subscription

    def calls(self) -> Iterator[list[Transition]]:
        """The story so far of each call in progress, oldest call first."""
        return iter(sorted(self.in_progress.values(), key=lambda story: story[0].at))
