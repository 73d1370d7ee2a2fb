"""Fixtures shared by the tests: the storage contract's databases, and the end-to-end office."""
from __future__ import annotations

import pytest
from databases import KINDS, database_url, postgres_schema_url
from office import Office

from fsrouter.store import Store


@pytest.fixture(params=KINDS)
def store_url(request, tmp_path):
    """A URL of an empty database: an SQLite file, then a fresh PostgreSQL schema (tests/databases.py)."""
    with database_url(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def postgres_url():
    """A fresh PostgreSQL schema only, for what SQLite cannot show (a dropped server connection,
    two daemons' connections to one server)."""
    with postgres_schema_url() as url:
        yield url


@pytest.fixture
def store(store_url):
    """The store every storage test runs against, once on SQLite and once on PostgreSQL; a test
    module that needs agents or groups in it overrides this fixture on top of it."""
    with Store.open(store_url) as opened:
        yield opened


@pytest.fixture
def office(tmp_path):
    """A store with group sales and agents 1001-1004, the fake FreeSWITCH, and the real daemon
    between them over loopback TCP (tests/office.py)."""
    office = Office(tmp_path)
    yield office
    office.close()
