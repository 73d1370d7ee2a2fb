"""The daemon's log lines (fsrouter/logs.py): JSON for journald, one renderer for fsrouter's own
lines and for what greenswitch and peewee log through the stdlib."""
from __future__ import annotations

import io
import json
import logging

import pytest
import structlog

from fsrouter.logs import configure_logging


@pytest.fixture
def lines():
    stream = io.StringIO()
    yield stream
    configure_logging("json", "info", stream=io.StringIO())  # leave no test's stream behind


def read(stream) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_line_is_one_json_object_with_its_fields_level_logger_and_utc_time(lines):
    configure_logging("json", "info", stream=lines)
    structlog.get_logger("fsrouter.daemon").info("call.recorded", uuid="u-1", client="+380671234567")
    (line,) = read(lines)
    assert line["event"] == "call.recorded" and line["uuid"] == "u-1" and line["client"] == "+380671234567"
    assert line["level"] == "info" and line["logger"] == "fsrouter.daemon" and line["timestamp"].endswith("Z")


def test_lines_below_the_level_are_not_written(lines):
    configure_logging("json", "warning", stream=lines)
    log = structlog.get_logger("fsrouter.listener")
    log.info("listener.connected")
    log.warning("events.loss_window", window=1)
    assert [line["event"] for line in read(lines)] == ["events.loss_window"]


def test_an_exception_is_written_in_its_line(lines):
    configure_logging("json", "info", stream=lines)
    try:
        raise ValueError("bad frame")
    except ValueError:
        structlog.get_logger("fsrouter.listener").exception("listener.event_error")
    (line,) = read(lines)
    assert line["level"] == "error" and "ValueError: bad frame" in line["exception"]


def test_greenswitch_warnings_share_the_renderer_and_its_info_lines_are_quiet(lines):
    configure_logging("json", "info", stream=lines)
    logger = logging.getLogger("greenswitch.esl")
    record = logger.makeRecord("greenswitch.esl", logging.INFO, "/x/greenswitch/esl.py", 1, "call started", (), None)
    logger.handle(record)
    logging.getLogger("greenswitch").warning("socket closed: %s", "peer")
    (line,) = read(lines)
    assert line == {**line, "event": "socket closed: peer", "level": "warning", "logger": "greenswitch"}
