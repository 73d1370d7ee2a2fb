"""Benchmark: routing decision time with 1,000,000 bindings, and `binding import` of 1,000,000 rows.

    .venv/bin/python bench/bench_core.py [--bindings N] [--lookups N]

Builds an SQLite store in a temporary directory, prints a small table and writes the figures to
bench/results/core.json. Not a test: timings depend on the machine.
"""
from __future__ import annotations

import argparse
import json
import platform
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from fsrouter.binding_path import BindingPath
from fsrouter.cli import main as cli_main
from fsrouter.service import Service
from fsrouter.store import Store

RESULTS = Path(__file__).with_name("results") / "core.json"
AGENTS = [f"{1000 + i}" for i in range(50)]


def national(i: int) -> str:
    """A distinct Ukrainian mobile number in the national form a CRM would export: 050xxxxxxx."""
    return f"050{i:07d}"


def e164(i: int) -> str:
    return f"+38050{i:07d}"


def build_store(url: str, bindings: int) -> float:
    with Store.open(url) as store:
        store.add_group("sales")
        for ext in AGENTS:
            store.add_agent(ext, f"Agent {ext}", groups=["sales"])
        started = time.perf_counter()
        BindingPath(store).import_bindings(((e164(i), AGENTS[i % len(AGENTS)]) for i in range(bindings)),
                              now=datetime.now(UTC))
        return time.perf_counter() - started


def measure_route(url: str, bindings: int, lookups: int) -> dict:
    rng = random.Random(7)
    # Nine in ten callers are bound clients (written as a caller ID arrives: national form), one in
    # ten are not in the table at all.
    callers = [national(rng.randrange(bindings) if rng.random() < 0.9 else bindings + rng.randrange(10**6))
               for _ in range(lookups)]
    with Store.open(url) as store:
        service = Service(store)
        service.route(callers[0], "sales")  # fill the cache once, as a running daemon has
        route_us, lookup_us = [], []
        sticky = 0
        for caller in callers:
            t0 = time.perf_counter_ns()
            plan = service.route(caller, "sales")
            route_us.append((time.perf_counter_ns() - t0) / 1000)
            sticky += plan.sticky is not None
        for caller in callers[:2000]:
            client = service.normalize(caller)
            t0 = time.perf_counter_ns()
            store.bindings_for(client)
            lookup_us.append((time.perf_counter_ns() - t0) / 1000)
    return {"lookups": lookups, "sticky_share": round(sticky / lookups, 3),
            "route_p50_us": _pct(route_us, 50), "route_p99_us": _pct(route_us, 99),
            "route_max_us": round(max(route_us), 1), "route_mean_us": round(statistics.fmean(route_us), 1),
            "bindings_for_p50_us": _pct(lookup_us, 50), "bindings_for_p99_us": _pct(lookup_us, 99)}


def measure_cli_import(directory: Path, rows: int) -> dict:
    csv_path = directory / "crm.csv"
    with open(csv_path, "w", encoding="utf-8") as handle:
        handle.write("client,agent\n")
        handle.writelines(f"{national(i)},{AGENTS[(i * 7) % len(AGENTS)]}\n" for i in range(rows))
    url = f"sqlite:///{directory / 'import.db'}"
    with Store.open(url) as store:
        for ext in AGENTS:
            store.add_agent(ext, f"Agent {ext}")
    started = time.perf_counter()
    cli_main(["--db", url, "binding", "import", str(csv_path)], standalone_mode=False)
    seconds = time.perf_counter() - started
    with Store.open(url) as store:
        imported = store.m.Binding.select().count()
    assert imported == rows, imported
    return {"rows": rows, "seconds": round(seconds, 2), "rows_per_second": round(rows / seconds)}


def _pct(values, pct) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))], 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bindings", type=int, default=1_000_000)
    parser.add_argument("--lookups", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="fsrouter-bench-") as tmp:
        directory = Path(tmp)
        url = f"sqlite:///{directory / 'route.db'}"
        build_seconds = build_store(url, args.bindings)
        route = measure_route(url, args.bindings, args.lookups)
        cli_import = measure_cli_import(directory, args.bindings)
    results = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "sqlite": sqlite3.sqlite_version,
                    "platform": platform.platform(), "processor": platform.machine()},
        "bindings": args.bindings,
        "store_bulk_import_seconds": round(build_seconds, 2),
        "route": route,
        "cli_binding_import": cli_import,
    }
    rows = [
        ("bindings in the store", f"{args.bindings:,}"),
        ("store bulk import (E.164 pairs)", f"{build_seconds:.2f} s"),
        ("Service.route p50", f"{route['route_p50_us']} µs"),
        ("Service.route p99", f"{route['route_p99_us']} µs"),
        ("Service.route max", f"{route['route_max_us']} µs"),
        ("  of which bindings_for p50 / p99",
         f"{route['bindings_for_p50_us']} / {route['bindings_for_p99_us']} µs"),
        ("  calls with a sticky leg", f"{route['sticky_share']:.0%}"),
        (f"fsrouter binding import ({cli_import['rows']:,} rows CSV)", f"{cli_import['seconds']} s"),
    ]
    width = max(len(label) for label, _ in rows)
    for label, value in rows:
        print(f"{label.ljust(width)}  {value}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"written to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
