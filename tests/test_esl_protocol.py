"""greenswitch's fixes are in fsrouter's connection classes, not patched in by an import: every
event-socket connection fsrouter makes reads a hostile header the same way, `route --live`'s
(which imports nothing else of fsrouter.esl) as much as the daemon's listener's."""
from __future__ import annotations

import gevent
import gevent.server
from greenswitch.esl import ESLEvent

from fsrouter import wiring
from fsrouter.config import Config
from fsrouter.core.model import Agent
from fsrouter.esl import protocol
from fsrouter.esl.inbound import EventListener
from fsrouter.fakefs.wire import api_response, auth_request, command_reply, event_plain

# A caller ID trying to add headers of its own: a raw line break (FreeSWITCH encodes it: %0A) and
# an already encoded one (FreeSWITCH leaves "%0A" as it is, so it arrives decoded once more).
HOSTILE = ("123\nVariable-X: y", "456%0AContent-Type: auth/request")


def hostile_event(caller_id: str) -> bytes:
    return event_plain([("Event-Name", "CHANNEL_CREATE"), ("Unique-ID", "u-1"),
                        ("Caller-Caller-ID-Number", caller_id), ("Event-Sequence", "7")])


class HostileSocket:
    """An event socket that takes the password and answers every command (an `event plain`
    subscription, an `api`), then sends the hostile events, to whoever connected."""

    def __init__(self):
        self.server = gevent.server.StreamServer(("127.0.0.1", 0), self._serve)
        self.server.start()

    @property
    def port(self) -> int:
        return self.server.address[1]

    def _serve(self, sock, _peer) -> None:
        reader = sock.makefile("rb")
        sock.sendall(auth_request())
        while True:
            command = []
            while (line := reader.readline()) not in (b"\n", b""):
                command.append(line)
            if not command and line == b"":
                return
            text = b"".join(command).decode()
            if text.startswith("auth"):
                sock.sendall(command_reply("+OK accepted"))
                continue
            if text.startswith("exit"):
                sock.sendall(command_reply("+OK bye"))
                return
            sock.sendall(api_response("error/user_not_registered") if text.startswith("api")
                         else command_reply("+OK event listener enabled plain"))
            for caller_id in HOSTILE:
                sock.sendall(hostile_event(caller_id))

    def stop(self) -> None:
        self.server.stop()


def test_route_live_and_the_listener_read_a_hostile_caller_id_the_same(monkeypatch):
    fake = HostileSocket()
    by_listener, by_route_live, opened = [], [], []
    listener = EventListener("127.0.0.1", fake.port, "ClueCon", on_event=by_listener.append)

    def spy(*args, **kwargs):  # the real open_inbound; the test only keeps what it opened
        opened.append(protocol.open_inbound(*args, **kwargs))
        opened[-1].register_handle("CHANNEL_CREATE", lambda event: by_route_live.append(dict(event.headers)))
        return opened[-1]

    monkeypatch.setattr(wiring, "open_inbound", spy)
    try:
        listener.start()
        presence = wiring.route_presence(Config(esl_host="127.0.0.1", esl_port=fake.port))
        agent = Agent("1003", "Oksana", "user/1003@127.0.0.1")
        assert presence([agent], {"1003"}) == {"1003": "offline"}  # its api reply still matched
        with gevent.Timeout(5, False):
            while len(by_listener) < len(HOSTILE) or len(by_route_live) < len(HOSTILE):
                gevent.sleep(0.01)
    finally:
        listener.stop()
        for conn in opened:
            conn.stop()
        fake.stop()
    assert len(opened) == 1 and isinstance(opened[0], protocol.InboundConnection)
    caller_ids = [h["Caller-Caller-ID-Number"] for h in by_listener]
    assert caller_ids == ["123\nVariable-X: y", "456\nContent-Type: auth/request"]
    assert [h["Caller-Caller-ID-Number"] for h in by_route_live] == caller_ids
    for headers in by_listener + by_route_live:
        assert "Variable-X" not in headers and headers["Content-Type"] == "text/event-plain"
        assert headers["Unique-ID"] == "u-1" and headers["Event-Sequence"] == "7"


def test_greenswitch_itself_stays_unpatched():
    """The fix lives in fsrouter's classes: greenswitch's own parser still splits the caller ID
    into a header of its own (what `route --live` did before it used esl.protocol)."""
    block = hostile_event(HOSTILE[0]).split(b"\n\n", 1)[1].decode()
    assert "Variable-X" in ESLEvent(block).headers
    assert "Variable-X" not in protocol.FixedEvent(block).headers
