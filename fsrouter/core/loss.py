"""Loss windows: the stretches in which the event listener was not subscribed, and which calls they
touched. Pure: plain data, times passed in.

FreeSWITCH keeps no events for a listener that is not there, so every call one of whose events
fell in such a window is missing from the live record or was seen only in part; FreeSWITCH's own
CDR of it (cdr.py) is the only full account. Event-Sequence gaps are no such signal: FreeSWITCH
numbers every event it fires, subscribed or not, and a healthy switch showed 1,511 of them for
five calls (issue 13).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from .model import Call

# Why the listener was not subscribed.
DAEMON_START = "daemon_start"  # fsrouter was not running (stopped, restarted, killed) until it started
DISCONNECT = "disconnect"  # the connection dropped (event-socket reload, network, a slow reader
#                             dropped by FreeSWITCH), and the switch that answered again is the same
FREESWITCH_RESTART = "freeswitch_restart"  # the switch that answered again has another Core-UUID
WHYS = (DAEMON_START, DISCONNECT, FREESWITCH_RESTART)

# A window's ends are fsrouter's clock, a call's times FreeSWITCH's: widened by this much, a call
# at the edge is looked at rather than missed. Looking costs nothing: a call the listener did
# record is recognised by its uuid and skipped.
CLOCK_MARGIN = timedelta(seconds=2)


@dataclass(frozen=True)
class LossWindow:
    id: int
    node: str
    opened_at: datetime  # the last moment the listener is known to have been subscribed
    closed_at: datetime | None  # subscribed again; None while it is not
    why: str
    detail: str = ""  # what ended the subscription, as the listener saw it
    recovered: int = 0  # calls recovered from the CDRs for this window
    learned: int = 0  # ... of which changed a learned binding


def touches(window: LossWindow, call: Call) -> bool:
    """Did any of the call's events fall in the window? A call that started before the window and
    ended after it is touched too: its bridge or answer may be among the lost events, or (after a
    restart) its creation, without which the listener never records it."""
    opened = window.opened_at - CLOCK_MARGIN
    if call.ended_at < opened:
        return False
    return window.closed_at is None or call.started_at <= window.closed_at + CLOCK_MARGIN


def window_of(call: Call, windows: Iterable[LossWindow]) -> LossWindow | None:
    """The earliest window the call touches, or None: a call the listener saw whole."""
    return min((w for w in windows if touches(w, call)), key=lambda w: (w.opened_at, w.id), default=None)


def why_closed(why: str, known_core_uuid: str, core_uuid: str) -> str:
    """A window's reason once the first event after it names the switch: another Core-UUID than
    the last one seen means FreeSWITCH itself restarted meanwhile."""
    if known_core_uuid and core_uuid and core_uuid != known_core_uuid:
        return FREESWITCH_RESTART
    return why
