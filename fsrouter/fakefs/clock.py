"""Scaled time: the fake lives in FreeSWITCH seconds and sleeps a fraction of them.

With time_scale 0.01 a 20 s leg_timeout passes in 0.2 s of wall time, while the timestamps the
fake writes into events run 100 times faster than the wall clock, so a 12 s talk shows up as
12 s (Answered-Time to Hangup-Time, billsec) however fast the test ran.
"""
from __future__ import annotations

import time

import gevent


class Clock:
    def __init__(self, time_scale: float = 0.01, epoch: float | None = None):
        if time_scale <= 0:
            raise ValueError("time_scale must be > 0")
        self.scale = time_scale
        self._mono0 = time.monotonic()
        self._epoch_us = int((time.time() if epoch is None else epoch) * 1_000_000)

    def now_us(self) -> int:
        """FreeSWITCH time in microseconds since the epoch, as event timestamps carry it."""
        return self._epoch_us + int((time.monotonic() - self._mono0) / self.scale * 1_000_000)

    def sleep(self, seconds: float) -> None:
        """Sleep `seconds` of FreeSWITCH time."""
        if seconds > 0:
            gevent.sleep(seconds * self.scale)

    def sleep_until(self, fs_us: int) -> None:
        delta = (fs_us - self.now_us()) / 1_000_000
        if delta > 0:
            gevent.sleep(delta * self.scale)

    def real(self, seconds: float) -> float:
        """Wall seconds for `seconds` of FreeSWITCH time."""
        return seconds * self.scale


def date_local(us: int) -> str:
    # FreeSWITCH writes local time; the fake's "local" zone is UTC so runs are reproducible.
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(us // 1_000_000))


def date_gmt(us: int) -> str:
    return time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(us // 1_000_000))


def date_rfc2822(us: int) -> str:
    return time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(us // 1_000_000))
