"""Event Socket wire frames, as FreeSWITCH writes them.

A frame is a header block ("Name: value" lines, values url-encoded in events) ended by a blank
line, then Content-Length bytes of body. A text/event-plain body is itself a header block, and
may carry a body of its own. Used to replay recorded bytes and by the fake FreeSWITCH; the live
daemon reads through greenswitch.
"""
from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote


@dataclass
class Frame:
    headers: dict[str, str]
    body: bytes = b""

    @property
    def content_type(self) -> str | None:
        return self.headers.get("Content-Type")


class FrameError(ValueError):
    """Bytes that are not an Event Socket frame."""


def parse_headers(block: bytes, decode: bool = False) -> dict[str, str]:
    headers: dict[str, str] = {}
    for line in block.decode("utf-8", "replace").split("\n"):
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise FrameError(f"header line without ':': {line[:80]!r}")
        value = value.strip()
        headers[name.strip()] = unquote(value) if decode else value
    return headers


class FrameReader:
    """Feed bytes in any chunking; take whole frames out."""

    MAX_HEADER = 64 * 1024
    MAX_BODY = 16 * 1024 * 1024

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Frame]:
        self._buffer += data
        frames = []
        while True:
            frame = self._take()
            if frame is None:
                return frames
            frames.append(frame)

    def _take(self) -> Frame | None:
        buf = self._buffer
        # FreeSWITCH never sends leading blank lines, but a tolerant reader skips them.
        while buf[:1] == b"\n":
            del buf[:1]
        end = buf.find(b"\n\n")
        if end < 0:
            if len(buf) > self.MAX_HEADER:
                raise FrameError("header block too long")
            return None
        headers = parse_headers(bytes(buf[:end]))
        length_text = headers.get("Content-Length", "0")
        # isdigit() alone takes "²" (which int() refuses) and other scripts' digits.
        if not (length_text.isascii() and length_text.isdigit()) or int(length_text) > self.MAX_BODY:
            raise FrameError(f"bad Content-Length {length_text[:20]!r}")
        length = int(length_text)
        if len(buf) < end + 2 + length:
            return None
        body = bytes(buf[end + 2:end + 2 + length])
        del buf[:end + 2 + length]
        return Frame(headers, body)


def parse_stream(data: bytes) -> list[Frame]:
    reader = FrameReader()
    frames = reader.feed(data)
    if reader._buffer.strip():
        raise FrameError("trailing bytes that are not a whole frame")
    return frames


def event_headers(frame: Frame) -> dict[str, str]:
    """The decoded headers of a text/event-plain frame (plus '_body' when the event has one)."""
    block, _, rest = frame.body.partition(b"\n\n")
    headers = parse_headers(block, decode=True)
    if rest:
        headers["_body"] = rest.decode("utf-8", "replace")
    return headers
