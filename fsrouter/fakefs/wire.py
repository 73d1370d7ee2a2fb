"""The bytes of the Event Socket as FreeSWITCH writes them, for the fake's side of the wire.

fsrouter.esl.frames reads frames; this module writes FreeSWITCH's own encoding, which differs
from Python's quote(): FreeSWITCH escapes only the characters in SWITCH_URL_UNSAFE, control
bytes and bytes above '~' (so ',', '/', '(', ')', "'" and '~' stay as they are, as in every
capture), and it leaves an existing "%XX" alone instead of encoding the '%' again.
"""
from __future__ import annotations

import json
import re
from collections.abc import Iterable

from fsrouter.esl.frames import Frame, parse_headers

# SWITCH_URL_UNSAFE, control characters and anything above '~'; a '%' only when it does not
# already start an upper-case "%XX".
_UNSAFE = re.compile(r'[\x00-\x1f\x7f-\U0010ffff\r\n #&+:;<=>?@\[\\\]^`{|}"]|%(?![0-9A-F]{2})')

GOODBYE = b"Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n"


def _escape(match: re.Match) -> str:
    return "".join(f"%{byte:02X}" for byte in match.group(0).encode("utf-8"))


def fs_quote(value: str) -> str:
    """switch_url_encode(): what FreeSWITCH does to every header value of a plain event."""
    return _UNSAFE.sub(_escape, value)


def event_plain(headers: Iterable[tuple[str, str]], body: bytes = b"") -> bytes:
    """A text/event-plain frame: the outer length first, the blank line counted in it; an event
    with a body of its own (BACKGROUND_JOB) carries an inner Content-Length last and no
    trailing blank line after the body."""
    lines = [f"{name}: {fs_quote(str(value))}\n" for name, value in headers]
    if body:
        lines.append(f"Content-Length: {len(body)}\n")
    inner = ("".join(lines) + "\n").encode("utf-8") + body
    return b"Content-Length: %d\nContent-Type: text/event-plain\n\n" % len(inner) + inner


def plain_line(name: str, value: str) -> str:
    """One header of a text/event-plain body (switch_event_serialize)."""
    return f"{name}: {fs_quote(value)}\n"


_json_string = _json_list = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def json_member(name: str, value: str) -> str:
    """One header of a text/event-json body. cJSON_PrintUnformatted writes `"name":"value"` with
    no space; it escapes '"', '\\', and control characters (\\n, \\u001f in lower-case hex, as
    Python's json does), and writes every other character as its UTF-8 bytes (set-b capture 08).
    A value "ARRAY::a|:b" is an array header in FreeSWITCH (switch_event_base_add_header), which
    JSON writes as a list: a caller can name itself so."""
    if value.startswith("ARRAY::") and "|:" in value:
        return f"{_json_string(name)}:{_json_list(value[7:].split('|:'))}"
    return f"{_json_string(name)}:{_json_string(value)}"


def json_frame(obj: bytes) -> bytes:
    """A text/event-json frame: the outer length first, the object with nothing after it."""
    return b"Content-Length: %d\nContent-Type: text/event-json\n\n" % len(obj) + obj


def event_json(headers: Iterable[tuple[str, str]], body: bytes = b"") -> bytes:
    """The same event as event_plain, subscribed with `event json`: an event with a body of its
    own carries "Content-Length" (a string) and "_body" as its last members
    (switch_event_serialize_json_obj)."""
    members = [json_member(name, str(value)) for name, value in headers]
    if body:
        text = body.decode("utf-8")
        members += [json_member("Content-Length", str(len(body))), json_member("_body", text)]
    return json_frame(("{" + ",".join(members) + "}").encode("utf-8"))


def auth_request() -> bytes:
    return b"Content-Type: auth/request\n\n"


def command_reply(text: str, *extra: tuple[str, str]) -> bytes:
    lines = "".join(f"{k}: {v}\n" for k, v in extra)
    return f"Content-Type: command/reply\nReply-Text: {text}\n{lines}\n".encode()


def api_response(body: str | bytes) -> bytes:
    data = body.encode("utf-8") if isinstance(body, str) else body
    return b"Content-Type: api/response\nContent-Length: %d\n\n" % len(data) + data


def disconnect_notice(session_uuid: str | None = None) -> bytes:
    """After `exit` or a refused `auth`; an outbound session names its channel."""
    head = "Content-Type: text/disconnect-notice\n"
    if session_uuid:
        head += f"Controlled-Session-UUID: {session_uuid}\nContent-Disposition: disconnect\n"
    return (head + f"Content-Length: {len(GOODBYE)}\n\n").encode() + GOODBYE


def linger_notice(session_uuid: str, channel_name: str) -> bytes:
    """What a lingering outbound socket gets when its channel hangs up (Linger-Time -1: for ever)."""
    return (f"Content-Type: text/disconnect-notice\nControlled-Session-UUID: {session_uuid}\n"
            f"Content-Disposition: linger\nChannel-Name: {channel_name}\nLinger-Time: -1\n"
            f"Content-Length: 0\n\n").encode()


def header_block(headers: Iterable[tuple[str, str]]) -> bytes:
    """One header block with url-encoded values and no body: the reply to `connect`."""
    return ("".join(f"{name}: {fs_quote(str(value))}\n" for name, value in headers) + "\n").encode("utf-8")


class Command:
    """One command from a client: its first line, its header lines, its body, and the raw bytes."""

    __slots__ = ("body", "headers", "line", "raw", "received_at")

    def __init__(self, line: str, headers: dict[str, str], body: bytes, raw: bytes, received_at: float):
        self.line, self.headers, self.body, self.raw, self.received_at = line, headers, body, raw, received_at

    @property
    def name(self) -> str:
        return self.line.split(" ", 1)[0].lower() if self.line else ""

    @property
    def arg(self) -> str:
        return self.line.split(" ", 1)[1] if " " in self.line else ""

    def __repr__(self) -> str:
        return f"Command({self.line!r}, {self.headers!r})"


class CommandReader:
    """Splits what a client sends into commands: a first line, optional `Name: value` lines, a
    blank line, then Content-Length bytes when given (sendmsg may carry a body)."""

    MAX = 1024 * 1024

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes, now: float) -> list[Command]:
        self._buf += data
        out = []
        while True:
            # Clients sometimes send "\r\n"; FreeSWITCH tolerates it, so does the fake.
            while self._buf[:1] in (b"\n", b"\r"):
                del self._buf[:1]
            end = self._buf.find(b"\n\n")
            alt = self._buf.find(b"\r\n\r\n")
            if alt >= 0 and (end < 0 or alt < end):
                end, sep = alt, 4
            else:
                sep = 2
            if end < 0:
                if len(self._buf) > self.MAX:
                    raise ValueError("command too long")
                return out
            block = bytes(self._buf[:end]).replace(b"\r\n", b"\n")
            first, _, rest = block.partition(b"\n")
            try:
                headers = parse_headers(rest) if rest else {}
            except ValueError:
                headers = {}
            length_text = headers.get("Content-Length", "0")
            length = int(length_text) if length_text.isdigit() else 0
            if len(self._buf) < end + sep + length:
                return out
            body = bytes(self._buf[end + sep:end + sep + length])
            raw = bytes(self._buf[:end + sep + length])
            del self._buf[:end + sep + length]
            out.append(Command(first.decode("utf-8", "replace").strip(), headers, body, raw, now))


def split_raw_frames(data: bytes) -> list[tuple[Frame, bytes]]:
    """Every frame of a recording with its exact bytes, so a replay can send them verbatim."""
    out = []
    pos = 0
    while pos < len(data):
        end = data.find(b"\n\n", pos)
        if end < 0:
            raise ValueError(f"trailing bytes at offset {pos}")
        headers = parse_headers(data[pos:end])
        length = int(headers.get("Content-Length", "0"))
        # The reply to `connect` has no Content-Length; neither do command replies.
        stop = end + 2 + length
        out.append((Frame(headers, data[end + 2:stop]), data[pos:stop]))
        pos = stop
    return out
