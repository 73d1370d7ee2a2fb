"""Event-Sequence gaps on the event socket, counted by the CallTracker, logged by the daemon.

FreeSWITCH numbers every event it fires, and drops events for a listener that reads too slowly:
the numbers the listener never saw are the gap. Events nobody subscribed to (CHANNEL_STATE,
CHANNEL_EXECUTE...) are numbered too, so a gap is a measure to watch over time, not proof of a
loss; `unknown` (events of channels whose CHANNEL_CREATE never arrived) is the sign that calls
went unrecorded. So the line is logged at info, and at warning only when there are new unknown
channel events; either way at most one per `interval` seconds, carrying the gaps seen since the
last one. docs/operations.md shows how to repair a gap from the CDR files.
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
        self.warnings = 0
        self._logged_gaps = 0
        self._logged_unknown = 0
        self._quiet_until: float | None = None

    def check(self) -> bool:
        """After each event: log a warning when there are new gaps and the last one is old enough."""
        gaps, unknown = self.stats.sequence_gaps, self.stats.unknown
        if gaps <= self._logged_gaps:
            return False
        now = self.clock()
        if self._quiet_until is not None and now < self._quiet_until:
            return False
        # Gaps alone are what every healthy switch shows (unsubscribed events are numbered too):
        # info. Events of channels whose creation never arrived are a loss: warning.
        emit = log.warning if unknown > self._logged_unknown else log.info
        emit("events.sequence_gap", new_gaps=gaps - self._logged_gaps, total_gaps=gaps,
             late=self.stats.sequence_late, new_unknown_channel_events=unknown - self._logged_unknown,
             total_unknown_channel_events=unknown, every_at_most_seconds=self.interval)
        self.warnings += 1
        self._logged_gaps, self._logged_unknown = gaps, unknown
        self._quiet_until = now + self.interval
        return True
