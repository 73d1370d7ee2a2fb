"""Fixtures shared by the end-to-end tests."""
from __future__ import annotations

import pytest
from office import Office


@pytest.fixture
def office(tmp_path):
    """A store with group sales and agents 1001-1004, the fake FreeSWITCH, and the real daemon
    between them over loopback TCP (tests/office.py)."""
    office = Office(tmp_path)
    yield office
    office.close()
