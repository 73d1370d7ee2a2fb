"""What the outbound router asks for each call: its plan, within the decision budget.

The CRM is asked first (within its own budget, outside the database lock), then the service
decides under the lock; when the database is away or slow, the group's plan from what is cached
(Service.fallback_plan), so that a call always rings someone.
"""
from __future__ import annotations

import time

import gevent
import structlog

from ..service import Service

log = structlog.get_logger("fsrouter.daemon")


class Decider:
    """`decide(caller, group, call_uuid)` for outbound.CallRouter; `crm` (http.crm.CrmClient),
    `presence` (esl.presence.LivePresence.availability) and `metrics` may be None."""

    def __init__(self, service: Service, lock, budget: float, crm=None, presence=None, metrics=None):
        self.service = service
        self.lock = lock
        self.budget = budget  # seconds; a reload of the config changes it
        self.crm = crm
        self.presence = presence
        self.metrics = metrics
        self.degraded = 0  # decisions made without the database

    def decide(self, caller: str | None, group: str | None, call_uuid: str | None):
        """The plan for one call: the CRM asked first (within its own budget, outside the database
        lock), then the local decision within the decision budget."""
        started = time.perf_counter()
        crm = None
        if self.crm is not None:
            try:
                # The configuration the answer is read against (agents, CRM ids), fresh if it can be.
                with gevent.Timeout(self.budget, False), self.lock:
                    self.service.settings()
            except Exception:
                pass  # the decision below meets the same trouble and handles it
            try:
                crm = self.service.crm_answer(caller or "", self.crm, cached_only=True)
            except Exception as exc:
                log.warning("crm.skipped", uuid=call_uuid, error=str(exc)[:200])
        plan = self._decide(caller, group, call_uuid, crm)
        if self.metrics is not None:
            self.metrics.decided(plan, time.perf_counter() - started)
        return plan

    def _decide(self, caller: str | None, group: str | None, call_uuid: str | None, crm=None):
        """The plan for one call within the decision budget; without the database, the group."""
        try:
            with gevent.Timeout(self.budget), self.lock:
                return self.service.route(caller or "", group or "", crm=crm, presence=self.presence)
        except BaseException as exc:  # gevent.Timeout is a BaseException
            if isinstance(exc, (KeyboardInterrupt, SystemExit, gevent.GreenletExit)):
                raise
            self.degraded += 1
            log.warning("decision.degraded", uuid=call_uuid, error=type(exc).__name__, detail=str(exc)[:200])
            try:
                return self.service.fallback_plan(caller or "", group or "", crm=crm)
            except Exception as fallback_exc:
                log.warning("decision.no_plan", uuid=call_uuid, error=str(fallback_exc)[:200])
                return None
