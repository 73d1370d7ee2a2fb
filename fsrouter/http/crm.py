"""Asking the CRM who is responsible for a client: at the edge, within a hard budget.

The routing decision stays pure: this module only fetches an answer (an agent extension) that the
service passes INTO routing.decide as a binding of source `crm`. Lookups run in their configured
order (lead, deal, contact, ...); the first one whose answer names an available agent wins.

Never in the way of a call:
  * the whole lookup, all steps together, gets `budget` seconds (gevent.Timeout); past it the
    call routes on the local bindings;
  * `failures` failed lookups in a row open a circuit breaker: for `reset` seconds no request is
    made at all, then one trial request decides (closed again on success, open again on failure);
  * answers (including "nobody") are cached for `cache_ttl` seconds per client and lookup.

A failure is a timeout, a connection error, a status other than 2xx or 404, or a body that is not
JSON or whose field is not a string or number. 404 and an empty or missing field mean "the CRM
names nobody": that is an answer, cached, and not a failure.
"""
from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote

import gevent
import structlog

from ..config import CrmLookup
from . import client as http_client

log = structlog.get_logger("fsrouter.http.crm")

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


@dataclass(frozen=True)
class CrmAnswer:
    client: str  # E.164
    agent: str  # the extension the answer maps to
    lookup: str  # which lookup named them
    value: str  # what the CRM said (an extension or a CRM user id)


class CrmFailure(Exception):
    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason  # timeout | connection | status | bad_answer


class CircuitBreaker:
    """Closed (requests go), open (none go) for `reset` seconds after `failures` in a row, then
    half-open: one trial request; its success closes the breaker, its failure opens it again."""

    def __init__(self, failures: int = 5, reset: float = 30.0, clock: Callable[[], float] = time.monotonic):
        self.failures = max(1, int(failures))
        self.reset = float(reset)
        self.clock = clock
        self.state = CLOSED
        self.failed = 0
        self.opened_at = 0.0
        self._trial = False
        self.opened = 0  # how many times it opened

    def allow(self) -> bool:
        if self.state == CLOSED:
            return True
        if self.state == OPEN:
            if self.clock() - self.opened_at < self.reset:
                return False
            self.state = HALF_OPEN
            self._trial = False
        if self._trial:  # half-open: one trial at a time
            return False
        self._trial = True
        return True

    def success(self) -> None:
        if self.state != CLOSED:
            log.info("crm.breaker_closed")
        self.state, self.failed, self._trial = CLOSED, 0, False

    def failure(self) -> None:
        self.failed += 1
        self._trial = False
        if self.state == HALF_OPEN or (self.state == CLOSED and self.failed >= self.failures):
            if self.state == CLOSED:
                self.opened += 1
            self.state, self.opened_at = OPEN, self.clock()
            log.warning("crm.breaker_open", failures=self.failed, reset_seconds=self.reset)


_NOBODY = object()


class CrmClient:
    def __init__(self, lookups: tuple[CrmLookup, ...], budget: float = 0.3, cache_ttl: float = 30.0,
                 breaker: CircuitBreaker | None = None, request_timeout: float = 5.0,
                 clock: Callable[[], float] = time.monotonic,
                 on_result: Callable[[float, str], None] | None = None, cache_size: int = 10_000):
        self.lookups = tuple(lookups)
        self.budget = float(budget)
        self.cache_ttl = float(cache_ttl)
        self.breaker = breaker or CircuitBreaker(clock=clock)
        self.request_timeout = request_timeout
        self.clock = clock
        self.on_result = on_result
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple[str, str], tuple[float, str | None]] = OrderedDict()
        # The client's name as the lookups with a name_field last said it (client -> (expires, name)):
        # read by the pages from what routing already asked, never asked for them.
        self._names: OrderedDict[str, tuple[float, str]] = OrderedDict()

    @classmethod
    def from_config(cls, config, on_result=None) -> CrmClient | None:
        if not config.crm_lookups:
            return None
        return cls(config.crm_lookups, budget=config.crm_budget, cache_ttl=config.crm_cache_ttl,
                   breaker=CircuitBreaker(config.crm_breaker_failures, config.crm_breaker_reset),
                   on_result=on_result)

    def lookup(self, client: str, resolve: Callable[[str], str | None]) -> CrmAnswer | None:
        """The first lookup's answer that `resolve` maps to an available agent, or None.

        `resolve(value)` maps what the CRM said (extension or CRM user id) to an extension of an
        agent who can take calls, or None. Never raises; never takes longer than the budget.
        """
        started = time.perf_counter()
        outcome = "nobody"
        answer = None
        timer = gevent.Timeout(self.budget)
        timer.start()
        try:
            for step in self.lookups:
                value = self._cached(client, step)
                if value is _NOBODY:
                    if not self.breaker.allow():
                        outcome = "breaker_open"
                        break
                    try:
                        value = self._fetch(client, step)
                    except CrmFailure as exc:
                        self.breaker.failure()
                        outcome = exc.reason
                        log.warning("crm.lookup_failed", lookup=step.name, reason=exc.reason,
                                    detail=str(exc)[:200])
                        break
                    self.breaker.success()
                    self._remember(client, step, value)
                agent = resolve(value) if value else None
                if agent:
                    answer = CrmAnswer(client, agent, step.name, value)
                    outcome = "agent"
                    break
        except gevent.Timeout as exc:
            if exc is not timer:
                raise
            self.breaker.failure()
            outcome = "timeout"
            log.warning("crm.lookup_failed", reason="timeout", budget=self.budget)
        except Exception as exc:  # resolve() or something unforeseen: the call must still route
            outcome = "error"
            log.warning("crm.lookup_error", error=f"{type(exc).__name__}: {exc}"[:200])
        finally:
            timer.close()
        if self.on_result is not None:
            self.on_result(time.perf_counter() - started, outcome)
        return answer

    # -- one step ----------------------------------------------------------------------------------
    def _fetch(self, client: str, step: CrmLookup) -> str | None:
        url = step.url.replace("{client}", quote(client, safe="")).replace("{digits}", client.lstrip("+"))
        try:
            response = http_client.request("GET", url, headers={"Accept": "application/json", **step.headers},
                                           timeout=self.request_timeout, max_body=256 * 1024)
        except http_client.HttpError as exc:
            raise CrmFailure("connection", str(exc)) from None
        if response.status == 404:
            return None
        if not response.ok:
            raise CrmFailure("status", f"HTTP {response.status}")
        try:
            document = json.loads(response.body)
        except (ValueError, UnicodeDecodeError):
            raise CrmFailure("bad_answer", "the body is not JSON") from None
        if step.name_field:
            self._remember_name(client, document, step.name_field)
        return _field(document, step.field)

    def _remember_name(self, client: str, document, path: str) -> None:
        try:
            name = _field(document, path)
        except CrmFailure:  # a name that is no text is no name; the answer still counts
            name = None
        if name:
            self._names[client] = (self.clock() + max(self.cache_ttl, 3600.0), name[:200])
            self._names.move_to_end(client)
            while len(self._names) > self.cache_size:
                self._names.popitem(last=False)

    def name(self, client: str) -> str | None:
        """The client's name as the CRM last gave it (an hour at least), or None. Asks nothing."""
        hit = self._names.get(client)
        return hit[1] if hit is not None and self.clock() < hit[0] else None

    # -- cache -------------------------------------------------------------------------------------
    def _cached(self, client: str, step: CrmLookup):
        hit = self._cache.get((client, step.name))
        if hit is None:
            return _NOBODY
        expires, value = hit
        if self.clock() >= expires:
            del self._cache[(client, step.name)]
            return _NOBODY
        return value

    def _remember(self, client: str, step: CrmLookup, value: str | None) -> None:
        if self.cache_ttl <= 0:
            return
        self._cache[(client, step.name)] = (self.clock() + self.cache_ttl, value)
        self._cache.move_to_end((client, step.name))
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def forget(self, client: str | None = None) -> None:
        """Drop cached answers (of one client): the CRM changed its mind and told us."""
        if client is None:
            self._cache.clear()
        else:
            for key in [k for k in self._cache if k[0] == client]:
                del self._cache[key]


def _field(document, path: str) -> str | None:
    """The value at a dotted path (`data.responsible.ext`; a number picks a list item)."""
    value = document
    for part in path.split("."):
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            value = None
        if value is None:
            return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise CrmFailure("bad_answer", f"field {path} is not a string or a number")
    text = str(value).strip()
    return text or None
