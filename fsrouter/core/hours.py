"""Sticky hours: when a group's sticky leg may ring. Pure: the time is always passed in.

A spec is one or more comma- or semicolon-separated parts, each `[DAYS] HH:MM-HH:MM`:

    mon-fri 09:00-18:00
    mon-fri 09:00-13:00, mon-fri 14:00-18:00; sat 10:00-14:00
    09:00-18:00            (every day)
    fri-mon 08:00-20:00    (a day range may wrap over the week's end)
    mon,wed,fri 22:00-06:00  (a range past midnight belongs to the day it starts on)

Days are mon tue wed thu fri sat sun (or their full English names). Start is inclusive, end
exclusive; `24:00` is the end of the day. The wall clock is read in the group's time zone
(IANA name, e.g. Europe/Kyiv; UTC when none is set), so summer time moves with the office.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_FULL = {"monday": "mon", "tuesday": "tue", "wednesday": "wed", "thursday": "thu", "friday": "fri",
         "saturday": "sat", "sunday": "sun"}
_TIME = r"(\d{1,2}):(\d{2})"
_PART = re.compile(rf"\A(?:(?P<days>[a-z,\-\s]+?)\s+)?{_TIME}\s*-\s*{_TIME}\Z")


class HoursError(ValueError):
    """A sticky-hours spec or time zone that cannot be read; the message is one line."""


@dataclass(frozen=True)
class Window:
    days: frozenset[int]  # 0 = Monday: the days the window starts on
    start: int  # minutes after midnight
    end: int  # minutes after midnight, up to 1440; below start: ends the next day


@dataclass(frozen=True)
class Hours:
    windows: tuple[Window, ...]
    zone: ZoneInfo

    def contains(self, moment: datetime) -> bool:
        """Is the aware datetime `moment` inside one of the windows (in the zone's wall time)?"""
        if moment.tzinfo is None:
            raise HoursError("the time must carry a time zone")
        local = moment.astimezone(self.zone)
        day = local.weekday()
        minute = local.hour * 60 + local.minute + (local.second + local.microsecond / 1e6) / 60
        for w in self.windows:
            if w.end > w.start:
                if day in w.days and w.start <= minute < w.end:
                    return True
            else:  # past midnight: the evening of a start day, or the morning after one
                if day in w.days and minute >= w.start:
                    return True
                if (day - 1) % 7 in w.days and minute < w.end:
                    return True
        return False


def _day(text: str) -> int:
    name = _FULL.get(text, text)
    if name not in DAYS:
        raise HoursError(f"bad day {text!r}: use {', '.join(DAYS)}")
    return DAYS.index(name)


def _days(text: str | None) -> frozenset[int]:
    if not text:
        return frozenset(range(7))
    days: set[int] = set()
    for item in (piece.strip() for piece in text.split(",")):
        if not item:
            raise HoursError(f"bad days {text!r}")
        first, dash, last = (s.strip() for s in item.partition("-"))
        if not dash:
            days.add(_day(first))
            continue
        a, b = _day(first), _day(last)
        days.update((a + i) % 7 for i in range((b - a) % 7 + 1))
    return frozenset(days)


def _minutes(hour: str, minute: str, spec: str) -> int:
    h, m = int(hour), int(minute)
    if m > 59 or h > 24 or (h == 24 and m):
        raise HoursError(f"bad time {hour}:{minute} in {spec!r}")
    return h * 60 + m


def parse_windows(spec: str) -> tuple[Window, ...]:
    """The windows of a spec; HoursError naming the bad part."""
    if not isinstance(spec, str) or not spec.strip():
        raise HoursError("empty sticky hours: e.g. 'mon-fri 09:00-18:00'")
    windows = []
    # Parts end at ';' or at a ',' right after a time ('mon,wed 9:00-12:00' lists days).
    for part in re.split(r";|(?<=\d)\s*,", spec.lower()):
        part = " ".join(part.split())
        match = _PART.fullmatch(part)
        if not match:
            raise HoursError(f"bad sticky hours {part!r}: use e.g. 'mon-fri 09:00-18:00'")
        start = _minutes(match.group(2), match.group(3), part)
        end = _minutes(match.group(4), match.group(5), part)
        if start == end or start == 24 * 60:
            raise HoursError(f"bad sticky hours {part!r}: the window is empty")
        windows.append(Window(_days(match.group("days")), start, end))
    return tuple(windows)


def zone(name: str | None) -> ZoneInfo:
    """The IANA time zone `name` (UTC when empty); HoursError when unknown."""
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise HoursError(f"unknown time zone {name!r}: use an IANA name such as Europe/Kyiv") from None


@lru_cache(maxsize=1024)
def parse(spec: str, timezone: str | None = None) -> Hours:
    """Spec and zone read once (cached: the routing decision evaluates them on every call)."""
    return Hours(parse_windows(spec), zone(timezone))


def within(spec: str | None, timezone: str | None, moment: datetime) -> bool:
    """Is `moment` inside the sticky hours? No spec means always."""
    if not spec:
        return True
    return parse(spec, timezone or None).contains(moment)


def describe(spec: str | None, timezone: str | None) -> str:
    if not spec:
        return "always"
    return f"{spec} ({timezone or 'UTC'})"

