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
"""
from __future__ import annotations

import codecs
from urllib.parse import unquote

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

