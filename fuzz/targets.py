"""What each fuzz target checks, as plain functions of one byte string.

Used by the atheris entry points (fuzz/fuzz_*.py) and by the test suite, which replays the
checked-in corpus and hypothesis-made mutations of it through the very same functions
(tests/test_fuzz_corpus.py). A check returns normally or raises: AssertionError when an
invariant is broken, anything else when the code under test raised what it must not.

    frames   bytes from FreeSWITCH's event socket, in any chunking: FrameReader raises only
             FrameError; a frame's event headers decode or raise FrameError; greenswitch's
             (patched) parser never raises; the call tracker takes whatever comes out.
    numbers  a caller ID: normalize() gives E.164 that reads back as itself, or NotAClient.
    csv      a calls or bindings CSV: imported, or ServiceError and the store is unchanged.
    config   a TOML config file: a Config, or ConfigError.
"""
from __future__ import annotations

import io
import os
import re
import tempfile
from datetime import UTC, datetime

from fsrouter.binding_path import BindingPath
from fsrouter.config import Config, ConfigError, load_config
from fsrouter.core.numbers import NotAClient, normalize
from fsrouter.esl.events import CallTracker
from fsrouter.esl.frames import FrameError, FrameReader, event_headers
from fsrouter.esl.protocol import FixedEvent  # greenswitch's event, with the header fix the daemon has
from fsrouter.service import Service, ServiceError
from fsrouter.store import Store

REGIONS = ("UA", "DE", "US", "GB", "FR", "PL", "IT", "RU")
AGENTS = frozenset({"1001", "1002", "1003"})
# A client: 7 to 15 digits (E.164), which the store takes (store._E164 allows 6 to 17).
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")


# -- frames ------------------------------------------------------------------------------------

def check_frames(data: bytes) -> None:
    # The first byte picks a chunk size, so the same stream is also read in awkward pieces.
    size = (data[0] % 17) + 1 if data else 1
    stream = data[1:]
    reader = FrameReader()
    tracker = CallTracker(agents=AGENTS, region="UA", max_open=8)
    frames = []
    try:
        for start in range(0, len(stream), size):
            frames += reader.feed(stream[start:start + size])
    except FrameError:
        pass
    for frame in frames:
        assert isinstance(frame.headers, dict) and isinstance(frame.body, bytes)
        try:
            headers = event_headers(frame)
        except FrameError:
            continue
        tracker.feed(headers)
    tracker.flush()
    # What greenswitch does with a header block, text as it decodes it.
    text = stream.decode("utf-8", "replace")
    event = FixedEvent(text)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in event.headers.items())


# -- numbers -----------------------------------------------------------------------------------

def check_numbers(data: bytes) -> None:
    region = REGIONS[data[0] % len(REGIONS)] if data else "UA"
    text = data[1:].decode("utf-8", "replace")
    try:
        number = normalize(text, region)
    except NotAClient as exc:
        assert "\n" not in str(exc)
        return
    assert _E164.fullmatch(number), number
    assert normalize(number, region) == number
    assert normalize(number, "US") == number


# -- CSV imports -------------------------------------------------------------------------------

class _Imports:
    """One in-memory store with agents, a group, bindings and calls; every input runs inside a
    transaction that is rolled back afterwards, so each starts from the same state."""

    def __init__(self) -> None:
        self.store = Store.open("sqlite:///:memory:")
        self.store.add_group("sales")
        for ext in sorted(AGENTS):
            self.store.add_agent(ext, f"Agent {ext}", groups=["sales"])
        t0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
        BindingPath(self.store).set_manual_binding("+380501234567", "1001", t0)
        self.service = Service(self.store, clock=lambda: t0)
        self.service.import_calls_csv(io.StringIO(
            "started_at,direction,client,agent,talk_seconds\n"
            "2024-04-30T10:00:00Z,inbound,0671112233,1002,40\n"
            "2024-04-30T11:00:00Z,outbound,0931234567,1003,0\n"))

    def state(self):
        return (self.store.list_bindings(), self.store.calls())


_imports: _Imports | None = None


def check_csv(data: bytes) -> None:
    global _imports
    if _imports is None:
        _imports = _Imports()
    which = data[:1] == b"b"
    text = data[1:].decode("utf-8", "replace")
    service, db = _imports.service, _imports.store.db
    with db.atomic() as outer:
        before = _imports.state()
        try:
            if which:
                service.import_bindings_csv(io.StringIO(text, newline=""))
            else:
                service.import_calls_csv(io.StringIO(text, newline=""))
        except ServiceError as exc:
            assert "\n" not in str(exc), str(exc)
            assert _imports.state() == before, "a refused import changed the store"
        outer.rollback()


# -- config ------------------------------------------------------------------------------------

def check_config(data: bytes) -> None:
    handle, path = tempfile.mkstemp(suffix=".toml")
    try:
        os.fchmod(handle, 0o600)
        os.write(handle, data)
        os.close(handle)
        try:
            config = load_config(path, environ={})
        except ConfigError as exc:
            assert "\n" not in str(exc), str(exc)
            return
        assert isinstance(config, Config)
        assert 0 < config.esl_port < 65536 and 0 < config.listen_port < 65536
        assert config.decision_budget > 0 and config.drain_timeout >= 0
    finally:
        os.unlink(path)


TARGETS = {"frames": check_frames, "numbers": check_numbers, "csv": check_csv, "config": check_config}
