"""Benchmark databases: the office (group `sales`, agents 1001-1004) and N manual bindings.

The schema comes from fsrouter's own Store.open; the bindings are then bulk-loaded underneath it
(sqlite3 executemany, PostgreSQL COPY), since loading them is not what is measured here (the CLI
figures measure `binding import`). Clients follow fake_driver.client_number: of the clients
0..span-1 that the fake's callers are drawn from, 9 in 10 are bound (i % 10 != 9), so a tenth of
the calls find no binding and ring the group; the rest of the N bindings are other clients.
"""
from __future__ import annotations

import io
import sqlite3
from datetime import UTC, datetime

from fake_driver import AGENTS, client_number

from fsrouter.store import Store

AT = "2026-01-01 00:00:00.000000"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
PG_BENCH_DB = "fsrouter_bench"


def bound_clients(n: int, span: int):
    """n client indexes: 9 in 10 of 0..span-1, then indexes from span on."""
    count = 0
    for i in range(span):
        if count >= n:
            return
        if i % 10 != 9:
            yield i
            count += 1
    i = span
    while count < n:
        yield i
        i += 1
        count += 1


def make_office(url: str) -> None:
    with Store.open(url) as store:
        store.add_group("sales")
        for ext in AGENTS:
            store.add_agent(ext, f"Agent {ext}", dial_string=f"user/{ext}@127.0.0.1", groups=["sales"])


def sqlite_db(path, n: int, span: int) -> str:
    url = f"sqlite:///{path}"
    make_office(url)
    conn = sqlite3.connect(str(path))
    conn.execute("PRAGMA journal_mode=wal")
    conn.execute("PRAGMA synchronous=off")
    rows = ((client_number(i), AGENTS[i % len(AGENTS)]) for i in sorted(bound_clients(n, span),
                                                                         key=client_number))
    with conn:
        conn.executemany(f"INSERT INTO binding (client, source, agent, at, expires_at, why, call_uuid) "
                         f"VALUES (?, 'manual', ?, '{AT}', NULL, 'bench', NULL)", rows)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return url


def pg_create() -> str:
    import psycopg2
    admin = psycopg2.connect(PG_ADMIN)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {PG_BENCH_DB}")
        cur.execute(f"CREATE DATABASE {PG_BENCH_DB}")
    admin.close()
    return PG_ADMIN.rsplit("/", 1)[0] + "/" + PG_BENCH_DB


def pg_drop() -> None:
    import psycopg2
    admin = psycopg2.connect(PG_ADMIN)
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                    "AND pid <> pg_backend_pid()", (PG_BENCH_DB,))
        cur.execute(f"DROP DATABASE IF EXISTS {PG_BENCH_DB}")
    admin.close()


def pg_db(n: int, span: int) -> str:
    import psycopg2
    url = pg_create()
    make_office(url)
    conn = psycopg2.connect(url)
    buffer = io.StringIO()
    buffer.writelines(f"{client_number(i)}\tmanual\t{AGENTS[i % len(AGENTS)]}\t{AT}\tbench\n"
                      for i in bound_clients(n, span))
    buffer.seek(0)
    with conn, conn.cursor() as cur:
        cur.copy_expert('COPY binding (client, source, agent, "at", why) FROM STDIN', buffer)
    with conn.cursor() as cur:
        conn.autocommit = True
        cur.execute("VACUUM ANALYZE binding")
    conn.close()
    return url


def count_bindings(url: str) -> int:
    with Store.open(url) as store:
        return store.m.Binding.select().count()


if __name__ == "__main__":  # a quick look: python bench/dbs.py /tmp/x.db 1000
    import sys
    import time
    t = time.perf_counter()
    print(sqlite_db(sys.argv[1], int(sys.argv[2]), 1_000_000), time.perf_counter() - t,
          count_bindings(f"sqlite:///{sys.argv[1]}"), datetime.now(UTC))
