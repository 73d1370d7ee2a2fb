"""Fuzzing what FreeSWITCH sends: event-socket frames, event headers, the call tracker.

Hypothesis, fast enough for every CI run. The invariants: FrameReader raises nothing but
FrameError whatever the bytes and however they are chunked; greenswitch's header parsing (with
fsrouter's fix) never turns one hostile value into extra headers; the call tracker takes any
mapping, or anything at all, without raising.
"""
from __future__ import annotations

from urllib.parse import unquote

import pytest
from captures import captures_dir
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from fsrouter.esl.events import CallTracker
from fsrouter.esl.frames import (
    Frame,
    FrameError,
    FrameReader,
    event_headers,
    parse_stream,
)
from fsrouter.esl.protocol import FixedEvent  # greenswitch's event, with the header fix the daemon has
from fsrouter.fakefs.wire import event_plain, fs_quote, split_raw_frames

FAST = hsettings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
AGENTS = frozenset({"1001", "1002", "1003", "1004"})

NAME = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=24)
# Any text but the two characters that delimit header lines on the wire.
VALUE = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\n"), max_size=40)
HOSTILE = st.one_of(
    st.text(max_size=60),
    st.sampled_from(["123%0AVariable-X: y", "1\nEvent-Name: CHANNEL_HANGUP", "a: b\n\nContent-Length: 5",
                     "%0A%0AContent-Type: auth/request", "x\r\nReply-Text: +OK accepted", "${system(id)}",
                     "\u2028Unique-ID: evil", "\x85Other: 1", "\x1cX: y", "%", "%%0A", "%0"]),
)


@st.composite
def frames(draw):
    headers = draw(st.dictionaries(NAME.filter(lambda n: n != "Content-Length"), VALUE, max_size=6))
    if not headers:
        headers = {"Content-Type": "text/event-plain"}
    body = draw(st.binary(max_size=200))
    return headers, body


def serialize(headers: dict[str, str], body: bytes) -> bytes:
    lines = "".join(f"{name}: {value}\n" for name, value in headers.items())
    if body:
        lines += f"Content-Length: {len(body)}\n"
    return (lines + "\n").encode("utf-8") + body


def expected_headers(headers: dict[str, str], body: bytes) -> dict[str, str]:
    out = {name: value.strip() for name, value in headers.items()}
    if body:
        out["Content-Length"] = str(len(body))
    return out


# -- FrameReader -------------------------------------------------------------------------------

@FAST
@given(st.lists(frames(), min_size=1, max_size=5), st.lists(st.integers(1, 64), min_size=1, max_size=30))
def test_frames_come_out_the_same_whatever_the_chunking(sent, sizes):
    stream = b"".join(serialize(h, b) for h, b in sent)
    reader, got, position, i = FrameReader(), [], 0, 0
    while position < len(stream):
        size = sizes[i % len(sizes)]
        got += reader.feed(stream[position:position + size])
        position += size
        i += 1
    assert [(f.headers, f.body) for f in got] == [(expected_headers(h, b), b) for h, b in sent]
    assert not reader._buffer


@FAST
@given(st.binary(max_size=600), st.lists(st.integers(1, 50), min_size=1, max_size=10))
def test_frame_reader_raises_only_frame_error_on_any_bytes(data, sizes):
    reader, position, i = FrameReader(), 0, 0
    try:
        while position < len(data):
            for frame in reader.feed(data[position:position + sizes[i % len(sizes)]]):
                assert isinstance(frame, Frame)
                try:
                    event_headers(frame)
                except FrameError:
                    pass
            position += sizes[i % len(sizes)]
            i += 1
    except FrameError:
        pass


LENGTHS = st.one_of(st.text(max_size=8), st.sampled_from(["\u00b2", "\u0661\u0662", "1_0", " 5", "+5", "-1",
                                                          "0x10", "99999999999999999999", "5 5"]))


@FAST
@given(LENGTHS, st.binary(max_size=20))
def test_any_content_length_text_is_a_frame_error_or_a_frame(length, rest):
    data = f"Content-Type: text/event-plain\nContent-Length: {length}\n\n".encode() + rest
    try:
        for frame in FrameReader().feed(data):
            assert len(frame.body) == int(frame.headers.get("Content-Length", "0"))
    except FrameError:
        pass


def test_a_header_block_without_end_is_bounded():
    reader = FrameReader()
    with pytest.raises(FrameError):
        for _ in range(200):
            reader.feed(b"X-Filler: " + b"a" * 1000 + b"\n")


@FAST
@given(st.binary(max_size=400))
def test_parse_stream_raises_only_frame_error(data):
    try:
        parse_stream(data)
    except FrameError:
        pass


# -- event headers and greenswitch's parser ----------------------------------------------------

# FreeSWITCH never writes an empty value (not one of the captures' header lines has one); a block
# whose last line is "Name:" would be read by greenswitch as a continuation of the line before.
@FAST
# Content-Length is the frame's own header (event_plain writes it for the body): as a generated
# name it came back once, not as the extra header the assertion looks for.
@given(st.dictionaries(NAME.filter(lambda n: n not in ("_body", "Content-Length")), HOSTILE.filter(bool),
                       min_size=1, max_size=6),
       st.text(max_size=30).map(str.encode))
def test_event_values_never_split_into_extra_headers(headers, body):
    """Encoded as FreeSWITCH encodes them, any values come back as the same header names, both
    through fsrouter's frame reader and through greenswitch's patched parser."""
    items = [("Event-Name", "CHANNEL_CREATE")] + [(k, v) for k, v in headers.items() if k != "Event-Name"]
    wire = event_plain(items, body)
    (frame,) = parse_stream(wire)
    decoded = event_headers(frame)
    names = {name for name, _ in items}
    assert set(decoded) - {"_body", "Content-Length"} == names
    # greenswitch reads the outer block by lines, then parses the body it read by length. It
    # reads an event's own body (after the blank line) as more header lines: CHANNEL events,
    # the only ones the listener subscribes to, never have one.
    event = FixedEvent(frame.body.partition(b"\n\n")[0].decode("utf-8"))
    assert set(event.headers) - {"Content-Length"} == names
    for name, value in items:
        # FreeSWITCH leaves an existing "%XX" alone, so such text decodes once more. The frame
        # reader strips the encoded value, greenswitch the decoded one.
        assert decoded[name] == unquote(fs_quote(value).strip())
        assert event.headers[name] == unquote(fs_quote(value)).strip()


@FAST
@given(st.text(max_size=300))
def test_greenswitch_parser_never_raises(text):
    event = FixedEvent(text)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in event.headers.items())


# -- the call tracker --------------------------------------------------------------------------

ANY_VALUE = st.one_of(st.text(max_size=20), st.none(), st.integers(), st.floats(), st.binary(max_size=5),
                      st.lists(st.integers(), max_size=2))
KNOWN = ["Event-Name", "Unique-ID", "Call-Direction", "Channel-Name", "Caller-Caller-ID-Number",
         "Caller-Destination-Number", "Caller-Channel-Created-Time", "Caller-Channel-Answered-Time",
         "Caller-Channel-Hangup-Time", "Event-Date-Timestamp", "Event-Sequence", "Other-Leg-Unique-ID",
         "Bridge-A-Unique-ID", "Bridge-B-Unique-ID", "variable_originator", "variable_dialed_user",
         "variable_dialed_extension", "variable_fsrouter_group", "variable_fsrouter_route",
         "variable_user_name", "Caller-Username", "variable_billsec", "variable_originate_disposition"]
EVENT = st.dictionaries(st.one_of(st.sampled_from(KNOWN), st.text(max_size=10)), ANY_VALUE, max_size=12)


@FAST
@given(st.lists(st.one_of(EVENT, st.none(), st.integers(), st.text(max_size=5), st.lists(st.text(), max_size=2)),
                max_size=30))
def test_call_tracker_takes_anything_without_raising(stream):
    tracker = CallTracker(agents=AGENTS, region="UA", max_open=4)
    for headers in stream:
        tracker.feed(headers)
    tracker.flush()
    assert tracker.stats.open <= 4


def _captured_events() -> list[dict]:
    events = []
    for path in sorted(captures_dir().glob("*inbound-view.fs-to-client.raw"))[:3]:
        for frame, _ in split_raw_frames(path.read_bytes()):
            if frame.content_type == "text/event-plain":
                events.append(event_headers(frame))
    return events


@pytest.fixture(scope="module")
def captured():
    return _captured_events()


@FAST
@given(data=st.data())
def test_call_tracker_on_real_events_with_hostile_values(captured, data):
    assert len(captured) > 40
    start = data.draw(st.integers(0, max(0, len(captured) - 40)))
    events = [dict(e) for e in captured[start:start + 40]]
    for _ in range(data.draw(st.integers(0, 6))):
        event = data.draw(st.sampled_from(events))
        event[data.draw(st.sampled_from(KNOWN))] = data.draw(st.one_of(HOSTILE, ANY_VALUE))
    tracker = CallTracker(agents=AGENTS | {"gw+a1001"}, region="UA")
    calls = [c for e in events for c in tracker.feed(e)] + tracker.flush()
    for call in calls:
        assert call.client.startswith("+") and call.client[1:].isdigit()
        assert call.talk_seconds >= 0
