"""A fix to greenswitch's header parsing (esl.protocol.FixedEvent uses it).

greenswitch url-decodes a whole header block before splitting it into lines, so a caller ID of
"123%0AVariable-X: y" becomes a header of its own. FreeSWITCH encodes each value separately, so
the block must be split first and each value decoded after: then a hostile caller ID stays one
(odd) value that number normalisation refuses.

Speed: a CHANNEL event is 5-10 KB of 130-250 headers and the daemon reads two dozen per call, so
decoding is its hottest loop. The values of a block are decoded in one pass of C code (joined
with NUL, '%' turned into '\\x', codecs.escape_decode, then UTF-8); a block that does not fit
that path (a line without ": ", a stray '%', a raw non-ASCII byte, a decoded NUL, bad UTF-8)
takes the line-by-line path, which gives the same headers for every block.

json_headers reads the same event subscribed with `event json` (see its doc).
"""
from __future__ import annotations

import codecs
import json
from collections.abc import Mapping
from urllib.parse import unquote

import orjson

_escape_decode = codecs.escape_decode


def parse_headers(data: str) -> dict[str, str]:
    """A header block (name: url-encoded value, one per line) as a dict of decoded values."""
    pairs = [line.partition(": ") for line in data.strip().splitlines()]
    for _name, sep, _value in pairs:
        if not sep:
            return _parse_lines(data)
    values = "\x00".join([value for _name, _sep, value in pairs])
    if "%" in values:
        try:
            raw = values.replace("\\", "\\\\").replace("%", "\\x").encode("ascii")
            decoded = _escape_decode(raw)[0].decode("utf-8").split("\x00")
        except (UnicodeError, ValueError):
            return _parse_lines(data)
    else:
        decoded = values.split("\x00")
    if len(decoded) != len(pairs):  # a value held a NUL (raw or encoded)
        return _parse_lines(data)
    return {name.strip(): value.strip() for (name, _sep, _raw), value in zip(pairs, decoded)}


def _parse_lines(data: str) -> dict[str, str]:
    headers: dict[str, str] = {}
    last_key = None
    for line in data.strip().splitlines():
        name, sep, value = line.partition(": ")
        if sep:
            last_key = name.strip()
            headers[last_key] = unquote(value).strip()
        elif last_key is not None and line:
            headers[last_key] += "\n" + unquote(line)
    return headers



class NotAnEvent(ValueError):
    """A text/event-json body that is not FreeSWITCH's event object."""


def header_text(headers: Mapping, name: str) -> str:
    """One header's value as the listener's readers (the call tracker, presence) take it: a
    string, stripped, "" when absent or not a string. The strip is here, on the few headers read,
    rather than on every value of every event: the plain form's values come stripped already
    (parse_headers), the JSON form's as FreeSWITCH wrote them (json_headers)."""
    value = headers.get(name)
    return value.strip() if isinstance(value, str) else ""


def json_headers(body: str) -> dict[str, str]:
    """A text/event-json body as the headers dict the listener's readers take (header_text).

    FreeSWITCH (switch_event_serialize_json) writes an event as one object, its headers in order,
    every value a string, the event's own body under "_body" after a string "Content-Length"
    (set-b capture 08). Values are kept as written: header_text strips the ones read, so that a
    caller ID with a leading space (%20 in plain) reads the same in both forms.

    A header FreeSWITCH keeps as an array is a JSON list (switch_event_serialize_json_obj): the
    dialplan's variable_DP_MATCH on the events of every channel it routed ("ARRAY::1001|:1001"
    in plain, captures 01-09), and any value that starts with "ARRAY::", as a caller's display
    name can. It becomes the string the plain form carries (a single value alone, as
    switch_event_base_add_header writes it). Anything else that is not a string, and a body that
    is not one JSON object, raises NotAnEvent: the frame cannot be read.

    Speed (bench/event_parse.py: the fake's CHANNEL events of 300 routed calls, 2,400 events of
    ~8.8 KB and ~200 headers, best of 5, 3 runs on the shared 2-core machine): the body alone
    66-76 µs here against 100-152 µs for parse_headers when every value was stripped here; whole
    frames through the listener's reader, 85-92 µs against 121-134 µs. The JSON parse is orjson's:
    json.loads was 18% of the daemon's samples in the blast with the live stream on (py-spy), and
    orjson.loads takes 37 µs of an event where json.loads took 81 (the fake's events of 150 calls,
    best of 7). What orjson refuses and json takes (an escaped lone surrogate, which FreeSWITCH's
    cJSON never writes) is left to json, so the two read the same. Stripping every value in a
    pass of Python was 18-25 µs more per event, the type check that replaces it 8-12 µs (process
    time, 800 of the fake's events, best of 20, 4 runs); that pass was 9% of the daemon's samples
    in the ingestion blast (py-spy).
    """
    try:
        event = orjson.loads(body)
    except ValueError:  # orjson refuses what json takes (an escaped lone surrogate): json decides
        try:
            event = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise NotAnEvent(f"not JSON: {exc}") from None
    if not isinstance(event, dict):
        raise NotAnEvent(f"a JSON {type(event).__name__}, not an object")
    if set(map(type, event.values())) <= _ONLY_STRINGS:  # in C: most events
        return event
    # An array (DP_MATCH: most real channels' events) takes the call, not an exception.
    return {name: value if value.__class__ is str else _plain_value(name, value)
            for name, value in event.items()}


_ONLY_STRINGS = frozenset({str})


def _plain_value(name: str, value) -> str:
    if isinstance(value, list) and value and all(isinstance(item, str) for item in value):
        # switch_event_base_add_header: one value alone, more as "ARRAY::" joined by "|:".
        return value[0] if len(value) == 1 else "ARRAY::" + "|:".join(value)
    raise NotAnEvent(f"header {name[:60]!r} holds a JSON {type(value).__name__}")
