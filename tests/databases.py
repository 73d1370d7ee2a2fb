"""The databases the storage contract runs on: an SQLite file and, when a server answers at
PG_URL, a fresh PostgreSQL schema (dropped afterwards). Under CI (env CI set) a PostgreSQL case
fails, not skips, when no server answers: .ci/run starts one. conftest.py makes fixtures of it."""
from __future__ import annotations

import os
import uuid
from contextlib import contextmanager

import pytest

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
KINDS = ("sqlite", "postgresql")


def postgres_admin():
    """An autocommit connection to the server; skips (fails under CI) when none answers."""
    try:
        import psycopg2

        conn = psycopg2.connect(PG_URL, connect_timeout=2)
    except Exception as exc:  # noqa: BLE001  (any failure to connect: no server here)
        if os.environ.get("CI"):
            pytest.fail(f"no PostgreSQL server at {PG_URL} ({exc}); .ci/run starts it")
        pytest.skip(f"no PostgreSQL server at {PG_URL}")
    conn.autocommit = True
    return conn


@contextmanager
def postgres_schema_url(prefix: str = "fsrouter_test"):
    """The URL of a fresh schema on the local PostgreSQL server, dropped afterwards."""
    conn = postgres_admin()
    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with conn.cursor() as cur:
        cur.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with conn.cursor() as cur:
            cur.execute(f'DROP SCHEMA "{schema}" CASCADE')
        conn.close()


@contextmanager
def database_url(kind: str, tmp_path, name: str = "fsrouter.db"):
    """An empty database of `kind` (KINDS)."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp_path / name}"
        return
    with postgres_schema_url() as url:
        yield url
