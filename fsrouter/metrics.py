"""The daemon's Prometheus metrics, served by the API listener at /metrics.

One registry per daemon (tests run several daemons in one process). Counters and histograms are
fed where things happen (the decision, the CRM lookup, a webhook delivery); values the daemon
already keeps (socket reconnects, sticky answers, outbox depth) are read at scrape time.
"""
from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from .core.model import ROUTE_SOURCES

disable_created_metrics()  # the *_created series only add noise here

_FAST = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
ROUTES = ("sticky", "fallback", "none")
CRM_OUTCOMES = ("agent", "nobody", "timeout", "connection", "status", "bad_answer", "breaker_open", "error")
CRM_FAILURES = ("timeout", "connection", "status", "bad_answer", "error")


class _Live:
    """Values read when scraped: (kind, name, help, function) each."""

    def __init__(self):
        self.values: list[tuple[str, str, str, Callable[[], float]]] = []

    def collect(self):
        for kind, name, doc, read in self.values:
            try:
                value = float(read())
            except Exception:  # a value that cannot be read now is left out, the scrape goes on
                continue
            family = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
            yield family(name, doc, value=value)

    def describe(self):
        return []


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self):
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.routed = Counter("fsrouter_calls_routed", "Calls routed, by the route taken (sticky: the bound "
                              "agent rings first; fallback: the group only; none: back to the dialplan) and "
                              "where the sticky agent came from", ["route", "source"], registry=r)
        self.decision = Histogram("fsrouter_decision_seconds", "Time to decide a call's route, CRM lookup "
                                  "included", buckets=_FAST, registry=r)
        self.crm_latency = Histogram("fsrouter_crm_lookup_seconds", "Time of a CRM lookup (all its steps)",
                                     buckets=_FAST, registry=r)
        self.crm_lookups = Counter("fsrouter_crm_lookups", "CRM lookups by outcome", ["outcome"], registry=r)
        self.crm_failures = Counter("fsrouter_crm_lookup_failures", "CRM lookups that failed, by reason",
                                    ["reason"], registry=r)
        self.webhooks = Counter("fsrouter_webhook_deliveries", "Webhook delivery attempts by result "
                                "(sent, failed: tried again later, dead: given up)", ["result"], registry=r)
        for route in ROUTES:
            for source in ROUTE_SOURCES + ("",):
                if (route == "sticky") == bool(source):
                    self.routed.labels(route, source)
        for outcome in CRM_OUTCOMES:
            self.crm_lookups.labels(outcome)
        for reason in CRM_FAILURES:
            self.crm_failures.labels(reason)
        for result in ("sent", "failed", "dead"):
            self.webhooks.labels(result)
        self.sticky_attempts = 0  # calls whose bound agent rang first (for the hit rate)
        self._live = _Live()
        r.register(self._live)

    # -- fed as things happen ------------------------------------------------------------------------
    def decided(self, plan, seconds: float) -> None:
        if plan is None or (plan.sticky is None and not plan.fallback):
            route, source = "none", ""
        elif plan.sticky is not None:
            route, source = "sticky", plan.source or ""
        else:
            route, source = "fallback", ""
        self.routed.labels(route, source).inc()
        self.sticky_attempts += route == "sticky"
        self.decision.observe(seconds)

    def crm_result(self, seconds: float, outcome: str) -> None:
        self.crm_latency.observe(seconds)
        self.crm_lookups.labels(outcome).inc()
        if outcome in CRM_FAILURES:
            self.crm_failures.labels(outcome).inc()

    def webhook_result(self, result: str) -> None:
        self.webhooks.labels(result).inc()


    # -- read when scraped ---------------------------------------------------------------------------
    def gauge(self, name: str, doc: str, read: Callable[[], float]) -> None:
        self._live.values.append(("gauge", name, doc, read))

    def counter(self, name: str, doc: str, read: Callable[[], float]) -> None:
        self._live.values.append(("counter", name, doc, read))

    def render(self) -> bytes:
        return generate_latest(self.registry)
