"""The CDR catch-up: the calls the listener lost, read back from what mod_cdr_csv wrote.

FreeSWITCH writes every call to fsrouter_in.csv / fsrouter_out.csv (conf/cdr_csv.conf.xml)
whether fsrouter is there or not, so the files hold every call of every loss window. This follows
them like `tail -f`: each pass reads the complete lines added since the last one, and a call that
touched a loss window (core/loss.py) and that the store has no record of goes through
Service.record_call, the path of live calls: the same record, the same learning (the call that
ended later wins, whatever order they come in), the same webhooks. How far each file was read is
saved in the transaction that records its calls, so a restarted daemon goes on exactly there.

Why files and not mod_json_cdr's POSTs (../shared/cdr-captures, README "mod_json_cdr"): with
fsrouter down, mod_json_cdr tries three times 1 s apart, then leaves the CDR in its err-log-dir,
which nothing ever sends again; and without queue-capacity, a slow or absent receiver delayed
each channel's CHANNEL_HANGUP_COMPLETE by 2 s. A file is written whatever fsrouter does. With
FreeSWITCH on another host, its cdr-csv folder must be readable here (a read-only NFS or sshfs
mount; docs/operations.md).

A line is looked at only once the call ended SETTLE ago: by then the listener has finished and
written its own record of any call it saw (it waits at most events.LINGER for a lost leg), so the
uuid check cannot race it. Lines are appended in the order the calls ended, so the first line
not old enough ends the pass for that file.
"""
from __future__ import annotations

import contextlib
import csv
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import gevent
import structlog

from ..core.cdr import BadCdr, call_from_cdr
from ..core.loss import window_of
from ..core.model import Call

log = structlog.get_logger("fsrouter.catchup")

# fsrouter_in.csv, fsrouter_out.csv, and what rotate-on-hup renames them to (.YYYY-MM-DD-HH-MM-SS).
FILE_RE = re.compile(r"\Afsrouter_(?:in|out)\.csv(?:\.[0-9-]{1,32})?\Z")
SETTLE = timedelta(seconds=60)
# Calls per transaction, and a yield between two: short enough that the loop (routing calls) and
# the listener's writer (SQLite has one writer at a time) never wait long. Yielding inside a
# transaction would hold the write lock meanwhile: a 300 s soak saw the writer starve that way.
BATCH = 8
MAX_LINE = 64 * 1024  # a "line" longer than this is garbage, not a CDR


@dataclass
class CatchupStats:
    passes: int = 0
    lines: int = 0  # complete lines read
    recovered: int = 0  # calls recorded from the CDRs
    learned: int = 0  # ... that changed a learned binding
    known: int = 0  # calls of a window that the listener had recorded
    bad: int = 0  # lines that are not lines of fsrouter's templates
    errors: int = 0  # passes that failed (database or file trouble); retried on the next


class CdrCatchup:
    def __init__(self, directory: str | os.PathLike, service, node: str, lock=None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC), settle: timedelta = SETTLE,
                 pending: Callable[[], Iterable[Call]] = tuple,
                 on_recovered: Callable[[Call], None] = lambda _call: None):
        self.directory = Path(directory)
        self.service = service
        self.node = node
        self.lock = lock if lock is not None else contextlib.nullcontext()
        self.clock = clock
        self.settle = settle
        self.pending = pending  # calls the listener finished that its writer has not committed yet
        self.on_recovered = on_recovered  # each call recorded, once committed (the daemon tells its end)
        self.stats = CatchupStats()

    @property
    def store(self):
        return self.service.store

    # -- one pass ------------------------------------------------------------------------------
    def poll(self) -> int:
        """Read what was added to the CDR files; the number of calls recovered."""
        self.stats.passes += 1
        before = self.stats.recovered
        now = self.clock()
        with self.lock:
            windows = self.store.loss_windows(self.node)
            cursors = self.store.cdr_cursors(self.node)
            agents = frozenset(self.service.agents())
            region = self.service.settings().default_region
        files = self._files()
        for key, path, size in files:
            offset = cursors.get(key, ("", 0))[1]
            if size < offset:
                offset = 0  # the file was cut short or replaced: read it again (known calls are skipped)
            if size > offset:
                self._read(key, path, offset, windows, agents, region, now)
        gone = set(cursors) - {key for key, _, _ in files}
        if gone:
            with self.lock:
                self.store.forget_cdr_cursors(self.node, gone)
        return self.stats.recovered - before

    def run(self, every: float = 5.0) -> None:
        """poll() every `every` seconds, for ever (a greenlet of the daemon). A failure is logged
        when it starts or changes, not every pass, and its end once."""
        failing = ""
        while True:
            try:
                self.poll()
            except Exception as exc:  # noqa: BLE001  (the database or the folder is away: try again next time)
                self.stats.errors += 1
                error = str(exc)[:200]
                if error != failing:
                    log.warning("cdr.catchup_failed", directory=str(self.directory), error=error,
                                retry_every_seconds=every)
                failing = error
            else:
                if failing:
                    log.info("cdr.catchup_resumed", directory=str(self.directory))
                failing = ""
            gevent.sleep(every)

    def _files(self) -> list[tuple[str, Path, int]]:
        found = []
        try:
            entries = list(os.scandir(self.directory))
        except OSError as exc:
            raise OSError(f"cannot read the CDR folder {self.directory}: {exc.strerror}") from None
        for entry in entries:
            if not FILE_RE.fullmatch(entry.name):
                continue
            try:
                st = entry.stat()
            except OSError:
                continue  # rotated away meanwhile
            found.append((f"{st.st_dev}:{st.st_ino}", Path(entry.path), st.st_size))
        # Rotated files first (their calls ended earlier), oldest name first.
        return sorted(found, key=lambda item: (item[1].name.endswith(".csv"), item[1].name))

    def _read(self, key: str, path: Path, offset: int, windows, agents, region: str, now: datetime) -> None:
        settled = now - self.settle
        with open(path, "rb") as file:
            file.seek(offset)
            batch: list[Call] = []
            bad: Counter = Counter()
            first_bad = ""
            while True:
                raw = file.readline(MAX_LINE + 1)
                if not raw.endswith(b"\n"):
                    if len(raw) <= MAX_LINE:
                        break  # mod_cdr_csv is still writing it
                    bad["too long"] += 1  # skip to the end of that line
                    while raw and not raw.endswith(b"\n"):
                        raw = file.readline(MAX_LINE + 1)
                    offset = file.tell()
                    continue
                try:
                    call = call_from_cdr(next(csv.reader([raw.decode("utf-8", "replace").rstrip("\r\n")])),
                                         agents, region)
                except (BadCdr, csv.Error, StopIteration) as exc:
                    bad[type(exc).__name__] += 1
                    first_bad = first_bad or f"{path.name} at byte {offset}: {exc}"
                    call = None
                if call is not None and call.ended_at > settled:
                    break  # too recent: the listener may still be writing its own record
                self.stats.lines += 1
                offset = file.tell()
                if self.stats.lines % 500 == 0:
                    gevent.sleep(0)  # a long file read through holds up no call being routed
                if call is not None and window_of(call, windows) is not None:
                    batch.append(call)
                if len(batch) >= BATCH:
                    self._record(batch, windows, key, path, offset)
                    batch = []
                    gevent.sleep(0)
            self._record(batch, windows, key, path, offset)
        if bad:
            self.stats.bad += sum(bad.values())
            log.warning("cdr.bad_lines", file=str(path), lines=sum(bad.values()), first=first_bad[:300])

    def _record(self, calls: list[Call], windows, key: str, path: Path, offset: int) -> None:
        """Record the calls the store lacks and move the file's cursor, in one transaction."""
        store = self.store
        recovered: Counter = Counter()
        learned: Counter = Counter()
        lines = []  # logged once committed: a transaction that fails is tried again, whole
        done = []
        with self.lock, store.transaction():
            waiting = {call.uuid for call in self.pending()}
            known = store.known_call_uuids(call.uuid for call in calls) | waiting
            for call in calls:
                if call.uuid in known:
                    self.stats.known += 1
                    continue
                known.add(call.uuid)  # a call twice in the files (a file read again) counts once
                window = window_of(call, windows)
                binding = self.service.record_call(call)
                done.append(call)
                recovered[window.id] += 1
                learned[window.id] += binding is not None
                lines.append({"uuid": call.uuid, "window": window.id, "direction": call.direction,
                              "client": call.client, "agent": call.agent, "talk_seconds": call.talk_seconds,
                              "ended_at": call.ended_at.isoformat(), "binding_changed": binding is not None})
            for window_id, count in recovered.items():
                store.count_recovered(window_id, count, learned[window_id])
            store.set_cdr_cursor(self.node, key, str(path), offset)
        for line in lines:
            log.info("call.recovered", **line)
        for call in done:
            self.on_recovered(call)
        self.stats.recovered += sum(recovered.values())
        self.stats.learned += sum(learned.values())
