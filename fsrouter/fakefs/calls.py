"""One inbound call through the `socket` application, as FreeSWITCH plays it.

The caller's channel runs the dialplan, connects to the router, answers its commands, executes
its applications in order and plays every bridge out against the scripted agents, emitting the
channel events a listener sees. It keeps FreeSWITCH's traps: a failed bridge without
continue_on_fail hangs the caller up unless the cause is NO_ANSWER, NO_USER_RESPONSE or
ORIGINATOR_CANCEL (switch_channel_handle_cause); when the socket application ends with the
channel still up, the dialplan goes on (the call "returns to the dialplan").
"""
from __future__ import annotations

import uuid as uuidlib
from dataclasses import dataclass, field

import gevent
from gevent import socket
from gevent.event import Event
from gevent.queue import Queue

from .agents import DIALSTATUS, BridgePlan, LegPlan, parse_dial_string, plan_bridge
from .channel import Channel
from .clock import date_rfc2822
from .session import SocketSession
from .transfers import play as play_transfer
from .wire import (
    Command,
    api_response,
    command_reply,
    disconnect_notice,
    linger_notice,
)

SURVIVING_CAUSES = {"NO_ANSWER", "NO_USER_RESPONSE", "ORIGINATOR_CANCEL"}
CONNECT_TIMEOUT = 5.0            # wall seconds to reach the router, as FreeSWITCH's socket app
FIRST_COMMAND_TIMEOUT = 30.0     # wall seconds: a router that never says `connect` is given up
# What `myevents` subscribes a socket session to (mod_event_socket.c, FreeSWITCH 1.10): events of
# its own channel only, of these kinds; `nixevent` takes kinds away again.
MYEVENTS = frozenset({
    "CHANNEL_ANSWER", "CHANNEL_APPLICATION", "CHANNEL_BRIDGE", "CHANNEL_CREATE", "CHANNEL_DATA",
    "CHANNEL_DESTROY", "CHANNEL_EXECUTE", "CHANNEL_EXECUTE_COMPLETE", "CHANNEL_HANGUP",
    "CHANNEL_HANGUP_COMPLETE", "CHANNEL_ORIGINATE", "CHANNEL_UUID", "CHANNEL_OUTGOING", "CHANNEL_PARK",
    "CHANNEL_PROGRESS", "CHANNEL_PROGRESS_MEDIA", "CHANNEL_STATE", "CHANNEL_UNBRIDGE", "CHANNEL_UNPARK",
    "DETECTED_SPEECH", "DTMF", "NOTALK", "TALK"})
ANSWER_DELAY = 0.02              # the caller's leg is answered one media frame after the agent's


@dataclass
class LegRecord:
    endpoint: str
    ext: str | None
    leg_timeout: float | None    # as passed to FreeSWITCH, unscaled
    cause: str = ""              # SUCCESS, NO_ANSWER, USER_BUSY, LOSE_RACE, ...


@dataclass
class BridgeRecord:
    dial_string: str
    legs: list[LegRecord]
    originate_timeout: float | None
    received_at: float           # perf_counter when the bridge command arrived
    disposition: str = ""
    answered_by: str | None = None

    @property
    def leg_timeouts(self) -> list[float | None]:
        return [leg.leg_timeout for leg in self.legs]


@dataclass
class CallHandle:
    """What happened to one call: everything the router sent, and what FreeSWITCH did with it."""
    uuid: str
    caller: str
    destination: str
    group: str
    router: tuple[str, int]
    commands: list[bytes] = field(default_factory=list)           # raw bytes, in order
    parsed: list[Command] = field(default_factory=list)
    apps: list[tuple[str, str]] = field(default_factory=list)     # (application, argument) executed
    bridges: list[BridgeRecord] = field(default_factory=list)
    variables: dict[str, str] = field(default_factory=dict)       # what the router set on the channel
    connect_reply_at: float | None = None                         # perf_counter, reply written
    first_bridge_at: float | None = None                          # perf_counter, bridge received
    blocking_round_trips: int = 0
    blocking_commands: list[str] = field(default_factory=list)
    connect_failed: bool = False
    returned_to_dialplan: bool = False
    answered_by: str | None = None
    transferred_to: list[str] = field(default_factory=list)       # each agent the client was passed to
    talk_seconds: float = 0.0
    hangup_cause: str | None = None
    hung_up: bool = False
    lingered: bool = False
    events_sent: list[str] = field(default_factory=list)          # Event-Names sent to the session
    done: Event = field(default_factory=Event)
    _call: object = None

    @property
    def decision_latency(self) -> float | None:
        """Seconds from the connect reply written to the first bridge command received."""
        if self.connect_reply_at is None or self.first_bridge_at is None:
            return None
        return self.first_bridge_at - self.connect_reply_at

    @property
    def dial_strings(self) -> list[str]:
        return [b.dial_string for b in self.bridges]

    def wait(self, timeout: float | None = 10.0) -> bool:
        return self.done.wait(timeout)

    def hangup(self, cause: str = "NORMAL_CLEARING") -> None:
        """The caller hangs up now."""
        if self._call is not None:
            self._call.request_hangup(cause)


class Call:
    def __init__(self, fake, handle: CallHandle, hold: float):
        self.fake = fake
        self.clock = fake.clock
        self.bus = fake.bus
        self.handle = handle
        self.hold = hold
        self.channel = Channel("client", "", handle.caller, handle.destination, group=handle.group,
                               created_us=self.clock.now_us(), uuid=handle.uuid)
        self.channel.name = f"sofia/carrier/{handle.caller}@127.0.0.1"
        self.session: SocketSession | None = None
        self.apps: Queue = Queue()
        self.parked = False
        self.failed_bridge = False
        self.bridged_ever = False
        self.socket_app: tuple[str, str, str] | None = None
        self.hangup_requested = Event()
        self.requested_cause = "NORMAL_CLEARING"
        self.legs: list[Channel] = []
        self.originate_causes: list[str] = []
        self.originated_legs: list[str] = []
        self.unbridged_by_leg: Channel | None = None  # att_xfer: the client's bridge is the leg's (13b)
        handle._call = self

    # -- helpers ---------------------------------------------------------------------------------
    def emit(self, channel: Channel, shape: str, name: str, at_us: int | None = None, app=None,
             response: str = "_none_") -> None:
        self.bus.channel_event(channel, shape, name, at_us, app, response)

    def phase(self) -> str:
        if not self.channel.alive:
            return "hungup"
        return "failed" if self.failed_bridge or self.bridged_ever else "socket"

    def wait_fs(self, seconds: float) -> bool:
        """Sleep FreeSWITCH seconds; True when the caller hung up meanwhile."""
        return self.hangup_requested.wait(self.clock.real(max(0.0, seconds)))

    def request_hangup(self, cause: str) -> None:
        self.requested_cause = cause
        self.hangup_requested.set()
        if self.channel.alive and not self._busy_with_bridge:
            gevent.spawn(self._caller_hangs_up)

    # While a bridge plays out, a caller's hangup is taken by the bridge itself (it cancels the legs).
    _busy_with_bridge = False

    def _caller_hangs_up(self) -> None:
        if self.channel.alive:
            self.hangup(self.requested_cause)

    # -- the whole call --------------------------------------------------------------------------
    def run(self) -> None:
        ch, fake = self.channel, self.fake
        fake.channels[ch.uuid] = ch
        try:
            self.emit(ch, "client/CHANNEL_CREATE", "CHANNEL_CREATE")
            # The public context's steps before the socket (the captures' dialplan).
            for app, data in (("set", "outside_call=true"),
                              ("export", f"RFC2822_DATE={date_rfc2822(ch.times['created'])}"),
                              ("set", f"fsrouter_group={self.handle.group}")):
                app_uuid = str(uuidlib.uuid4())
                ch.last_app = (app, data)
                self.emit(ch, "client/CHANNEL_EXECUTE_COMPLETE/dialplan", "CHANNEL_EXECUTE_COMPLETE",
                          app=(app, data, app_uuid))
            host, port = self.handle.router
            self.socket_app = ("socket", f"{host}:{port} async full", str(uuidlib.uuid4()))
            ch.app = self.socket_app
            try:
                sock = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT)
                sock.settimeout(None)
            except OSError:
                self.handle.connect_failed = True
                self._socket_ended()
                return
            self.session = SocketSession(sock, ch.uuid, self.handle, self.hold)
            fake.bus.subscribers.append(self.session)
            executor = gevent.spawn(self._execute_loop)
            try:
                self._serve_commands()
                # The router is gone or said exit: what it had queued still runs, then the socket
                # application returns (the bridge in progress is not cut by the socket closing).
                self.apps.put(None)
                executor.join()
                self.session.closed.wait(2.0)
            finally:
                executor.kill(block=False)
                if self.session in fake.bus.subscribers:
                    fake.bus.subscribers.remove(self.session)
                self.session.kill()
            if ch.alive:
                self._socket_ended()
        finally:
            fake.channels.pop(ch.uuid, None)
            self.handle.hung_up = not ch.alive
            self.handle.hangup_cause = ch.hangup_cause
            self.handle.done.set()

    def _serve_commands(self) -> None:
        commands = self.session.commands()
        first = None
        # FreeSWITCH would wait for `connect` for ever; the fake gives up so no test hangs.
        with gevent.Timeout(FIRST_COMMAND_TIMEOUT, False):
            first = next(commands, None)
        if first is None or not self._handle(first):
            return
        for command in commands:
            if not self._handle(command):
                return

    def _handle(self, command: Command) -> bool:
        """Answer one command; False when the session is over."""
        h, ch, session = self.handle, self.channel, self.session
        h.commands.append(command.raw)
        h.parsed.append(command)
        name = command.name
        if name == "connect":
            seq = self.bus.next_seq()
            block = ch.render("connect", "CHANNEL_DATA", seq, self.clock.now_us(), self.bus.core_uuid)
            session.start_counting()
            session.send(block + b"\n", on_sent=lambda t: setattr(h, "connect_reply_at", t))
        elif name == "myevents":
            session.myevents = True
            session.my_names.update(MYEVENTS)
            session.send(command_reply("+OK Events Enabled"), command)
        elif name == "linger":
            session.lingering = h.lingered = True
            session.send(command_reply("+OK will linger"), command)
        elif name == "nolinger":
            session.lingering = False
            session.send(command_reply("+OK will not linger"), command)
        elif name in ("event", "events"):
            tokens = [t for t in command.arg.split() if t.lower() not in ("plain", "json", "xml")]
            session.all_events = session.all_events or any(t.upper() == "ALL" for t in tokens)
            session.names.update(t.upper() for t in tokens)
            session.send(command_reply("+OK event listener enabled plain"), command)
        elif name == "noevents":
            session.names.clear()
            session.all_events = session.myevents = False
            session.send(command_reply("+OK no longer listening for events"), command)
        elif name == "nixevent":
            nixed = {t.upper() for t in command.arg.split()}
            if "ALL" in nixed:
                session.all_events = False
                session.names.clear()
                session.my_names.clear()
            session.names.difference_update(nixed)
            session.my_names.difference_update(nixed)
            session.send(command_reply("+OK events nixed"), command)
        elif name == "api":
            session.send(api_response(self.fake.api(command.arg)), command)
        elif name == "bgapi":
            session.send(self.fake.bgapi(command), command)
        elif name == "sendmsg":
            self._sendmsg(command)
        elif name == "exit":
            session.send(command_reply("+OK bye"), command)
            session.send(disconnect_notice(ch.uuid))
            session.close_after_queue()
            return False
        else:
            session.send(command_reply("-ERR command not found"), command)
        return True

    def _sendmsg(self, command: Command) -> None:
        h = self.handle
        headers = {k.lower(): v for k, v in command.headers.items()}
        # FreeSWITCH answers +OK at once, even on a channel that is already gone (set-b 04b).
        self.session.send(command_reply("+OK"), command)
        call_command = headers.get("call-command", "").strip().lower()
        if call_command == "hangup":
            self.apps.put(("__hangup__", headers.get("hangup-cause", "NORMAL_CLEARING"), ""))
            return
        if call_command != "execute":
            return
        app = headers.get("execute-app-name", "").strip()
        arg = headers.get("execute-app-arg", "")
        if not arg and command.body:
            arg = command.body.decode("utf-8", "replace")
        app_uuid = command.headers.get("Event-UUID") or str(uuidlib.uuid4())
        loops = int(headers.get("loops", "1") or 1) if headers.get("loops", "1").isdigit() else 1
        if app == "bridge" and h.first_bridge_at is None:
            h.first_bridge_at = command.received_at
        if app == "bridge":
            dial = parse_dial_string(arg)
            h.bridges.append(BridgeRecord(arg, [LegRecord(leg.endpoint, leg.ext, leg.leg_timeout)
                                                for leg in dial.legs],
                                          dial.originate_timeout, command.received_at))
        for _ in range(max(1, loops)):
            self.apps.put((app, arg, app_uuid))

    # -- applications ----------------------------------------------------------------------------
    def _execute_loop(self) -> None:
        bridge_index = 0
        while True:
            item = self.apps.get()
            if item is None:
                return
            app, arg, app_uuid = item
            if not self.channel.alive:
                continue
            if app == "__hangup__":
                self.hangup(arg or "NORMAL_CLEARING")
                continue
            record = None
            if app == "bridge":
                record = self.handle.bridges[bridge_index]
                bridge_index += 1
            self.execute(app, arg, app_uuid, record)

    def execute(self, app: str, arg: str, app_uuid: str, record: BridgeRecord | None = None) -> None:
        ch = self.channel
        self.handle.apps.append((app, arg))
        if not self.parked:
            self.parked = True
            self.emit(ch, "client/CHANNEL_PARK", "CHANNEL_PARK")
        triple = (app, arg, app_uuid)
        ch.app = triple
        self.emit(ch, f"client/CHANNEL_EXECUTE/{'failed' if self.phase() != 'socket' else 'socket'}",
                  "CHANNEL_EXECUTE", app=triple)
        response = "_none_"
        if app in ("set", "export"):
            name, _, value = arg.partition("=")
            name = name.removeprefix("nolocal:")
            self._set(name.strip(), value, export=(app == "export"))
        elif app == "multiset":
            for item in _multiset_items(arg):
                name, _, value = item.partition("=")
                self._set(name.strip(), value)
        elif app == "unset":
            ch.unset_var(arg.strip())
            self.handle.variables.pop(arg.strip(), None)
        elif app == "ring_ready":
            self._progress()
        elif app == "pre_answer":
            self._progress(media=True)
        elif app == "answer":
            self._answer(self.clock.now_us())
        elif app == "hangup":
            self.hangup(arg.strip() or "NORMAL_CLEARING")
        elif app == "sleep":
            self.wait_fs(_number(arg) / 1000.0)
        elif app == "playback":
            response = "FILE PLAYED"
        elif app == "bridge":
            self._bridge(arg, triple, record)
            return
        ch.last_app = (app, arg)
        if ch.alive:
            self.emit(ch, f"client/CHANNEL_EXECUTE_COMPLETE/{self.phase()}", "CHANNEL_EXECUTE_COMPLETE",
                      app=triple, response=response)
        if self.hangup_requested.is_set() and ch.alive:
            self.hangup(self.requested_cause)

    def _set(self, name: str, value: str, export: bool = False) -> None:
        if not name:
            return
        if value == "":
            self.channel.unset_var(name)
            self.handle.variables.pop(name, None)
            return
        self.channel.set_var(name, value)
        self.handle.variables[name] = value
        if export and name not in self.channel.exported:
            self.channel.exported.append(name)

    def _progress(self, media: bool = False) -> None:
        ch = self.channel
        now = self.clock.now_us()
        if media:
            if not ch.times["progress_media"]:
                ch.times["progress_media"] = now
                ch.answer_state, ch.call_state = "early", "EARLY"
                self.emit(ch, "client/CHANNEL_PROGRESS", "CHANNEL_PROGRESS_MEDIA", now)
        elif not ch.times["progress"]:
            ch.times["progress"] = now
            self.emit(ch, "client/CHANNEL_PROGRESS", "CHANNEL_PROGRESS", now)

    def _answer(self, at_us: int) -> None:
        ch = self.channel
        if ch.times["answered"]:
            return
        ch.times["answered"] = at_us
        ch.answer_state, ch.call_state = "answered", "ACTIVE"
        self.emit(ch, "client/CHANNEL_ANSWER", "CHANNEL_ANSWER", at_us)

    # -- bridge ----------------------------------------------------------------------------------
    def _bridge(self, arg: str, triple, record: BridgeRecord | None) -> None:
        ch, clock = self.channel, self.clock
        plan: BridgePlan = plan_bridge(parse_dial_string(arg), self.fake.agents)
        t0 = clock.now_us()
        us = lambda seconds: t0 + int(seconds * 1_000_000)
        self._busy_with_bridge = True
        legs: dict[int, Channel] = {}
        for i, leg in enumerate(plan.legs):
            if not leg.created:
                continue
            leg.agent.rings.append(t0 / 1e6)
            # The recorded legs to copy: one that rang out, one that answered, one that was busy.
            role = "agent_busy" if leg.cause == "USER_BUSY" else (
                "agent_answer" if leg is plan.winner else "agent_ring")
            leg_ch = Channel("agent", f"sofia/internal/gw+a{leg.spec.ext}@127.0.0.1:5070", ch.caller, ch.dest,
                             ext=leg.spec.ext or "", group=ch.group, created_us=t0)
            leg_ch.other = ch
            leg_ch.role_shape = role
            # The leg's own [variables] are on its channel from its CHANNEL_CREATE on, as
            # FreeSWITCH sets them (capture 08: variable_leg_timeout 3 and 5 on the agent legs).
            for name, value in leg.spec.variables.items():
                leg_ch.dynamic[name] = value
            legs[i] = leg_ch
            self.legs.append(leg_ch)
            self.fake.channels[leg_ch.uuid] = leg_ch
            self.emit(leg_ch, f"{role}/CHANNEL_CREATE", "CHANNEL_CREATE", t0)
            self.emit(leg_ch, f"{role}/CHANNEL_ORIGINATE", "CHANNEL_ORIGINATE", t0)
        # Everything that happens to the legs, in FreeSWITCH time.
        steps: list[tuple[float, int, str, int]] = []
        for i, leg in enumerate(plan.legs):
            if i not in legs:
                continue
            if leg.progress_at is not None:
                steps.append((leg.progress_at, 0, "progress", i))
            steps.append((leg.end_at, 1, "answer" if leg is plan.winner else "fail", i))
        steps.sort()
        abandoned = False
        deferred_complete: list[Channel] = []
        for at, _, what, i in steps:
            if self.wait_fs((us(at) - clock.now_us()) / 1e6):
                abandoned = True
                break
            leg, leg_ch = plan.legs[i], legs[i]
            if what == "progress":
                leg_ch.times["progress"] = us(at)
                self.emit(leg_ch, "agent_ring/CHANNEL_PROGRESS", "CHANNEL_PROGRESS", us(at))
                if not ch.times["progress"]:
                    ch.times["progress"] = us(at)
                    self.emit(ch, "client/CHANNEL_PROGRESS", "CHANNEL_PROGRESS", us(at))
            elif what == "fail":
                self._leg_down(leg, leg_ch, us(at))
                deferred_complete.append(leg_ch)
            else:
                leg_ch.times["answered"] = us(at)
                leg_ch.answer_state, leg_ch.call_state = "answered", "ACTIVE"
                self.emit(leg_ch, "agent_answer/CHANNEL_ANSWER", "CHANNEL_ANSWER", us(at))
        if abandoned:
            # The caller hung up while the legs rang: they end with ORIGINATOR_CANCEL.
            cause = self.requested_cause
            now = clock.now_us()
            for i, leg_ch in legs.items():
                if leg_ch.alive:
                    plan.legs[i].cause = "ORIGINATOR_CANCEL"
                    self._leg_down(plan.legs[i], leg_ch, now)
                    deferred_complete.append(leg_ch)
            self._record_outcome(plan, record, legs, "ORIGINATOR_CANCEL")
            self._hangup_channel(cause, now)
            self._complete(triple, deferred_complete)
            self._busy_with_bridge = False
            self._socket_over_after_hangup()
            return
        if plan.winner is None:
            self._record_outcome(plan, record, legs, plan.disposition)
            self.failed_bridge = True
            trap = not self._continues(plan.disposition)
            if trap:
                # FreeSWITCH hangs the caller up before it reports the bridge (set-b 04b).
                self._hangup_channel(plan.disposition, clock.now_us())
            self._complete(triple, deferred_complete)
            self._busy_with_bridge = False
            if trap:
                self._socket_over_after_hangup()
            elif self.hangup_requested.is_set():
                self.hangup(self.requested_cause)
            return
        winner_index = plan.legs.index(plan.winner)
        agent_ch = legs[winner_index]
        answered_at = agent_ch.times["answered"]
        self._record_outcome(plan, record, legs, "SUCCESS")
        for leg_ch in deferred_complete:
            self.emit(leg_ch, f"{leg_ch.role_shape}/CHANNEL_HANGUP_COMPLETE", "CHANNEL_HANGUP_COMPLETE",
                      leg_ch.times["hangup"])
        deferred_complete = []
        client_answer = answered_at + int(ANSWER_DELAY * 1_000_000)
        self._answer(client_answer)
        ch.other = agent_ch
        agent_ch.other = ch
        ch.times["bridged"] = agent_ch.times["bridged"] = client_answer
        self.bridged_ever = True
        self.emit(ch, "client/CHANNEL_BRIDGE", "CHANNEL_BRIDGE", client_answer)
        agent = plan.winner.agent
        self.handle.answered_by = agent.ext
        completed = []  # the router's bridge was reported over at a transfer (12)

        def complete_bridge() -> None:
            if not completed:
                completed.append(True)
                self._complete(triple, [])

        talk_from = client_answer
        while True:
            agent_ends = agent.hangs_up_after is not None
            talk = agent.hangs_up_after if agent_ends else agent.talk
            interrupted = self.wait_fs((talk_from + int(talk * 1_000_000) - clock.now_us()) / 1e6)
            if interrupted or agent_ends or agent.transfer is None:
                break
            handed = play_transfer(self, agent_ch, agent.transfer, complete_bridge)
            if handed is None:  # the client hung up meanwhile, or nobody took the call
                complete_bridge()
                self._busy_with_bridge = False
                self.hangup(self.requested_cause if self.hangup_requested.is_set() else "NORMAL_CLEARING")
                return
            agent_ch, agent = handed
            self.handle.answered_by = agent.ext
            self.handle.transferred_to.append(agent.ext)
            talk_from = agent_ch.times["bridged"]
        end_at = clock.now_us() if interrupted else talk_from + int(talk * 1_000_000)
        self.handle.talk_seconds = (end_at - talk_from) / 1e6
        ch.dynamic["bridge_hangup_cause"] = "NORMAL_CLEARING"
        if agent_ends and not interrupted:
            agent_ch.hangup_cause = "NORMAL_CLEARING"
            self._leg_down(plan.winner, agent_ch, end_at, emit_complete=False)
            self._unbridge(agent_ch, end_at)
            if completed:
                self._complete_legs([agent_ch])
            else:
                self._complete(triple, [agent_ch])
            self._busy_with_bridge = False
            if ch.var("hangup_after_bridge") in ("true", "1", "yes", "on"):
                self.hangup("NORMAL_CLEARING")
            return
        # The caller hangs up (capture 11): the caller's hangup, the agent's, then the report.
        cause = self.requested_cause if interrupted else "NORMAL_CLEARING"
        self._hangup_channel(cause, end_at)
        self._leg_down(plan.winner, agent_ch, end_at, emit_complete=False, cause="NORMAL_CLEARING")
        if self.unbridged_by_leg is None:
            self.emit(ch, "client/CHANNEL_UNBRIDGE", "CHANNEL_UNBRIDGE", end_at)
        if not completed:
            self._complete(triple, [])
        self._busy_with_bridge = False
        self._socket_over_after_hangup(then_complete=[agent_ch])

    def _unbridge(self, agent_ch: Channel, at_us: int) -> None:
        if self.unbridged_by_leg is agent_ch:
            self.emit(agent_ch, "agent_answer/CHANNEL_UNBRIDGE", "CHANNEL_UNBRIDGE", at_us)
        else:
            self.emit(self.channel, "client/CHANNEL_UNBRIDGE", "CHANNEL_UNBRIDGE", at_us)

    def _complete_legs(self, legs: list[Channel]) -> None:
        for leg_ch in legs:
            self.emit(leg_ch, f"{leg_ch.role_shape}/CHANNEL_HANGUP_COMPLETE", "CHANNEL_HANGUP_COMPLETE",
                      leg_ch.times["hangup"])

    def _complete(self, triple, then_complete: list[Channel]) -> None:
        ch = self.channel
        ch.last_app = triple[:2]
        self.emit(ch, f"client/CHANNEL_EXECUTE_COMPLETE/{'hungup' if not ch.alive else 'failed'}",
                  "CHANNEL_EXECUTE_COMPLETE", app=triple)
        for leg_ch in then_complete:
            self.emit(leg_ch, f"{leg_ch.role_shape}/CHANNEL_HANGUP_COMPLETE", "CHANNEL_HANGUP_COMPLETE",
                      leg_ch.times["hangup"])

    def _leg_down(self, leg: LegPlan, leg_ch: Channel, at_us: int, emit_complete: bool = False,
                  cause: str | None = None) -> None:
        leg_ch.hangup_cause = cause or leg.cause
        leg_ch.answer_state = "hangup"
        leg_ch.call_state = "HANGUP"
        leg_ch.alive = False
        leg_ch.times["hangup"] = at_us
        self.fake.channels.pop(leg_ch.uuid, None)
        self.emit(leg_ch, f"{leg_ch.role_shape}/CHANNEL_HANGUP", "CHANNEL_HANGUP", at_us)
        if emit_complete:
            self.emit(leg_ch, f"{leg_ch.role_shape}/CHANNEL_HANGUP_COMPLETE", "CHANNEL_HANGUP_COMPLETE", at_us)

    def _record_outcome(self, plan: BridgePlan, record: BridgeRecord | None, legs: dict[int, Channel],
                        disposition: str) -> None:
        ch = self.channel
        d = ch.dynamic
        last_failed = None
        for i, leg in enumerate(plan.legs):
            leg_ch = legs.get(i)
            if record is not None and i < len(record.legs):
                record.legs[i].cause = leg.cause
            if leg_ch is None:
                continue
            cause = "NONE" if leg is plan.winner else leg.cause
            self.originate_causes.append(f"{leg_ch.uuid};{cause}")
            self.originated_legs.append(f"{leg_ch.uuid};Outbound Call;gw+a{leg.spec.ext}")
            if leg is not plan.winner and leg.cause != "LOSE_RACE":
                last_failed = leg.cause
        if record is not None:
            record.disposition = disposition
            record.answered_by = plan.winner.agent.ext if plan.winner else None
        d["originate_disposition"] = disposition
        d["DIALSTATUS"] = DIALSTATUS.get(disposition, disposition)
        if disposition != "SUCCESS":
            d["originate_failed_cause"] = disposition
        d.setdefault("originate_failed_cause", None)
        if last_failed:
            d["last_bridge_hangup_cause"] = last_failed
        d.setdefault("last_bridge_hangup_cause", None)
        join = lambda items: (items[0] if len(items) == 1 else "ARRAY::" + "|:".join(items)) if items else None
        d["originate_causes"] = join(self.originate_causes)
        d["originated_legs"] = join(self.originated_legs)
        if plan.legs:
            last = plan.winner or plan.legs[-1]
            d["dialed_user"] = last.spec.ext
            d["dialed_domain"] = "127.0.0.1" if last.spec.ext else None
        if plan.winner is not None:
            agent_ch = legs[plan.legs.index(plan.winner)]
            for name in ("last_bridge_to", "bridge_uuid", "signal_bond"):
                d[name] = agent_ch.uuid
            d["bridge_channel"] = agent_ch.name
            d["last_sent_callee_id_name"] = d["last_sent_callee_id_number"] = plan.winner.spec.ext
            d["endpoint_disposition"] = "ANSWER"

    def _continues(self, cause: str) -> bool:
        value = (self.channel.var("continue_on_fail") or "").strip()
        if value.lower() in ("true", "yes", "on", "1"):
            return True
        # continue_on_fail may also list the causes to go on after (USER_BUSY,NO_ANSWER,...).
        if value and value.lower() not in ("false", "no", "off", "0") and \
                cause in {c.strip().upper() for c in value.split(",")}:
            return True
        return cause in SURVIVING_CAUSES

    # -- hanging up --------------------------------------------------------------------------------
    def _hangup_channel(self, cause: str, at_us: int | None = None) -> None:
        ch = self.channel
        if not ch.alive:
            return
        at_us = at_us or self.clock.now_us()
        ch.alive = False
        # The channel hung up now, not when the teardown gets to report it (its Hangup-Time, its CDR's
        # end_uepoch): with time scaled, the few ms of teardown are seconds of FreeSWITCH time.
        ch.times["hangup"] = ch.times["hangup"] or at_us
        ch.hangup_cause = cause
        ch.answer_state = "hangup"
        ch.dynamic["hangup_cause"] = cause
        self.emit(ch, "client/CHANNEL_HANGUP", "CHANNEL_HANGUP", at_us)

    def hangup(self, cause: str) -> None:
        """Hang the caller up outside a bridge, and tear the socket down."""
        if not self.channel.alive:
            return
        self._hangup_channel(cause)
        self._socket_over_after_hangup()

    def _socket_over_after_hangup(self, then_complete: list[Channel] = ()) -> None:
        """The order after a hangup on an outbound socket (set-b README); the bridged agent's
        leg reports its own HANGUP_COMPLETE after the caller's (capture 11)."""
        ch = self.channel
        if self.socket_app is not None and self.session is not None and not self.session.closed.is_set():
            self.emit(ch, "client/CHANNEL_UNPARK", "CHANNEL_UNPARK")
            self.emit(ch, "client/CHANNEL_EXECUTE_COMPLETE/socket_end", "CHANNEL_EXECUTE_COMPLETE",
                      app=self.socket_app)
        self._teardown()
        for leg_ch in then_complete:
            if leg_ch is self.unbridged_by_leg:  # 13b: the client's end, then the leg's unbridge
                self.emit(leg_ch, "agent_answer/CHANNEL_UNBRIDGE", "CHANNEL_UNBRIDGE", leg_ch.times["hangup"])
            self.emit(leg_ch, f"{leg_ch.role_shape}/CHANNEL_HANGUP_COMPLETE", "CHANNEL_HANGUP_COMPLETE",
                      leg_ch.times["hangup"])
        session = self.session
        if session is not None and not session.closed.is_set():
            if session.lingering:
                session.send(linger_notice(ch.uuid, ch.name))
            else:
                session.send(disconnect_notice(ch.uuid))
                session.close_after_queue()

    def _teardown(self) -> None:
        ch = self.channel
        self.emit(ch, "client/CHANNEL_STATE/hangup", "CHANNEL_STATE")
        self.emit(ch, "client/CHANNEL_STATE/reporting", "CHANNEL_STATE")
        ch.call_state = "HANGUP"
        ch.times["hangup"] = ch.times["hangup"] or self.clock.now_us()
        self.emit(ch, "client/CHANNEL_HANGUP_COMPLETE", "CHANNEL_HANGUP_COMPLETE")

    def _socket_ended(self) -> None:
        """The socket application returned with the caller still there: the dialplan goes on."""
        ch = self.channel
        self.handle.returned_to_dialplan = True
        self.emit(ch, "client/CHANNEL_UNPARK", "CHANNEL_UNPARK")
        self.emit(ch, "client/CHANNEL_EXECUTE_COMPLETE/socket_end", "CHANNEL_EXECUTE_COMPLETE",
                  app=self.socket_app)
        ch.last_app = self.socket_app[:2]
        # The next dialplan action (voicemail, a queue) is played as a short wait, then a hangup.
        self.wait_fs(self.fake.dialplan_after_socket)
        self._hangup_channel(self.requested_cause if self.hangup_requested.is_set() else "NORMAL_CLEARING")
        self._teardown()


def _multiset_items(arg: str) -> list[str]:
    """multiset's arguments: space-separated, or split on the delimiter named by a leading ^^X."""
    if arg.startswith("^^") and len(arg) > 2:
        return [item for item in arg[3:].split(arg[2]) if item]
    return arg.split()


def _number(text: str) -> float:
    try:
        return float(text.strip())
    except ValueError:
        return 0.0
