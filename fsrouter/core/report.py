"""`fsrouter report`: rows in, figures out. Pure: no database, no clock, no formatting.

Per agent and in total, over the inbound calls of the period (of one group with `group`):
  offered          calls that rang the agent (in `rung`; an imported call: the agent who took it).
                   In total: inbound calls.
  answered         calls the agent answered. In total: calls anyone answered.
  sticky_attempts  calls whose sticky leg rang the agent (fsrouter_agent). In total: calls with
                   a sticky leg.
  sticky_answered  ... that the agent answered: hit_rate = sticky_answered / sticky_attempts.
  fallbacks        calls answered on the group's leg (route `fallback`), counted on the agent
                   who answered them. A sticky attempt that was not a sticky answer is a miss
                   of the bound agent; its count is sticky_attempts - sticky_answered.
  rebinds_in/out   changes of a client's agent (manual or learned) to / away from the agent
                   (binding_history): learned, set by hand, handed over, released when the
                   agent went, blocked, lost to missed sticky calls, merged, expired. In total:
                   rebinds_out counts them all, rebinds_in those to another agent. The `rebinds`
                   list says from whom to whom (to None: the binding went), and by what kind.
  missed           missed calls of the agent's clients (missed.MissedCall.owner: the sticky
                   leg's agent, else the bound agent); in total: every missed call.
  called_back      ... of which were closed, by a callback or an answered call of the client.
  callbacks_made   missed calls the agent closed (whoever's they were).
  callback_median_s, callback_p90_s  time from the missed call to its closing, of the closed
                   ones (seconds; None when none was closed).
Per UTC day (of the call's start): sticky attempts and hit rate; callbacks and their times.

A million call records need not each become a Call: build_counted takes each distinct shape of call
(CALL_FIELDS, and the UTC day of its start) once, with how many calls have it -- what a GROUP BY
gives (store.call_counts) -- and gives the very figures build gives for the calls themselves.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import date, datetime

from .binding_changes import LEARNED
from .missed import MissedCall
from .model import INBOUND, Call

TOTAL = "total"
# What the figures read of a call, besides its start (the period, the UTC day): calls alike in these
# and started on the same UTC day count the same, so build_counted can take them once, with a count.
CALL_FIELDS = ("direction", "group", "answered", "agent", "rung", "sticky_agent", "route")


def percentile(values: Iterable[float], q: float) -> float | None:
    """The q-th percentile (0..100), linear between closest ranks; None for no values."""
    ordered = sorted(values)
    if not ordered:
        return None
    position = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass
class Figures:
    agent: str  # an extension, or TOTAL
    offered: int = 0
    answered: int = 0
    sticky_attempts: int = 0
    sticky_answered: int = 0
    fallbacks: int = 0
    rebinds_in: int = 0
    rebinds_out: int = 0
    missed: int = 0
    called_back: int = 0
    callbacks_made: int = 0
    callback_median_s: float | None = None
    callback_p90_s: float | None = None
    _waits: list[float] = field(default_factory=list, repr=False)

    @property
    def hit_rate(self) -> float | None:
        return self.sticky_answered / self.sticky_attempts if self.sticky_attempts else None

    def as_dict(self) -> dict:
        data = {k: v for k, v in asdict(self).items() if not k.startswith("_")}
        data["hit_rate"] = self.hit_rate
        return data


@dataclass(frozen=True)
class Rebind:
    from_agent: str
    to_agent: str | None  # None: the binding went (released, blocked, expired...)
    count: int
    kind: str = LEARNED  # binding_changes.KINDS


@dataclass(frozen=True)
class Day:
    day: date
    sticky_attempts: int
    sticky_answered: int
    callbacks: int
    callback_median_s: float | None
    callback_p90_s: float | None

    @property
    def hit_rate(self) -> float | None:
        return self.sticky_answered / self.sticky_attempts if self.sticky_attempts else None

    def as_dict(self) -> dict:
        return {"day": self.day.isoformat(), "sticky_attempts": self.sticky_attempts,
                "sticky_answered": self.sticky_answered, "hit_rate": self.hit_rate, "callbacks": self.callbacks,
                "callback_median_s": self.callback_median_s, "callback_p90_s": self.callback_p90_s}


@dataclass(frozen=True)
class Report:
    since: datetime | None
    group: str | None
    agents: list[Figures]
    total: Figures
    rebinds: list[Rebind]
    days: list[Day]

    def as_dict(self) -> dict:
        return {"since": self.since.isoformat() if self.since else None, "group": self.group,
                "agents": [f.as_dict() for f in self.agents], "total": self.total.as_dict(),
                "rebinds": [{"from": r.from_agent, "to": r.to_agent, "kind": r.kind, "count": r.count}
                            for r in self.rebinds],
                "days": [d.as_dict() for d in self.days]}


def build(calls: Iterable[Call], missed: Iterable[MissedCall], changes: Iterable[dict] = (),
          since: datetime | None = None, group: str | None = None, agents: Iterable[str] = ()) -> Report:
    """The report of the period from `since` (of group `group`).

    calls: call records (store.calls); missed: missed.missed_calls rows; changes: binding_history
    rows (store.binding_changes: client, from_agent, to_agent, at, group, kind); agents: extensions to
    list even with no figures.
    """
    return build_counted(((call, 1) for call in calls), missed, changes, since=since, group=group,
                         agents=agents)


def build_counted(counted_calls: Iterable[tuple[Call, int]], missed: Iterable[MissedCall],
                  changes: Iterable[dict] = (), since: datetime | None = None, group: str | None = None,
                  agents: Iterable[str] = ()) -> Report:
    """build(), with the calls as (call, count) pairs: `count` calls like `call` in CALL_FIELDS that
    started on the UTC day of `call.started_at`, and not before `since` if `call` did not
    (store.call_counts gives them, the earliest start of each standing for all)."""
    rows: dict[str, Figures] = {ext: Figures(ext) for ext in agents}
    total = Figures(TOTAL)

    def of(ext: str) -> Figures:
        return rows.setdefault(ext, Figures(ext))

    def in_scope(at: datetime, call_group: str | None) -> bool:
        return (since is None or at >= since) and (group is None or call_group == group)

    day_sticky: Counter = Counter()
    day_hits: Counter = Counter()
    for call, n in counted_calls:
        if call.direction != INBOUND or not in_scope(call.started_at, call.group):
            continue
        answered = bool(call.answered and call.agent)
        total.offered += n
        total.answered += answered * n
        rang = set(call.rung) or ({call.agent} if call.agent else set())
        for ext in rang:
            of(ext).offered += n
        if answered:
            of(call.agent).answered += n
        if call.sticky_agent:
            hit = answered and call.agent == call.sticky_agent
            for figures in (total, of(call.sticky_agent)):
                figures.sticky_attempts += n
                figures.sticky_answered += hit * n
            day = call.started_at.date()
            day_sticky[day] += n
            day_hits[day] += hit * n
        if answered and call.route == "fallback":
            total.fallbacks += n
            of(call.agent).fallbacks += n

    pairs: Counter = Counter()
    for change in changes:
        if not in_scope(change["at"], change.get("group")):
            continue
        from_agent, to_agent = change["from_agent"], change["to_agent"]
        if from_agent is None or from_agent == to_agent:
            continue  # a first binding is no rebind
        pairs[(from_agent, to_agent, change.get("kind", LEARNED))] += 1
        of(from_agent).rebinds_out += 1
        total.rebinds_out += 1
        if to_agent is not None:
            of(to_agent).rebinds_in += 1
            total.rebinds_in += 1

    day_waits: dict[date, list[float]] = {}
    for row in missed:
        if not in_scope(row.call.started_at, row.call.group):
            continue
        owner = of(row.owner) if row.owner else None
        total.missed += 1
        if owner:
            owner.missed += 1
        if row.is_open:
            continue
        wait = row.callback_after.total_seconds()
        total.called_back += 1
        total._waits.append(wait)
        if owner:
            owner.called_back += 1
            owner._waits.append(wait)
        if row.callback_agent:
            of(row.callback_agent).callbacks_made += 1
        total.callbacks_made += 1
        day_waits.setdefault(row.call.started_at.date(), []).append(wait)

    for figures in list(rows.values()) + [total]:
        figures.callback_median_s = percentile(figures._waits, 50)
        figures.callback_p90_s = percentile(figures._waits, 90)

    days = [Day(day, day_sticky[day], day_hits[day], len(day_waits.get(day, ())),
                percentile(day_waits.get(day, ()), 50), percentile(day_waits.get(day, ()), 90))
            for day in sorted(set(day_sticky) | set(day_waits))]
    rebinds = [Rebind(a, b, n, kind) for (a, b, kind), n in
               sorted(pairs.items(), key=lambda item: (-item[1], item[0][0], item[0][1] or "", item[0][2]))]
    return Report(since=since, group=group, agents=[rows[ext] for ext in sorted(rows)], total=total,
                  rebinds=rebinds, days=days)
