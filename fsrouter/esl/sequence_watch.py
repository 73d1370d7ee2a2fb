"""The one live sign of lost events that means something, counted by the CallTracker and logged
by the daemon: events of channels whose CHANNEL_CREATE never arrived.

Event-Sequence gaps are not that sign. FreeSWITCH numbers every event it fires, subscribed or not,
so a listener subscribed to a few kinds always sees numbers skipped: a healthy switch showed 1,511
of them for five calls (issue 13). They are still counted (`sequence_gaps`) and logged, at debug
only. Events of unseen channels (`unknown`) are logged at warning: calls seen only in part, which
the listener does not record. Either line at most once per `interval` seconds, with the counts
since the last one. The windows in which the listener was not subscribed at all are another
matter: loss.py records them and the CDR catch-up recovers their calls (docs/operations.md).
"""
from __future__ import annotations

import time

import structlog

log = structlog.get_logger("fsrouter.daemon")


class SequenceGapWatch:
    def __init__(self, stats, interval: float = 60.0, clock=time.monotonic):
        self.stats = stats  # a TrackerStats: sequence_gaps, sequence_late, unknown
        self.interval = interval
        self.clock = clock
        self.warnings = 0  # lines logged
        self._logged_gaps = 0
        self._logged_unknown = 0
        self._quiet_until: float | None = None

    def check(self) -> bool:
        """After each event: log a line when there is something new and the last one is old enough."""
        gaps, unknown = self.stats.sequence_gaps, self.stats.unknown
        if gaps <= self._logged_gaps and unknown <= self._logged_unknown:
            return False
        now = self.clock()
        if self._quiet_until is not None and now < self._quiet_until:
            return False
        counts = {"new_gaps": gaps - self._logged_gaps, "total_gaps": gaps, "late": self.stats.sequence_late,
                      "new_unknown_channel_events": unknown - self._logged_unknown,
                      "total_unknown_channel_events": unknown, "every_at_most_seconds": self.interval}
        if unknown > self._logged_unknown:
            log.warning("events.unknown_channels", **counts)
        else:
            log.debug("events.sequence_gap", **counts)  # every healthy switch shows them
        self.warnings += 1
        self._logged_gaps, self._logged_unknown = gaps, unknown
        self._quiet_until = now + self.interval
        return True
