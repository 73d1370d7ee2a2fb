"""The listener reads `event json` (it subscribes so): the same events must teach the tracker exactly
what their plain form teaches, and a JSON body that is not FreeSWITCH's event ends the stream as an
unreadable plain frame does.

Events go through the listener's own reader (esl.protocol.FixedProtocol: greenswitch's frame loop,
FixedEvent for plain, headers.json_headers for JSON) fed from bytes. The JSON form of a plain
capture is what FreeSWITCH sends for it with `event json` (fakefs.wire.event_json; its bytes are
checked against set-b capture 08 in test_fakefs).
"""
from __future__ import annotations

import io
from pathlib import Path
from urllib.parse import unquote

import pytest
from captures import captures_dir
from structlog.testing import capture_logs
from test_events_replay import AGENTS, REGION, SIP_CASES, expected_cases, learned_bindings, summary

from fsrouter.core import live
from fsrouter.esl.events import CallTracker
from fsrouter.esl.headers import NotAnEvent, header_text, json_headers
from fsrouter.esl.inbound import CHANNEL_KINDS
from fsrouter.esl.protocol import InboundConnection
from fsrouter.fakefs.wire import event_json, event_plain, json_frame, split_raw_frames

SET_B_JSON = "set-b-independent-build/08-inbound-event-json.fs-to-client.raw"
# Caller IDs that differ between the two forms if anything downstream assumed plain's decoding
# and strip: spaces around (%20 in plain), a line break (%0A), an encoded-looking text, a header
# FreeSWITCH turns into an array (a value starting "ARRAY::"), a non-ASCII name.
HOSTILE_CALLERS = [" +380671112233 ", "1003\nVariable-X: y", "\t1001", "ARRAY::1001|:1002", "Олена ☎"]


class _Socket:
    def close(self) -> None:
        pass


def listener_reads(stream: bytes) -> tuple[list[dict], InboundConnection]:
    """The header dicts the listener's connection puts on its queue for these frames."""
    conn = InboundConnection("127.0.0.1", 0, "ClueCon")
    conn.sock, conn.sock_file, conn.connected = _Socket(), io.BytesIO(stream), True
    conn.receive_events()
    events = []
    while not conn._esl_event_queue.empty():
        events.append(conn._esl_event_queue.get())
    return [event.headers for event in events], conn


def event_frames(path: Path) -> list[bytes]:
    """The raw event frames of a capture (plain or JSON), without replies."""
    return [raw for frame, raw in split_raw_frames(path.read_bytes())
            if frame.content_type in ("text/event-plain", "text/event-json")]


def as_json(plain_frame: bytes) -> bytes:
    """The same event as FreeSWITCH sends it to a listener subscribed with `event json`."""
    frame = split_raw_frames(plain_frame)[0][0]
    block, _, body = frame.body.partition(b"\n\n")
    pairs = [(name, unquote(value)) for name, _, value in
             (line.partition(": ") for line in block.decode().split("\n")) if name and name != "Content-Length"]
    return event_json(pairs, body)


def with_caller(plain_frame: bytes, caller: str) -> bytes:
    """A plain event frame whose caller ID (every header naming it) is `caller`."""
    frame = split_raw_frames(plain_frame)[0][0]
    block, _, body = frame.body.partition(b"\n\n")
    pairs = []
    for name, _, value in (line.partition(": ") for line in block.decode().split("\n")):
        if not name or name == "Content-Length":
            continue
        if name in ("Caller-Caller-ID-Number", "Caller-Orig-Caller-ID-Number", "Caller-ANI", "Caller-Username",
                    "variable_sip_from_user"):
            value = caller
        pairs.append((name, unquote(value)))
    return event_plain(pairs, body)


def comparable(headers: dict) -> dict:
    """An event's headers as the listener's readers take them (header_text: stripped), but the
    frame's (Content-Type names the form; a plain body's Content-Length is the outer one unless
    the event has a body of its own) and an event's own body: JSON carries it as _body, the plain
    reader folds it into the inner Content-Length line."""
    return {k: header_text(headers, k) for k in headers if k not in ("Content-Type", "Content-Length", "_body")}


def track(events: list[dict]) -> tuple[list, list, CallTracker]:
    transitions: list[live.Transition] = []
    tracker = CallTracker(agents=lambda: AGENTS, region=REGION, on_transition=transitions.append)
    kinds = set(CHANNEL_KINDS.split())
    calls = [call for headers in events if headers.get("Event-Name") in kinds for call in tracker.feed(headers)]
    calls += tracker.flush()
    return sorted(calls, key=lambda c: (c.started_at, c.uuid)), transitions, tracker


def _inbound_captures() -> list[str]:
    root = captures_dir()
    names = [p.name for p in sorted(root.glob("*.fs-to-client.raw"))]
    names += [f"set-b-independent-build/{p.name}" for p in sorted(root.glob("set-b-*/*.fs-to-client.raw"))]
    return [n for n in names if any(b"text/event-plain" in raw for raw in event_frames(root / n))]


# -- the same headers ------------------------------------------------------------------------------------
def test_every_recorded_event_reads_the_same_in_both_forms():
    count = 0
    for name in _inbound_captures():
        plain = event_frames(captures_dir() / name)
        plain = [raw for raw in plain if b"text/event-plain" in raw[:60]]
        by_plain, _ = listener_reads(b"".join(plain))
        by_json, conn = listener_reads(b"".join(as_json(raw) for raw in plain))
        assert conn.stream_error is None
        assert len(by_json) == len(by_plain) == len(plain), name
        for p, j in zip(by_plain, by_json):
            assert j["Content-Type"] == "text/event-json" and p["Content-Type"] == "text/event-plain"
            if p.get("Event-Name") == "BACKGROUND_JOB":
                assert j["_body"].strip() and j["_body"].strip() in p["Content-Length"]
            assert comparable(j) == comparable(p), f"{name}: {p.get('Event-Name')}"
            count += 1
    assert count > 700


@pytest.mark.parametrize("caller", HOSTILE_CALLERS)
def test_a_hostile_caller_id_reads_the_same_in_both_forms(caller):
    plain = [with_caller(raw, caller) for raw in
             event_frames(captures_dir() / "08-sip-call-sticky-timeout-then-group-inbound-view.fs-to-client.raw")]
    by_plain, _ = listener_reads(b"".join(plain))
    by_json, conn = listener_reads(b"".join(as_json(raw) for raw in plain))
    assert conn.stream_error is None and len(by_json) == len(by_plain) == len(plain)
    creates = [h for h in by_json if h.get("Event-Name") == "CHANNEL_CREATE"]
    # One value, read stripped as plain's is; an array header reads as plain writes it.
    assert header_text(creates[0], "Caller-Caller-ID-Number") == caller.strip()
    assert "Variable-X" not in creates[0]
    assert [comparable(h) for h in by_json] == [comparable(h) for h in by_plain]


# -- the same calls, bindings, transfers and story ---------------------------------------------------------
@pytest.mark.parametrize("case", SIP_CASES)
def test_the_json_form_of_a_capture_teaches_exactly_what_its_plain_form_does(case):
    plain = event_frames(captures_dir() / f"{case}.fs-to-client.raw")
    by_plain, _ = listener_reads(b"".join(plain))
    by_json, _ = listener_reads(b"".join(as_json(raw) for raw in plain))
    plain_calls, plain_story, plain_tracker = track(by_plain)
    json_calls, json_story, json_tracker = track(by_json)
    assert [summary(c) for c in json_calls] == expected_cases()[case]["calls"]
    assert learned_bindings(json_calls) == learned_bindings(plain_calls) == expected_cases()[case]["bindings"]
    assert json_calls == plain_calls  # every field: segments, handled_by (transfers), times, route
    assert json_story == plain_story
    assert json_tracker.stats == plain_tracker.stats


@pytest.mark.parametrize("caller", HOSTILE_CALLERS)
def test_a_hostile_caller_id_teaches_the_same_in_both_forms(caller):
    for case in ("08-sip-call-sticky-timeout-then-group-inbound-view", "13b-sip-attended-transfer-att-xfer-inbound-view"):
        plain = [with_caller(raw, caller) for raw in event_frames(captures_dir() / f"{case}.fs-to-client.raw")]
        by_plain, _ = listener_reads(b"".join(plain))
        by_json, _ = listener_reads(b"".join(as_json(raw) for raw in plain))
        plain_calls, plain_story, _ = track(by_plain)
        json_calls, json_story, _ = track(by_json)
        assert json_calls == plain_calls and json_story == plain_story, case


def test_set_b_08_recorded_with_event_json_reads_through_the_listener():
    """The only bytes a real FreeSWITCH sent with `event json`: every event is read, its values as
    recorded (the BACKGROUND_JOB's result in _body, its Content-Length a string)."""
    import json
    frames = event_frames(captures_dir() / SET_B_JSON)
    events, conn = listener_reads(b"".join(frames))
    assert conn.stream_error is None and len(events) == len(frames) == 7
    for headers, raw in zip(events, frames):
        recorded = json.loads(raw.partition(b"\n\n")[2])
        assert comparable(headers) == {k: v.strip() for k, v in recorded.items() if k not in ("Content-Length", "_body")}
    job = next(h for h in events if h["Event-Name"] == "BACKGROUND_JOB")
    assert job["_body"] == "-ERR NO_ANSWER\n" and job["Content-Length"] == "15"  # as recorded
    hangups = [h for h in events if h["Event-Name"] == "CHANNEL_HANGUP_COMPLETE"]
    assert [h["Hangup-Cause"] for h in hangups] == ["NO_ANSWER", "NO_ANSWER"]  # sent twice, read once
    # Loopback legs, so nothing to record; followed anyway, they make no call (as in plain).
    tracker = CallTracker(agents=AGENTS, region=REGION, ignore_channels=())
    assert [c for h in events for c in tracker.feed(h)] + tracker.flush() == []
    assert tracker.stats.malformed == 0


# -- what is not FreeSWITCH's event -----------------------------------------------------------------------
NOT_EVENTS = {
    "not_json": b'{"Event-Name":"CHANNEL_CREATE",',
    "array": b'["CHANNEL_CREATE"]',
    "string": b'"CHANNEL_CREATE"',
    "number_value": b'{"Event-Name":"CHANNEL_CREATE","Event-Sequence":7}',
    "null_value": b'{"Event-Name":"CHANNEL_CREATE","Unique-ID":null}',
    "object_value": b'{"Event-Name":"CHANNEL_CREATE","Caller-Caller-ID-Number":{"x":"1"}}',
    "list_of_numbers": b'{"Event-Name":"CHANNEL_CREATE","variable_x":[1,2]}',
    "empty_list": b'{"Event-Name":"CHANNEL_CREATE","variable_x":[]}',
    "nan": b'{"Event-Name":"CHANNEL_CREATE","Event-Sequence":NaN}',
    "deep": b"[" * 100_000 + b"]" * 100_000,
}
GOOD = event_json([("Event-Name", "HEARTBEAT"), ("Event-Sequence", "9")])


@pytest.mark.parametrize("kind", sorted(NOT_EVENTS))
def test_a_json_body_that_is_not_an_event_ends_the_stream_with_one_warning(kind):
    with capture_logs() as logs:
        events, conn = listener_reads(GOOD + json_frame(NOT_EVENTS[kind]) + GOOD)
    assert [h["Event-Name"] for h in events] == ["HEARTBEAT"]  # nothing after it is read
    assert conn.stream_error == "NotAnEvent" and not conn.connected
    assert [entry["event"] for entry in logs] == ["esl.unreadable_frame"]
    assert logs[0]["log_level"] == "warning"


def test_a_json_frame_cut_short_or_with_a_bad_length_ends_the_stream():
    for frame, error in ((json_frame(b'{"Event-Name":"HEARTBEAT"}')[:-3], "StreamCut"),
                         (b"Content-Length: x\nContent-Type: text/event-json\n\n{}", "ValueError")):
        events, conn = listener_reads(GOOD + frame)
        assert len(events) == 1 and conn.stream_error == error


def test_bytes_that_are_not_utf8_read_as_the_plain_form_reads_them():
    """FreeSWITCH writes a JSON value's bytes as it got them; plain url-encodes them (%FF)."""
    plain = event_plain([("Event-Name", "CHANNEL_CREATE"), ("Caller-Caller-ID-Name", "caf?")]).replace(b"%3F", b"%FF")
    as_json_bytes = json_frame(b'{"Event-Name":"CHANNEL_CREATE","Caller-Caller-ID-Name":"caf\xff"}')
    (by_plain,), _ = listener_reads(plain)
    (by_json,), conn = listener_reads(as_json_bytes)
    assert conn.stream_error is None
    assert by_json["Caller-Caller-ID-Name"] == by_plain["Caller-Caller-ID-Name"] == "caf\ufffd"


def test_json_headers_alone():
    assert json_headers('{"a":" x ","b":["1"],"c":["1","2"]}') == {"a": " x ", "b": "1", "c": "ARRAY::1|:2"}
    assert header_text(json_headers('{"a":" x "}'), "a") == "x" and header_text({"a": ["1"]}, "a") == ""
    with pytest.raises(NotAnEvent):
        json_headers("[]")


def test_json_headers_reads_what_orjson_refuses_as_json_does():
    """orjson parses the events; an escaped lone surrogate (valid JSON, which cJSON never writes)
    it refuses, and json reads it: the listener reads every body json would, and no other."""
    body = '{"Event-Name":"CHANNEL_CREATE","Caller-Caller-ID-Name":"a\\ud800b"}'
    assert json_headers(body) == {"Event-Name": "CHANNEL_CREATE", "Caller-Caller-ID-Name": "a\ud800b"}
