"""FakeFreeSWITCH: the whole fake switch in one object, for tests, benchmarks and the demo.

    fake = FakeFreeSWITCH(time_scale=0.01).start()
    fake.agent("1001", answers_after=2.0, talk=12.0)
    call = fake.place_call("+380671112233", router=("127.0.0.1", 8084))
    call.wait()
"""
from __future__ import annotations

import uuid as uuidlib
from typing import Self

import gevent

from .agents import Agent
from .api import answer as api_answer
from .bus import EventBus
from .calls import Call, CallHandle
from .cdr import CdrWriter
from .channel import Channel
from .clock import Clock
from .inbound import MALFORMED, InboundServer, Replay, job_uuid, load_replay
from .outcalls import OutCall, OutCallHandle
from .transfers import Transfer
from .wire import Command, command_reply


class FakeFreeSWITCH:
    def __init__(self, host: str = "127.0.0.1", esl_port: int = 0, password: str = "ClueCon",
                 time_scale: float = 0.01, router: tuple[str, int] | None = None, hold: float = 0.0,
                 dialplan_after_socket: float = 1.0, keep_events: int = 20000, cdr_dir=None):
        """esl_port 0 picks a free port (see .esl_address). `router` is where calls go unless
        place_call names another. `hold` makes the round-trip count causal (see session.py).
        `dialplan_after_socket`: FreeSWITCH seconds the dialplan's next action (voicemail) lasts
        when a call comes back from the socket before the caller is hung up. `keep_events`: how
        many sent events .events() keeps; 0 for load runs (events nobody receives are then not
        even rendered). `cdr_dir`: where mod_cdr_csv writes fsrouter_in.csv / fsrouter_out.csv
        (cdr.py); None writes no CDRs."""
        self.clock = Clock(time_scale)
        self.bus = EventBus(self.clock, keep=keep_events)
        self.bus.cdr = CdrWriter(cdr_dir) if cdr_dir is not None else None
        self.inbound = InboundServer(self, host, esl_port, password)
        self.router = router
        self.hold = hold
        self.dialplan_after_socket = dialplan_after_socket
        self.agents: dict[str, Agent] = {}
        self.channels: dict[str, Channel] = {}
        self.calls: list[CallHandle] = []
        self.out_calls: list[OutCallHandle] = []
        self.sessions_since_startup = 0
        self.started_us = self.clock.now_us()
        self._greenlets: list[gevent.Greenlet] = []
        self._restarting: gevent.Greenlet | None = None

    # -- life ----------------------------------------------------------------------------------------
    def start(self) -> FakeFreeSWITCH:
        self.inbound.start()
        return self

    def stop(self) -> None:
        if self._restarting is not None:
            self._restarting.kill(block=False)
        self.inbound.stop()
        gevent.killall([g for g in self._greenlets if not g.dead], block=True, timeout=2)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def esl_address(self) -> tuple[str, int]:
        return self.inbound.address

    @property
    def time_scale(self) -> float:
        return self.clock.scale

    # -- agents and calls ------------------------------------------------------------------------------
    def agent(self, ext: str, answers_after: float | None = 2.0, talk: float = 12.0, *,
              never_answers: bool = False, busy: bool = False, not_registered: bool = False,
              hangs_up_after: float | None = None, early_media: bool = False,
              transfer: Transfer | None = None) -> Agent:
        """Script agent `ext` (replacing an earlier script of the same extension). `transfer`: after
        `talk` seconds with the client, the agent passes them on (fakefs/transfers.py)."""
        agent = Agent(ext, None if never_answers else answers_after, talk, hangs_up_after, busy,
                      not not_registered, early_media, transfer=transfer)
        before = self.agents.get(ext)
        self.agents[ext] = agent
        if agent.registered != (before is not None and before.registered):
            self.registration_event(agent)
        return agent

    def registration_event(self, agent: Agent) -> None:
        """What mod_sofia fires when a phone registers or unregisters (sofia_reg.c)."""
        subclass = "sofia::register" if agent.registered else "sofia::unregister"
        headers = [("profile-name", "internal"), ("from-user", agent.ext), ("from-host", "127.0.0.1"),
                   ("contact", agent.contact.split("/", 2)[2]), ("call-id", str(uuidlib.uuid4())),
                   ("rpid", "unknown"), ("expires", "3600" if agent.registered else "0"),
                   ("to-user", agent.ext), ("to-host", "127.0.0.1"), ("network-ip", "127.0.0.1"),
                   ("network-port", "5070"), ("username", agent.ext), ("realm", "127.0.0.1"),
                   ("user-agent", "fakefs")]
        if agent.registered:
            headers.insert(6, ("status", "Registered(UDP)"))
        self.bus.plain_event("CUSTOM", headers, calling=("sofia_reg.c", "sofia_reg_handle_register_token", "2019"),
                             subclass=subclass)

    def place_call(self, caller: str = "+380671112233", destination: str = "5100", group: str = "sales",
                   router: tuple[str, int] | None = None, hold: float | None = None) -> CallHandle:
        """A client's call reaches the group's extension, whose dialplan sets fsrouter_group and
        runs `socket <router> async full`. Returns at once; the call plays out in the background."""
        target = router or self.router
        if target is None:
            raise ValueError("no router address: pass router= here or to FakeFreeSWITCH()")
        handle = CallHandle(str(uuidlib.uuid4()), caller, destination, group, tuple(target))
        self.calls.append(handle)
        self.sessions_since_startup += 1
        call = Call(self, handle, self.hold if hold is None else hold)
        self._spawn(call.run)
        return handle

    def agent_calls_out(self, ext: str, client_number: str, answered: bool, talk: float = 3.0,
                        ring: float = 3.4) -> OutCallHandle:
        """Agent `ext`'s phone dials a client (capture 09): answered after `ring` s and talked for
        `talk` s, or abandoned by the agent after `ring` s (ORIGINATOR_CANCEL)."""
        handle = OutCallHandle(str(uuidlib.uuid4()), ext, client_number, answered, talk, ring)
        self.out_calls.append(handle)
        self.sessions_since_startup += 1
        self._spawn(OutCall(self, handle).run)
        return handle

    def wait_calls(self, timeout: float = 10.0) -> bool:
        """Until every call placed so far has ended."""
        with gevent.Timeout(timeout, False):
            for handle in list(self.calls) + list(self.out_calls):
                handle.done.wait()
            return True
        return False

    def kill_channel(self, uuid: str, cause: str = "NORMAL_CLEARING") -> bool:
        for handle in self.calls:
            if handle.uuid == uuid and not handle.done.is_set() and uuid in self.channels:
                handle.hangup(cause)
                return True
        return False

    def _spawn(self, fn) -> gevent.Greenlet:
        self._greenlets = [g for g in self._greenlets if not g.dead]
        greenlet = gevent.spawn(fn)
        self._greenlets.append(greenlet)
        return greenlet

    # -- api -------------------------------------------------------------------------------------------
    def api(self, line: str) -> str:
        return api_answer(self, line)

    def bgapi(self, command: Command) -> bytes:
        """The reply to `bgapi`; the result follows as a BACKGROUND_JOB event."""
        job = job_uuid(command)
        line = command.arg
        name, _, arg = line.partition(" ")

        def run() -> None:
            body = self.api(line).encode("utf-8")
            headers = [("Job-UUID", job), ("Job-Command", name)]
            if arg:
                headers.append(("Job-Command-Arg", arg))
            self.bus.plain_event("BACKGROUND_JOB", headers, body)

        gevent.spawn_later(0.001, run)
        return command_reply(f"+OK Job-UUID: {job}", ("Job-UUID", job))

    # -- faults ----------------------------------------------------------------------------------------
    def restart(self, down_for: float = 1.0, hang_up_calls: bool = False) -> None:
        """FreeSWITCH restarts: every event-socket connection closes, connections are refused for
        `down_for` wall seconds, then accepted again by a switch with a new Core-UUID whose
        Event-Sequence starts again from 1."""
        if hang_up_calls:
            for handle in list(self.calls):
                if not handle.done.is_set():
                    handle.hangup("NORMAL_CLEARING")
        self.inbound.stop()
        self.bus.restart()

        def back() -> None:
            self.inbound.start()
            self._restarting = None

        self._restarting = gevent.spawn_later(down_for, back)

    def kill_connections(self) -> None:
        """Cut every inbound connection (the listener sees EOF) without refusing new ones."""
        self.inbound.kill_connections()

    def inject_malformed(self, kind: str = "garbage", data: bytes | None = None) -> bytes:
        """Send a frame that is not a valid event to every authenticated inbound connection."""
        frame = data if data is not None else MALFORMED[kind]
        self.inbound.broadcast(frame)
        return frame

    def drop_events(self, count: int = 1) -> None:
        """The next `count` events are numbered and never delivered: a gap in Event-Sequence."""
        self.bus.drop(count)

    def serve_capture(self, path) -> Replay:
        """The next inbound connection that authenticates and subscribes receives the recorded
        event frames of `path` (a *.fs-to-client.raw file), byte for byte, instead of live events."""
        replay = load_replay(path)
        self.inbound.replays.append(replay)
        return replay

    # -- what was sent ---------------------------------------------------------------------------------
    def events(self, name: str | None = None, uuid: str | None = None) -> list:
        return [e for e in self.bus.history if (name is None or e.name == name) and (uuid is None or e.uuid == uuid)]
