"""The one place that wires the pure core (numbers, rules, routing) to the store.

The daemon and the CLI both come through here, so a live call and a CSV import are decided and
learned from by the very same code.
"""
from __future__ import annotations

import csv
import functools
import math
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import structlog

from .binding_path import BindingPath
from .core import binding_changes, missed, overrides, ownership, routing
from .core.missed import MissedCall
from .core.model import CALL_UUID_RE, CRM, DIRECTIONS, Agent, Binding, Call, Group, RoutePlan
from .core.numbers import NotAClient, client_or_none, normalize
from .core.settings import Settings
from .store import Store

log = structlog.get_logger("fsrouter.service")

CALL_COLUMNS = ("started_at", "direction", "client", "agent", "talk_seconds")
# Optional: FreeSWITCH's uuid of the call (CDR `${uuid}`): a call the daemon already recorded is
# then skipped, not imported a second time.
CALL_UUID_COLUMN = "uuid"
BINDING_COLUMNS = ("client", "agent")
# A spreadsheet runs a cell starting with one of these as a formula; exported cells get a "'".
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
# Longer than any call: a typo'd talk time (1e18) must be refused, not overflow a datetime.
MAX_TALK_SECONDS = 7 * 86400


class ServiceError(ValueError):
    """Bad input at the service level (unknown group, bad CSV line, ...); the message is one line."""


@dataclass(frozen=True)
class _Snapshot:
    settings: Settings
    agents: dict[str, Agent]
    groups: dict[str, Group]
    loaded_at: float  # clock() as a timestamp

    @functools.cached_property
    def extensions(self) -> frozenset[str]:
        return frozenset(self.agents)


@dataclass(frozen=True)
class Standing:
    """What ownership.decide says of one client's bindings where a sysadmin looks (binding show
    and list, the push API): presence unknown (a stored do-not-disturb aside)."""
    anywhere: ownership.Ownership  # without a group: global settings, no sticky scope or hours
    groups: dict[str, ownership.Ownership]  # in each group, now
    stale: dict[str, str]  # source -> why it routes in no group at any hour (ownership.lasting)

    def state(self, source: str) -> str:
        """The one word shown for a binding: why it never routes, else ACTIVE or why not now."""
        verdict = self.anywhere.of(source)
        return self.stale.get(source) or (verdict.state if verdict else ownership.ACTIVE)


@dataclass(frozen=True)
class CallImport:
    calls: int  # call records written
    learned: int  # of which changed a learned binding
    known: int = 0  # lines whose FreeSWITCH uuid the store already had (the daemon saw the call)


def parse_time(text: str) -> datetime:
    """ISO 8601 -> aware UTC datetime; a time without an offset is taken as UTC."""
    try:
        value = datetime.fromisoformat(str(text).strip())
        # 9999-12-31T23:59-01:00 is past the last datetime once in UTC: OverflowError.
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except (ValueError, OverflowError):
        raise ValueError(f"bad time {text!r}: use ISO 8601, e.g. 2024-05-01T12:00:00Z") from None


def spreadsheet_safe(cell: str) -> str:
    return "'" + cell if cell.startswith(_FORMULA_START) else cell


def spreadsheet_unescape(cell: str) -> str:
    return cell[1:] if cell.startswith("'") and cell[1:].startswith(_FORMULA_START) else cell


class Service:
    def __init__(self, store: Store, clock=lambda: datetime.now(UTC), cache_ttl: float = 5.0):
        self.store = store
        self.clock = clock
        self.cache_ttl = cache_ttl
        # Every binding change goes through it; its events' bound_agent under the cached configuration.
        self.bindings = BindingPath(store, clock, configuration=lambda: (self.settings(), self.agents()))
        self._snapshot: _Snapshot | None = None

    # -- cached configuration --------------------------------------------------------------------
    def invalidate(self) -> None:
        self._snapshot = None

    def _fresh(self) -> _Snapshot:
        now = self.clock().timestamp()
        snapshot = self._snapshot
        if snapshot is None or now - snapshot.loaded_at >= self.cache_ttl:
            snapshot = self._load(now)
        return snapshot

    def _load(self, now: float) -> _Snapshot:
        snapshot = _Snapshot(self.store.settings(), self.store.agents(), self.store.groups(), now)
        self._snapshot = snapshot
        return snapshot

    def settings(self) -> Settings:
        return self._fresh().settings

    def agents(self) -> dict[str, Agent]:
        return self._fresh().agents

    def groups(self) -> dict[str, Group]:
        return self._fresh().groups

    def agent_extensions(self) -> frozenset[str]:
        """The agents' extensions, one set per configuration read (the listener asks at events)."""
        return self._fresh().extensions

    def normalize(self, raw: str) -> str:
        """The client's E.164 form in the configured region; NotAClient otherwise."""
        return normalize(raw, self.settings().default_region)

    # -- routing ---------------------------------------------------------------------------------
    def crm_answer(self, caller_raw: str, crm, cached_only: bool = False):
        """Ask the CRM (a crm.CrmClient, or None) who is responsible for the caller.

        From the configuration cached last (no database read: a caller need not hold the database
        lock while the CRM thinks), within the CRM's own budget; never raises. None when there is
        no CRM, `crm` is not among the `sources`, the caller is no client, or the CRM names nobody
        who can take calls, or (`cached_only`) nothing is cached yet. The answer goes into
        route(..., crm=answer).
        """
        if crm is None or (cached_only and self._snapshot is None):
            return None
        snapshot = self._snapshot or self._fresh()
        if CRM not in snapshot.settings.sources:
            return None
        client = client_or_none(caller_raw, snapshot.settings.default_region)
        if client is None:
            return None
        agents = snapshot.agents
        by_crm_id = {a.crm_id: a for a in agents.values() if a.crm_id}
        now = self.clock()

        def resolve(value: str) -> str | None:
            # Usable: the ownership rule would let a CRM binding to them route (no group or
            # presence known yet: exists, enabled, not on do-not-disturb).
            agent = by_crm_id.get(value) or agents.get(value)
            if agent is None:
                return None
            named = {CRM: Binding(client=client, agent=agent.ext, source=CRM, at=now)}
            owned = ownership.decide(client, named, agents, snapshot.settings, now)
            return agent.ext if owned.owner is not None else None

        return crm.lookup(client, resolve)

    @staticmethod
    def _with_crm(bindings: dict, client: str | None, crm, now: datetime) -> dict:
        if crm is None or client is None or crm.client != client:
            return bindings
        return {**bindings, CRM: Binding(client=client, agent=crm.agent, source=CRM, at=now,
                                         why=f"CRM {crm.lookup}: {crm.value}")}

    def route(self, caller_raw: str, group_name: str, now: datetime | None = None, crm=None,
              presence=None) -> RoutePlan:
        """The plan for one call; `crm` is the CRM's answer (crm_answer), asked beforehand.

        `presence` (the daemon's, or `route --live`'s; None: everyone available) is called as
        presence(agents, wait_for) -> {ext: OFFLINE | BUSY}: a decision's input, like `crm`, so the
        service holds no connection to FreeSWITCH."""
        snapshot = self._fresh()
        group = snapshot.groups.get(group_name)
        if group is None:
            # A group added a moment ago by the CLI should not wait for the cache to expire.
            snapshot = self._load(self.clock().timestamp())
            group = snapshot.groups.get(group_name)
        if group is None:
            raise ServiceError(f"unknown group {group_name!r}")
        client = client_or_none(caller_raw, snapshot.settings.default_region)
        bindings, extras = self._client_inputs(client, group, snapshot.agents, presence)
        now = now or self.clock()
        return routing.decide(client, group, now, snapshot.settings, self._with_crm(bindings, client, crm, now),
                              snapshot.agents, **extras)

    def _client_inputs(self, client: str | None, group: Group, agents: dict[str, Agent],
                       presence=None) -> tuple[dict, dict]:
        """The client's bindings (a number linked to a client reads the client's) and what decide
        takes besides: the agents the client is kept away from, whether the number is shared, and
        (with presence) who cannot take a call. One statement of indexed reads; presence waits
        only for the bound agents (docs/presence-and-hours.md)."""
        if client is None:
            return {}, {}
        _owner, shared, blocked, bindings = self.store.routing_inputs(client)
        extras = {"blocked": blocked, "shared": shared}
        if presence is not None and not shared:
            wait_for = {b.agent for b in bindings.values()}
            sequential = group.strategy == routing.SEQUENTIAL
            candidates = [a for a in agents.values()
                          if a.ext in wait_for or (sequential and group.name in a.groups)]
            extras["availability"] = presence(candidates, wait_for)
        return bindings, extras

    def fallback_plan(self, caller_raw: str, group_name: str,
                      now: datetime | None = None, crm=None) -> RoutePlan | None:
        """The group's plan from what is cached, without reading the database (it is down or slow).

        No binding is read, so there is no sticky leg but the CRM's (`crm`, when it answered); None
        when nothing was ever cached or the group is not known.
        """
        snapshot = self._snapshot
        if snapshot is None or group_name not in snapshot.groups:
            return None
        client = client_or_none(caller_raw, snapshot.settings.default_region)
        now = now or self.clock()
        plan = routing.decide(client, snapshot.groups[group_name], now, snapshot.settings,
                              self._with_crm({}, client, crm, now), snapshot.agents)
        return plan if client is None or plan.sticky else replace(plan, reason="database_unavailable")

    # -- ownership: what the store knows, put to the one rule (core/ownership.py) ----------------
    def standing_of(self, number: str, now: datetime | None = None, crm=None) -> Standing:
        """The bindings of the client of `number` (a linked number: its client's; the number's own
        shared flag, the client's blocks), with `crm` (crm_answer) as the CRM's binding."""
        _owner, shared, blocked, bindings = self.store.routing_inputs(number)
        now = now or self.clock()
        return self._standing(number, self._with_crm(bindings, number, crm, now), self._fresh(), now,
                              shared=shared, blocked=blocked)

    def holder_of(self, number: str, group_name: str | None, now: datetime) -> str | None:
        """Who the ownership rule holds responsible for a call of `number` in `group_name`
        (presence unknown), as calls missed says: the bound agent of a call's webhooks."""
        _owner, shared, blocked, bindings = self.store.routing_inputs(number)
        snapshot = self._fresh()
        return ownership.decide(number, bindings, snapshot.agents, snapshot.settings, now,
                                group=snapshot.groups.get(group_name), blocked=blocked, shared=shared).holder

    def standings(self, bindings, now: datetime | None = None, per_group: bool = True) -> dict[str, Standing]:
        """standing_of for the clients of `bindings` (Binding rows, e.g. list_bindings'), with one
        read of their shared flags and blocks. Without `per_group` only `anywhere` is decided
        (groups and stale left empty)."""
        held: dict[str, dict[str, Binding]] = {}
        for binding in bindings:
            held.setdefault(binding.client, {})[binding.source] = binding
        snapshot, now = self._fresh(), now or self.clock()
        facts = self.store.clients_of(held)
        none = (None, False, frozenset())
        return {client: self._standing(client, found, snapshot, now, shared=facts.get(client, none)[1],
                                       blocked=facts.get(client, none)[2], per_group=per_group)
                for client, found in held.items()}

    @staticmethod
    def _standing(client: str, bindings: dict, snapshot: _Snapshot, now: datetime, shared: bool,
                  blocked: frozenset[str], per_group: bool = True) -> Standing:
        def decide(group=None):
            return ownership.decide(client, bindings, snapshot.agents, snapshot.settings, now, group=group,
                                    blocked=blocked, shared=shared)
        anywhere = decide()
        if not per_group:
            return Standing(anywhere=anywhere, groups={}, stale={})
        now_in = {name: decide(group) for name, group in snapshot.groups.items()}
        every_hour = [now_in[name] if not group.sticky_hours else decide(ownership.any_hour(group))
                      for name, group in snapshot.groups.items()]
        return Standing(anywhere=anywhere, groups=now_in, stale=ownership.lasting(anywhere, every_hour))

    def missed_calls(self, since: datetime | None = None, only_open: bool = False,
                     now: datetime | None = None) -> list[MissedCall]:
        """`calls missed` and the report's: the missed calls since `since`, clients as people (a
        callback to any of a client's numbers closes them), each with who is responsible for the
        client now: the ownership rule's holder in the call's group (presence unknown)."""
        rows = self.store.missed_call_rows(since=since)
        facts = self.store.clients_of({call.client for call in rows})
        clients = {number: client for number, (client, _, _) in facts.items()}
        bindings = self.store.bindings_of({clients.get(call.client, call.client) for call in rows})
        snapshot, now = self._fresh(), now or self.clock()
        alone = (None, False, frozenset())

        @functools.cache
        def holder(number: str, group_name: str | None) -> str | None:
            _, shared, blocked = facts.get(number, alone)
            return ownership.decide(number, bindings.get(clients.get(number, number), {}), snapshot.agents,
                                    snapshot.settings, now, group=snapshot.groups.get(group_name),
                                    blocked=blocked, shared=shared).holder

        return missed.missed_calls(rows, lambda call: holder(call.client, call.group), since=since,
                                   only_open=only_open, clients=clients)

    # -- learning --------------------------------------------------------------------------------
    def record_call(self, call: Call) -> Binding | None:
        """Record and learn under the call's group's own settings (learn_from...); then, with
        max_sticky_misses, drop a learned binding whose agent keeps missing the client's calls."""
        settings = overrides.effective(self.settings(), self.groups().get(call.group) if call.group else None)
        binding = self.bindings.record_call(call, settings)
        misses = getattr(settings, "max_sticky_misses", 0)
        if misses and binding is None:
            dropped = self.bindings.forget_after_misses(call, misses)
            if dropped is not None:
                log.info("binding.released_after_misses", client=dropped.client, agent=dropped.agent,
                         misses=misses)
        return binding

    def report_expired(self, pause=lambda: None) -> int:
        """Report, once, each binding that stopped routing by time since the last sweep (the
        daemon's ExpirySweep); how many."""
        return self.bindings.report_expired(self.store.settings(), self.store.groups(), self.clock(), pause=pause)

    def import_calls(self, rows) -> CallImport:
        """Dicts with CALL_COLUMNS (line 1 is the header, so the first row is line 2)."""
        return self._import_calls(enumerate(rows, start=2))

    def import_calls_csv(self, file) -> CallImport:
        reader = csv.DictReader(file)
        with _csv_errors(reader):
            reader.fieldnames = _require_header(reader.fieldnames, CALL_COLUMNS)
        return self._import_calls((reader.line_num, row) for row in _rows(reader))

    def _import_calls(self, numbered_rows) -> CallImport:
        settings = self.store.settings()
        agents = self.store.agents()
        # A client calls many times: each distinct number is parsed once.
        to_client = functools.lru_cache(maxsize=1 << 16)(normalize)
        # Every line is checked before anything is written: a bad line leaves the store untouched.
        every = [self._call_from_row(line, row, settings, agents, to_client) for line, row in numbered_rows]
        known = self.store.known_call_uuids(call.uuid for call in every if call.uuid)
        fresh = [call for call in every if call.uuid not in known] if known else every
        # What bindings.record_call(call, settings, notify=False) does for each call in turn (history,
        # not news: imported calls send no webhooks), in one transaction and a few statements.
        learned = self.bindings.record_calls(fresh, settings)
        return CallImport(calls=len(fresh), learned=learned, known=len(every) - len(fresh))

    def _call_from_row(self, line: int, row: dict, settings: Settings, agents, to_client=normalize) -> Call:
        def fail(message):
            raise ServiceError(f"line {line}: {message}")

        if None in row:
            fail(f"more cells than the header's {len(row) - 1}")
        cells = {}
        for column in CALL_COLUMNS:
            value = row.get(column)
            if value is None:
                fail(f"missing {column}")
            cells[column] = spreadsheet_unescape(value.strip())
        try:
            started_at = parse_time(cells["started_at"])
        except ValueError as exc:
            fail(str(exc))
        direction = cells["direction"].lower()
        if direction not in DIRECTIONS:
            fail(f"bad direction {cells['direction']!r}: inbound or outbound")
        try:
            client = to_client(cells["client"], settings.default_region)
        except NotAClient as exc:
            fail(str(exc))
        agent = cells["agent"] or None
        if agent is not None and agent not in agents:
            fail(f"unknown agent {agent!r} (add it first; it can be disabled)")
        try:
            talk = float(cells["talk_seconds"] or "0")
        except ValueError:
            talk = math.nan
        if not math.isfinite(talk) or not 0 <= talk <= MAX_TALK_SECONDS:
            fail(f"bad talk_seconds {cells['talk_seconds']!r}: a number of seconds, 0 when unanswered")
        try:
            ended_at = started_at + timedelta(seconds=talk)
        except OverflowError:
            fail(f"bad started_at {cells['started_at']!r}: the call would end after the year 9999")
        call_uuid = (row.get(CALL_UUID_COLUMN) or "").strip() or None
        if call_uuid is not None and not CALL_UUID_RE.fullmatch(call_uuid):
            fail(f"bad uuid {call_uuid[:70]!r}: FreeSWITCH's uuid of the call, or empty")
        return Call(direction=direction, client=client, agent=agent, started_at=started_at,
                    ended_at=ended_at, talk_seconds=talk, answered=talk > 0,
                    # Without a uuid the store derives one from the row, so a re-import updates,
                    # not doubles.
                    uuid=call_uuid, answered_at=started_at if talk > 0 else None,
                    outcome="answered" if talk > 0 else "missed")

    # -- bindings as CSV -------------------------------------------------------------------------
    def import_bindings_csv(self, file) -> int:
        """Manual bindings from CSV `client,agent` (header optional), all or none."""
        settings = self.store.settings()
        agents = self.store.agents()
        pairs: dict[str, str] = {}
        lines: dict[str, int] = {}
        reader = csv.reader(file)
        for row in _rows(reader):
            line = reader.line_num
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if line == 1 and [cell.strip().lower() for cell in row] == list(BINDING_COLUMNS):
                continue
            if len(row) != 2:
                raise ServiceError(f"line {line}: expected 2 cells (client,agent), got {len(row)}")
            raw_client, agent = (spreadsheet_unescape(cell.strip()) for cell in row)
            try:
                client = normalize(raw_client, settings.default_region)
            except NotAClient as exc:
                raise ServiceError(f"line {line}: {exc}") from None
            if agent not in agents:
                raise ServiceError(f"line {line}: unknown agent {agent!r}")
            if client in lines:
                raise ServiceError(f"line {line}: client {client} is already on line {lines[client]}")
            pairs[client] = agent
            lines[client] = line
        # A line the ownership rule bars for good (shared number, blocked agent) imports nothing.
        for number, (owner, shared, blocked) in self.store.clients_of(pairs).items():
            refused = binding_changes.refusal(number, owner, pairs[number], blocked=blocked, shared=shared)
            if refused:
                raise ServiceError(f"line {lines[number]}: {refused}")
        return self.bindings.import_bindings(pairs.items(), now=self.clock())

    def export_bindings_csv(self, file) -> int:
        """One row per client: the agent responsible for them (ownership's holder, without a
        group: the agent their next call rings first, or would but for the hour or presence), so
        export then import moves the bindings that matter, as manual ones."""
        standings = self.standings(self.store.list_bindings(), per_group=False)
        chosen = {client: s.anywhere.holder for client, s in standings.items() if s.anywhere.holder}
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(BINDING_COLUMNS)
        for client in sorted(chosen):
            writer.writerow((spreadsheet_safe(client), spreadsheet_safe(chosen[client])))
        return len(chosen)


@contextmanager
def _csv_errors(reader):
    """What the csv module refuses (a field over its size limit...) as a one-line ServiceError."""
    try:
        yield
    except csv.Error as exc:
        raise ServiceError(f"line {reader.line_num or 1}: not CSV: {exc}") from None


def _rows(reader):
    with _csv_errors(reader):
        yield from reader


def _require_header(fieldnames, expected) -> list[str]:
    if fieldnames is None:
        raise ServiceError("line 1: the file is empty; expected the header " + ",".join(expected))
    names = [name.strip().lower() for name in fieldnames]
    missing = [column for column in expected if column not in names]
    if missing:
        raise ServiceError(f"line 1: the header lacks {', '.join(missing)}; expected {','.join(expected)}")
    return names
