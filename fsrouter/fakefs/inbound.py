"""The inbound event socket (FreeSWITCH's port 8021) that fsrouter's listener connects to.

Replies are the recorded ones (set-b 06; 08 for `event json`): `-ERR command not found` before
auth, `-ERR invalid` then a disconnect notice and a closed socket for a wrong password, `-ERR no
keywords supplied` for `event plain` with no event FreeSWITCH knows. Events go only to
connections subscribed to their name (or ALL), through the bus, as plain or JSON frames. A
connection can instead be given a recording to replay: after it has authenticated and
subscribed, it receives the recording's event frames verbatim.
"""
from __future__ import annotations

import time
import uuid as uuidlib
from dataclasses import dataclass, field
from pathlib import Path

import gevent
from gevent.event import Event
from gevent.queue import Queue
from gevent.server import StreamServer

from .bus import Subscriber
from .wire import (
    Command,
    CommandReader,
    api_response,
    auth_request,
    command_reply,
    disconnect_notice,
    json_frame,
    split_raw_frames,
)

EVENT_NAMES = {
    "CUSTOM", "CLONE", "CHANNEL_CREATE", "CHANNEL_DESTROY", "CHANNEL_STATE", "CHANNEL_CALLSTATE",
    "CHANNEL_ANSWER", "CHANNEL_HANGUP", "CHANNEL_HANGUP_COMPLETE", "CHANNEL_EXECUTE",
    "CHANNEL_EXECUTE_COMPLETE", "CHANNEL_HOLD", "CHANNEL_UNHOLD", "CHANNEL_BRIDGE", "CHANNEL_UNBRIDGE",
    "CHANNEL_PROGRESS", "CHANNEL_PROGRESS_MEDIA", "CHANNEL_OUTGOING", "CHANNEL_PARK", "CHANNEL_UNPARK",
    "CHANNEL_APPLICATION", "CHANNEL_ORIGINATE", "CHANNEL_UUID", "API", "LOG", "INBOUND_CHAN",
    "OUTBOUND_CHAN", "STARTUP", "SHUTDOWN", "PUBLISH", "UNPUBLISH", "TALK", "NOTALK", "SESSION_CRASH",
    "MODULE_LOAD", "MODULE_UNLOAD", "DTMF", "MESSAGE", "PRESENCE_IN", "NOTIFY_IN", "PRESENCE_OUT",
    "PRESENCE_PROBE", "MESSAGE_WAITING", "MESSAGE_QUERY", "ROSTER", "CODEC", "BACKGROUND_JOB",
    "DETECTED_SPEECH", "DETECTED_TONE", "PRIVATE_COMMAND", "HEARTBEAT", "TRAP", "ADD_SCHEDULE",
    "DEL_SCHEDULE", "EXE_SCHEDULE", "RE_SCHEDULE", "RELOADXML", "NOTIFY", "PHONE_FEATURE",
    "PHONE_FEATURE_SUBSCRIBE", "SEND_MESSAGE", "RECV_MESSAGE", "REQUEST_PARAMS", "CHANNEL_DATA",
    "GENERAL", "COMMAND", "SESSION_HEARTBEAT", "CLIENT_DISCONNECTED", "SERVER_DISCONNECTED",
    "SEND_INFO", "RECV_INFO", "RECV_RTCP_MESSAGE", "CALL_SECURE", "NAT", "RECORD_START", "RECORD_STOP",
    "PLAYBACK_START", "PLAYBACK_STOP", "CALL_UPDATE", "FAILURE", "SOCKET_DATA", "MEDIA_BUG_START",
    "MEDIA_BUG_STOP", "CONFERENCE_DATA_QUERY", "CONFERENCE_DATA", "CALL_SETUP_REQ", "CALL_SETUP_RESULT",
    "CALL_DETAIL", "DEVICE_STATE", "TEXT", "SHUTDOWN_REQUESTED", "ALL",
}

# Frames a test can push at a listener to see that it survives them.
MALFORMED = {
    "garbage": (b"Content-Length: 43\nContent-Type: text/event-plain\n\n"
                b"this line has no colon\nEvent-Name CHANNEL\n\n"),
    "no_event_name": b"Content-Length: 23\nContent-Type: text/event-plain\n\nUnique-ID: not-a-uuid\n\n",
    "unknown_type": b"Content-Type: text/unknown-thing\nContent-Length: 5\n\nhello",
    "bad_length": b"Content-Type: text/event-plain\nContent-Length: abc\n\n",
    "json_garbage": json_frame(b'{"Event-Name":'),
    "json_number_value": json_frame(b'{"Event-Name":"CHANNEL_CREATE","Unique-ID":7}'),
}


@dataclass
class Replay:
    """A recording waiting for (or being sent to) the next connection that subscribes."""
    path: Path
    frames: list[bytes]
    done: Event = field(default_factory=Event)
    sent: int = 0


def load_replay(path: str | Path) -> Replay:
    data = Path(path).read_bytes()
    events = [raw for frame, raw in split_raw_frames(data)
              if frame.headers.get("Content-Type") in ("text/event-plain", "text/event-json")]
    return Replay(Path(path), events)


class InboundConnection(Subscriber):
    def __init__(self, server: InboundServer, sock, peer):
        self.server, self.sock, self.peer = server, sock, peer
        self.authed = False
        self.names: set[str] = set()
        self.subclasses: set[str] = set()  # CUSTOM events' subclasses subscribed to
        self.all_events = False
        self.uuid_filter: str | None = None
        self.filters: list[tuple[str, str]] = []
        self.replaying = False
        self.commands: list[Command] = []
        self.closed = Event()
        self._queue: Queue = Queue()
        self._writer = gevent.spawn(self._write_loop)

    def wants(self, name: str, uuid: str | None, subclass: str | None = None) -> bool:
        if not self.authed or self.replaying or self.closed.is_set():
            return False
        if self.uuid_filter is not None and uuid != self.uuid_filter:
            return False
        if not (self.all_events or name in self.names):
            return False
        if name == "CUSTOM" and not self.all_events and subclass not in self.subclasses:
            return False
        if self.filters:
            return any((h == "Event-Name" and v == name) or (h == "Unique-ID" and v == uuid)
                       for h, v in self.filters)
        return True

    def deliver(self, data: bytes) -> None:
        self._queue.put(data)

    def send(self, data: bytes) -> None:
        self._queue.put(data)

    def close(self) -> None:
        self._queue.put(None)

    def kill(self) -> None:
        self._writer.kill(block=False)
        self._close_socket()

    def _close_socket(self) -> None:
        if not self.closed.is_set():
            self.closed.set()
            try:
                self.sock.close()
            except OSError:
                pass

    def _write_loop(self) -> None:
        try:
            while True:
                data = self._queue.get()
                if data is None:
                    break
                self.sock.sendall(data)
        except OSError:
            pass
        finally:
            self._close_socket()

    def serve(self) -> None:
        self.send(auth_request())
        reader = CommandReader()
        try:
            while not self.closed.is_set():
                data = self.sock.recv(65536)
                if not data:
                    break
                for command in reader.feed(data, time.perf_counter()):
                    self.commands.append(command)
                    if not self.handle(command):
                        return
        except (OSError, ValueError):
            pass
        finally:
            self.closed.wait(2.0)
            self.kill()

    def handle(self, command: Command) -> bool:
        name, arg = command.name, command.arg
        if not self.authed:
            if name == "auth":
                if arg == self.server.password:
                    self.authed = True
                    self.send(command_reply("+OK accepted"))
                    return True
                self.send(command_reply("-ERR invalid"))
                self.send(disconnect_notice())
                self.close()
                return False
            self.send(command_reply("-ERR command not found"))
            return True
        if name in ("event", "events"):
            words = arg.split()
            # mod_event_socket reads a format only as the first word, and keeps it for the
            # connection until an `event` names another. `xml` is taken, but the fake sends
            # plain, and says so.
            if words[:1] and words[0].lower() in ("plain", "json"):
                self.event_format = words[0].lower()
            tokens = [t for t in words if t.lower() not in ("plain", "json", "xml")]
            # As mod_event_socket parses it: every word after CUSTOM names a subclass.
            custom = next((i for i, t in enumerate(tokens) if t.upper() == "CUSTOM"), len(tokens))
            self.subclasses.update(tokens[custom + 1:])
            tokens = tokens[:custom + 1]
            known = [t.upper() for t in tokens if t.upper() in EVENT_NAMES]
            if not known:
                self.send(command_reply("-ERR no keywords supplied"))
                return True
            self.all_events = self.all_events or "ALL" in known
            self.names.update(known)
            self.send(command_reply(f"+OK event listener enabled {self.event_format}"))
            self.server.maybe_replay(self)
        elif name == "noevents":
            self.names.clear()
            self.all_events = False
            self.send(command_reply("+OK no longer listening for events"))
        elif name == "nixevent":
            for token in arg.split():
                if token.upper() == "ALL":
                    self.all_events = False
                    self.names.clear()
                self.names.discard(token.upper())
            self.send(command_reply("+OK events nixed"))
        elif name == "filter":
            words = arg.split(None, 2)
            if words[:1] == ["delete"]:
                self.filters.clear()
                self.send(command_reply("+OK filter deleted. [all][]"))
            elif len(words) >= 2:
                self.filters.append((words[0], words[1]))
                self.send(command_reply(f"+OK filter added. [{words[0]}]=[{words[1]}]"))
            else:
                self.send(command_reply("-ERR invalid syntax"))
        elif name == "myevents":
            if not arg.strip():
                self.send(command_reply("-ERR command not found"))
            else:
                self.uuid_filter = arg.split()[0]
                self.all_events = True
                self.send(command_reply("+OK Events Enabled"))
        elif name in ("linger", "nolinger"):
            self.send(command_reply("-ERR not controlling a session"))
        elif name == "log":
            level = arg.strip() or "7"
            self.send(command_reply(f"+OK log level {level} [{level}]"))
        elif name == "nolog":
            self.send(command_reply("+OK no longer logging"))
        elif name == "api":
            self.send(api_response(self.server.fake.api(arg)))
        elif name == "bgapi":
            self.send(self.server.fake.bgapi(command))
        elif name == "sendmsg":
            target = arg.strip()
            headers = {k.lower(): v for k, v in command.headers.items()}
            if headers.get("call-command", "").lower() == "hangup" and target:
                self.server.fake.kill_channel(target, headers.get("hangup-cause", "NORMAL_CLEARING"))
            self.send(command_reply("+OK"))
        elif name == "exit":
            self.send(command_reply("+OK bye"))
            self.send(disconnect_notice())
            self.close()
            return False
        else:
            self.send(command_reply("-ERR command not found"))
        return True


class InboundServer:
    def __init__(self, fake, host: str, port: int, password: str):
        self.fake = fake
        self.host, self.port = host, port
        self.password = password
        self.connections: list[InboundConnection] = []
        self.replays: list[Replay] = []
        self.accepted = 0
        self._server: StreamServer | None = None

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def start(self) -> None:
        self._server = StreamServer((self.host, self.port), self._handle, backlog=128)
        self._server.start()
        self.port = self._server.address[1]

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(timeout=0)
            self._server = None
        self.kill_connections()

    @property
    def running(self) -> bool:
        return self._server is not None

    def kill_connections(self) -> None:
        for conn in list(self.connections):
            conn.kill()

    def _handle(self, sock, peer) -> None:
        self.accepted += 1
        conn = InboundConnection(self, sock, peer)
        self.connections.append(conn)
        self.fake.bus.subscribers.append(conn)
        try:
            conn.serve()
        finally:
            if conn in self.fake.bus.subscribers:
                self.fake.bus.subscribers.remove(conn)
            if conn in self.connections:
                self.connections.remove(conn)

    def maybe_replay(self, conn: InboundConnection) -> None:
        if not self.replays or conn.replaying:
            return
        replay = self.replays.pop(0)
        conn.replaying = True

        def stream() -> None:
            for raw in replay.frames:
                if conn.closed.is_set():
                    break
                conn.send(raw)
                replay.sent += 1
            replay.done.set()

        gevent.spawn(stream)

    def broadcast(self, data: bytes) -> int:
        count = 0
        for conn in list(self.connections):
            if conn.authed and not conn.closed.is_set():
                conn.send(data)
                count += 1
        return count


def job_uuid(command: Command) -> str:
    return command.headers.get("Job-UUID") or str(uuidlib.uuid4())
