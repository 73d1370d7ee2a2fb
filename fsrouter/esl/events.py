"""CHANNEL events in, finished calls out: what the event listener learns bindings from.

Pure: no sockets, no database, no clock. Every time comes from the events themselves
(microseconds since the epoch), so replaying recorded bytes gives the same calls as the live
stream did. The rules below were read off real FreeSWITCH 1.10.12 captures
(../shared/esl-captures, see its README and expected.json).

What is a call
  * An inbound client call is an inbound channel whose caller ID normalises to a client and
    which either carries ``variable_fsrouter_group`` (it reached a group) or rang an agent.
    Its agent legs are outbound channels whose ``variable_dialed_user`` (else
    ``variable_dialed_extension``, else the destination number) is a known agent and whose
    originator is the client channel. ``rung`` lists those agents in the order their legs were
    created.
  * An agent's outbound call is an inbound channel (the agent's phone calling FreeSWITCH) whose
    caller (``Caller-Caller-ID-Number``, ``variable_user_name`` or ``Caller-Username``) is a known
    agent and whose destination normalises to a client. A channel placed by an agent is never a
    client's call, whatever caller ID the phone sends.
  * Nothing else: agent legs, carrier legs, and every channel of the test rig (the phones on
    the ``agents`` profile, the stand-in PSTN) only contribute to the calls above. Channels
    whose name starts with one of ``ignore_channels`` (loopback legs by default: they come in
    pairs that would double every call) are not followed at all.

Who answered, and transfers
  Every CHANNEL_BRIDGE between a client channel and an agent leg opens a segment on the client
  call (FreeSWITCH fires it on the bridge's originator, so either side may be ``Unique-ID``;
  ``Bridge-A/B-Unique-ID`` name both). The last segment whose leg answered is the answering
  agent: in a blind transfer the client channel is bridged on to a new leg it originates; in an
  attended transfer (SIP REFER with Replaces, or ``att_xfer``) FreeSWITCH uuid-bridges the
  client to the leg the operator's consultation call originated, and that leg is adopted by the
  client call at that bridge. Either way the operator who passed the call on is only an earlier
  segment. Talk time runs to the agent leg's hang-up, from its answer for a leg the client
  channel originated (this is the leg's own ``billsec``), and from the bridge to the client for
  an adopted leg (time spent consulting with the operator is not talk with the client). Whole
  seconds, rounded down like FreeSWITCH's ``billsec``.

When a call is finished
  At the client channel's CHANNEL_HANGUP_COMPLETE (the last event of a channel, with the final
  variables) once all its agent legs have hung up (CHANNEL_HANGUP or _COMPLETE): the agent
  leg's hang-up may arrive after the client's HANGUP_COMPLETE (capture 08 has the two
  HANGUP_COMPLETEs out of Event-Sequence order). A leg whose hang-up is lost does not hold the
  call for ever: LINGER of event time after the client hung up, the call is finished with what
  is known (``stats.expired``). ``flush()`` finishes them at once (shutdown).

What is skipped (counted, never raised)
  Events that are not CHANNEL_* (BACKGROUND_JOB...), events of ignored channels, events without
  a Unique-ID, and events of channels whose CHANNEL_CREATE was never seen (the listener
  connected mid-call, or events were lost): a call seen in part would be recorded wrongly (an
  answered call as missed), so it is not recorded. Malformed values (a timestamp that is not a
  number, a missing header) read as absent. At most ``max_open`` channels are followed; beyond
  that the oldest is dropped (``stats.evicted``).

The live story (core/live.py)
  As the events arrive, each call's transitions are handed to ``on_transition``, in FreeSWITCH's
  order, and the finished ``Call`` is told from the same state (its agent and ``handled_by`` are
  the story's last and every connected agent):
  * ringing: an agent leg the client's channel originated was created (CHANNEL_CREATE of the
    leg). An agent's outbound call has none: the agent list is not read for every channel
    created, and the agent knows whom they dial. A consultation leg (13: the
    operator's own call; 13b: originated by the operator's leg) rings for the operator, not for
    the client: the client's story takes it up at the transfer.
  * answered: the CHANNEL_BRIDGE that first joins the client to an answered leg it originated
    (the bridge's own event carries the router's fsrouter_agent/fsrouter_route, which the leg's
    CHANNEL_ANSWER, fired before it, does not: capture 12); an outbound call's first bridge.
  * transferred: a CHANNEL_BRIDGE that joins the client to an answered leg of another agent than
    the one it talked to: a blind transfer's new leg (12), the consultation leg (13, 13b).
  * missed (core.missed.is_missed of the finished call) and ended: when the call is finished.
  A call whose record never gets a bridge (not subscribed, lost) is told its answer at the end.
  An answered leg to a user/ phone of no known agent (``variable_dialed_user`` not an agent: a
  transfer to an extension nobody is bound to) is told as answered or transferred with that
  extension as its agent, so the group's supervisors hear of it (core.webhooks.recipients); it
  is no part of the call's record: the record's agent, talk and learning stay the agents'.

Event-Sequence
  FreeSWITCH numbers every event it fires, subscribed or not, so a listener subscribed to the
  CHANNEL events always sees gaps (the captures skip CHANNEL_STATE, CHANNEL_CALLSTATE...).
  ``stats.sequence_gaps`` counts the numbers skipped between consecutive events on one
  connection, net of late arrivals (``stats.sequence_late``: the captures have events delivered
  after a later-numbered one). It is a measure to compare over time, not a count of lost
  events; ``reset_sequence()`` starts over on a new connection.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from ..core import live
from ..core.missed import is_missed
from ..core.model import INBOUND, OUTBOUND, Call
from ..core.numbers import client_or_none
from .headers import header_text

# How long (event time) a hung-up client call waits for its agent legs' hang-ups. They come
# within milliseconds; this only bounds the wait when one is lost.
LINGER = timedelta(seconds=30)
GONE_REMEMBERED = 4096  # uuids of finished channels, so their stragglers are not "unknown"

_STICKY, _FALLBACK = "sticky", "fallback"  # fsrouter_route's values (esl/outbound.py sets them)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_DIGITS = 17  # microseconds up to ~ year 5000; more is garbage, and would overflow datetime


def _micros(value: str) -> int | None:
    """A FreeSWITCH time (microseconds since the epoch; "0" means "not yet"), or None."""
    if not (value.isascii() and value.isdigit()) or len(value) > _MAX_DIGITS:
        return None
    return int(value) or None


def _utc(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


@dataclass
class TrackerStats:
    events: int = 0  # header dicts fed
    calls: int = 0  # finished calls returned
    skipped: int = 0  # events that changed nothing: unknown, late, malformed, unrelated, ignored
    unknown: int = 0  # ... for a channel whose CHANNEL_CREATE was never seen
    late: int = 0  # ... for a channel already finished
    malformed: int = 0  # ... not a header dict, or no Unique-ID; also calls without any time
    sequence_gaps: int = 0  # Event-Sequence numbers skipped (see the module doc)
    sequence_late: int = 0  # events numbered before one already received
    evicted: int = 0  # channels dropped to stay within max_open
    expired: int = 0  # calls finished without every agent leg's hang-up
    open: int = 0  # channels followed now (a call is one or more)


@dataclass(eq=False)
class _Segment:
    """A stretch of the client channel bridged to one agent leg."""

    leg: _Channel
    start_us: int | None
    end_us: int | None = None


@dataclass(eq=False)
class _Channel:
    """What the events have said so far about one channel (latest non-empty value wins)."""

    uuid: str
    inbound: bool
    originator: str  # for an outbound leg: the channel that originated it
    created_us: int | None = None
    caller: str = ""  # as created: a later uuid_bridge may swap it (capture 13b)
    user_name: str = ""  # variable_user_name: the directory user that authenticated the call
    username: str = ""  # Caller-Username
    first_destination: str = ""  # as dialed, before any dialplan transfer rewrote it
    destination: str = ""
    dialed_user: str = ""
    dialed_extension: str = ""
    group: str = ""
    route: str = ""
    recording: str = ""  # variable_fsrouter_recording: where the dialplan records the call
    sticky_agent: str = ""  # variable_fsrouter_agent: the agent of the sticky leg, when there was one
    disposition: str = ""
    billsec: int | None = None
    answered_us: int | None = None
    bridged_us: int | None = None
    hangup_us: int | None = None
    last_us: int | None = None
    hung_up: bool = False
    agent: str | None = None  # outbound legs: the agent whose phone it rings
    # Outbound legs a client's call rang to a user/ phone of no known agent (a transfer to an
    # extension nobody is bound to, a dialplan ring group): told live (answered, transferred,
    # for the group's supervisors), never part of the call's record or its learning.
    extension: str = ""
    owner: _Channel | None = None  # the channel whose call this leg belongs to
    legs: list[_Channel] = field(default_factory=list)  # agent legs, in order
    segments: list[_Segment] = field(default_factory=list)
    # The live story of a call this channel is the root of (see CallTracker's doc):
    read: bool = False  # were `direction`, `client` and `caller_agent` read yet (once, when needed)
    direction: str = ""  # INBOUND: a client's call; OUTBOUND: an agent's call to a client; "": neither
    client: str | None = None
    caller_agent: str | None = None  # OUTBOUND: the agent who placed it
    handled: list[str] = field(default_factory=list)  # agents who talked to the client, in turn
    talking: str = ""  # who talks to the client now: an agent, or an extension of no agent
    hops: int = 0  # transfers told so far
    announced: bool = False  # legs: their `answered` was told; outbound roots: likewise
    seq: int = 0  # transitions told so far

    @classmethod
    def create(cls, uuid: str, headers: Mapping) -> _Channel:
        inbound = header_text(headers, "Call-Direction") == "inbound"
        # On a new outbound leg the other leg is its originator; later it may be a bridge peer.
        originator = "" if inbound else (header_text(headers, "variable_originator")
                                         or header_text(headers, "Other-Leg-Unique-ID"))
        return cls(uuid=uuid, inbound=inbound, originator=originator)

    def update(self, headers: Mapping, event: str, at_us: int | None) -> None:
        def latest(attr: str, name: str) -> None:
            value = header_text(headers, name)
            if value:
                setattr(self, attr, value)

        # The caller ID the channel was created with: att_xfer's uuid_bridge swaps the caller ID
        # of the client's channel for the agent's (capture 13b: its HANGUP_COMPLETE says 1001
        # while Caller-Orig-Caller-ID-Number and the CHANNEL_CREATE keep the client's number).
        self.caller = self.caller or header_text(headers, "Caller-Caller-ID-Number")
        latest("user_name", "variable_user_name")
        latest("username", "Caller-Username")
        latest("destination", "Caller-Destination-Number")
        self.first_destination = self.first_destination or self.destination
        latest("dialed_user", "variable_dialed_user")
        latest("dialed_extension", "variable_dialed_extension")
        latest("group", "variable_fsrouter_group")
        latest("route", "variable_fsrouter_route")
        latest("recording", "variable_fsrouter_recording")
        latest("sticky_agent", "variable_fsrouter_agent")
        latest("disposition", "variable_originate_disposition")
        billsec = header_text(headers, "variable_billsec")
        if billsec.isascii() and billsec.isdigit():
            self.billsec = int(billsec)
        self.last_us = at_us or self.last_us
        if self.created_us is None:
            self.created_us = _micros(header_text(headers, "Caller-Channel-Created-Time")) or at_us
        answered = _micros(header_text(headers, "Caller-Channel-Answered-Time"))
        if answered or event == "CHANNEL_ANSWER":
            self.answered_us = self.answered_us or answered or at_us
        if event in ("CHANNEL_HANGUP", "CHANNEL_HANGUP_COMPLETE"):
            self.hung_up = True
            # CHANNEL_HANGUP still says Hangup-Time 0: its own timestamp is the moment.
            self.hangup_us = _micros(header_text(headers, "Caller-Channel-Hangup-Time")) or self.hangup_us or at_us

    def is_agent(self, agents: Collection[str]) -> str | None:
        """The agent behind this channel's caller, for a channel an agent's phone placed."""
        return next((who for who in (self.caller, self.user_name, self.username) if who in agents), None)


class CallTracker:
    def __init__(self, agents: Callable[[], Collection[str]] | Collection[str], region: str,
                 ignore_channels=("loopback/",), max_open: int = 100_000,
                 on_transition: Callable[[live.Transition], None] | None = None):
        self._agents_source = agents
        self._on_transition = on_transition
        self.region = region
        self.ignore_channels = tuple(ignore_channels)
        self.max_open = max(1, int(max_open))
        self.stats = TrackerStats()
        self._open: OrderedDict[str, _Channel] = OrderedDict()  # not yet HANGUP_COMPLETE
        self._waiting: OrderedDict[str, _Channel] = OrderedDict()  # hung-up client calls awaiting legs
        self._gone: OrderedDict[str, None] = OrderedDict()
        self._last_sequence: int | None = None
        self._now_us = 0  # the latest event time seen: the only clock
        self._agents_now: frozenset[str] | None = None
        self._out: list[Call] = []

    # -- public ----------------------------------------------------------------------------
    def feed(self, headers: Mapping[str, str]) -> list[Call]:
        """The calls this event finished (usually none)."""
        self.stats.events += 1
        self._agents_now = None  # the agent list is read at most once per event, when needed
        if not isinstance(headers, Mapping):
            self._skip("malformed")
        else:
            self._watch_sequence(header_text(headers, "Event-Sequence"))
            at_us = _micros(header_text(headers, "Event-Date-Timestamp"))
            self._now_us = max(self._now_us, at_us or 0)
            self._apply(headers, at_us)
            self._expire()
        return self._drain()

    def finished(self, uuid: str) -> bool:
        """Has the call of this (client) channel been finished, its record handed out?"""
        return uuid in self._gone and uuid not in self._waiting

    def flush(self) -> list[Call]:
        """Finish every hung-up call still waiting for an agent leg's hang-up (at shutdown)."""
        for root in list(self._waiting.values()):
            self.stats.expired += 1
            self._finish(root)
        return self._drain()

    def reset_sequence(self) -> None:
        """A new connection: its first Event-Sequence is no gap."""
        self._last_sequence = None

    def forget_open(self) -> list[Call]:
        """A new connection after a loss window: the channels followed now may have lost events
        meanwhile (a bridge, an answer, an agent leg's creation), and a call seen in part would be
        recorded wrongly, so they are dropped, their later events counted as late; the CDR
        catch-up records those calls whole (esl/catchup.py). Calls already hung up and waiting
        for a leg's hang-up are finished now, with what is known (as flush())."""
        for uuid in self._open:
            self._remember_gone(uuid)
        self._open.clear()
        return self.flush()

    # -- events ----------------------------------------------------------------------------
    def _apply(self, headers: Mapping, at_us: int | None) -> None:
        event = header_text(headers, "Event-Name")
        uuid = header_text(headers, "Unique-ID")
        if not event.startswith("CHANNEL_"):
            return self._skip()
        if not uuid:
            return self._skip("malformed")
        if self.ignore_channels and header_text(headers, "Channel-Name").startswith(self.ignore_channels):
            return self._skip()
        channel = self._open.get(uuid)
        if channel is None:
            if event != "CHANNEL_CREATE":
                return self._skip("late" if uuid in self._gone else "unknown")
            channel = self._track(uuid, headers)
        channel.update(headers, event, at_us)
        if event == "CHANNEL_CREATE":
            self._attach(channel)
        elif event in ("CHANNEL_BRIDGE", "CHANNEL_UNBRIDGE"):
            self._bridge(headers, at_us, joined=event == "CHANNEL_BRIDGE")
        elif event in ("CHANNEL_HANGUP", "CHANNEL_HANGUP_COMPLETE"):
            self._hung_up(channel, complete=event == "CHANNEL_HANGUP_COMPLETE")

    def _track(self, uuid: str, headers: Mapping) -> _Channel:
        while len(self._open) + len(self._waiting) >= self.max_open:
            if self._waiting:  # already hung up: finish it early rather than lose it
                self.stats.expired += 1
                self._finish(next(iter(self._waiting.values())))
            else:
                self._open.popitem(last=False)  # its later events will count as unknown
                self.stats.evicted += 1
        channel = _Channel.create(uuid, headers)
        self._open[uuid] = channel
        return channel

    def _attach(self, channel: _Channel) -> None:
        """A new outbound leg that rings an agent joins the call of the channel that originated it."""
        if channel.inbound:
            return
        agents = self._agents()
        dialed = (channel.dialed_user, channel.dialed_extension, channel.first_destination)
        channel.agent = next((d for d in dialed if d and d in agents), None)
        owner = self._open.get(channel.originator)
        if channel.agent is None and channel.dialed_user and owner is not None:
            # Told only if the client's call gets bridged to it (_bridge), whoever originated
            # it: the client's channel (12), the operator's phone (13) or leg (13b).
            channel.extension = channel.dialed_user
            return
        if channel.agent is not None and owner is not None:
            channel.owner = owner
            owner.legs.append(channel)
            if owner.inbound and self._read(owner) == INBOUND:
                self._tell(owner, live.RINGING, channel.created_us, agent=channel.agent,
                           route=_leg_route(owner, channel))

    def _bridge(self, headers: Mapping, at_us: int | None, joined: bool) -> None:
        a = self._open.get(header_text(headers, "Bridge-A-Unique-ID") or header_text(headers, "Unique-ID"))
        b = self._open.get(header_text(headers, "Bridge-B-Unique-ID") or header_text(headers, "Other-Leg-Unique-ID"))
        if joined:
            for channel in (a, b):
                if channel is not None and channel.bridged_us is None:
                    channel.bridged_us = at_us
                    if channel.inbound and self._read(channel) == OUTBOUND:
                        channel.announced = True
                        self._tell(channel, live.ANSWERED, at_us, agent=channel.caller_agent)
        if a is None or b is None or a.inbound == b.inbound:
            return
        root, leg = (a, b) if a.inbound else (b, a)
        if leg.agent is None:
            # The client went to something that is not an agent (IVR, voicemail, outside), or
            # to the phone of an extension no agent has: that one is told, for the supervisors.
            if joined and leg.extension and leg.answered_us and self._read(root) == INBOUND:
                self._connected(root, leg, at_us)
            return
        if not joined:
            for segment in reversed(root.segments):
                if segment.leg is leg and segment.end_us is None:
                    segment.end_us = at_us
                    break
            return
        if leg.owner is not root:
            # Attended transfer: the leg the operator's consultation call originated now talks
            # to the client, so it belongs to the client's call from here on.
            previous = leg.owner
            if previous is not None:
                previous.legs.remove(leg)
                self._finish_if_ready(previous)
            leg.owner = root
            root.legs.append(leg)
        root.segments.append(_Segment(leg, at_us))
        if leg.answered_us and self._read(root) == INBOUND:
            self._connected(root, leg, at_us)

    def _connected(self, root: _Channel, leg: _Channel, at_us: int | None) -> None:
        """The client now talks to `leg`'s agent (or extension): an answer, a transfer, or both
        (12's new leg)."""
        who = leg.agent or leg.extension
        talking = root.talking or None
        if not leg.announced and (leg.originator == root.uuid or talking is None):
            leg.announced = True
            self._tell(root, live.ANSWERED, at_us, agent=who,
                       route=_leg_route(root, leg) if leg.agent else None)
        if talking == who:
            return
        if leg.agent:
            root.handled.append(leg.agent)
        root.talking = who
        if talking is not None:
            root.hops += 1
            self._tell(root, live.TRANSFERRED, at_us, agent=who, from_agent=talking, hop=root.hops)

    def _hung_up(self, channel: _Channel, complete: bool) -> None:
        if complete:
            del self._open[channel.uuid]
            self._remember_gone(channel.uuid)
            if channel.inbound:
                self._waiting[channel.uuid] = channel
                self._finish_if_ready(channel)
        if channel.owner is not None:
            self._finish_if_ready(channel.owner)

    def _finish_if_ready(self, root: _Channel) -> None:
        if self._waiting.get(root.uuid) is root and all(leg.hung_up for leg in root.legs):
            self._finish(root)

    def _expire(self) -> None:
        linger = LINGER // timedelta(microseconds=1)
        while self._waiting:
            root = next(iter(self._waiting.values()))
            if (root.hangup_us or 0) + linger > self._now_us:
                return
            self.stats.expired += 1
            self._finish(root)

    def _finish(self, root: _Channel) -> None:
        del self._waiting[root.uuid]
        if root.created_us is None or (root.hangup_us or root.last_us) is None:
            self.stats.malformed += 1  # not one readable time on the channel: nothing to record
            return
        call = self._classify(root)
        if call is not None:
            self._out.append(call)
            self._tell_end(root, call)

    def _tell_end(self, root: _Channel, call: Call) -> None:
        if call.answered and call.agent and not (root.handled or root.announced):
            # No bridge was seen (not subscribed, or lost): the answer is told with the end.
            root.announced = True
            self._tell(root, live.ANSWERED, root.hangup_us, agent=call.agent, route=call.route)
        if is_missed(call):
            self._tell(root, live.MISSED, root.hangup_us, agent=call.rung[-1] if call.rung else None,
                       call=call)
        self._tell(root, live.ENDED, root.hangup_us, agent=call.agent, call=call)

    # -- calls -----------------------------------------------------------------------------
    def _classify(self, root: _Channel) -> Call | None:
        agents = self._agents()
        agent = root.is_agent(agents)
        if agent is not None:
            client = (client_or_none(root.destination, self.region)
                      or client_or_none(root.first_destination, self.region))
            return _outbound_call(root, agent, client) if client else None
        client = root.client if self._read(root) == INBOUND else None
        if client is None or not (root.group or root.legs):
            return None
        return _inbound_call(root, client)

    # -- the live story --------------------------------------------------------------------
    def _read(self, root: _Channel) -> str:
        """Whose call an inbound channel is, read once (by its caller as created, which att_xfer
        does not swap): an agent's call to a client (OUTBOUND), a client's call (INBOUND), or
        neither (""). Read when first needed: a client's number is parsed only for a channel
        that rings an agent or finishes."""
        if not root.read:
            root.read = True
            agent = root.is_agent(self._agents())
            if agent is not None:
                client = client_or_none(root.destination, self.region)
                if client:
                    root.direction, root.client, root.caller_agent = OUTBOUND, client, agent
            else:
                root.client = client_or_none(root.caller, self.region)
                root.direction = INBOUND if root.client else ""
        return root.direction

    def _tell(self, root: _Channel, kind: str, at_us: int | None, call: Call | None = None,
              **fields) -> None:
        root.seq += 1
        if self._on_transition is None:
            return
        self._on_transition(live.Transition(
            kind, root.uuid, _utc(at_us or self._now_us), call.direction if call else root.direction,
            call.client if call else root.client or "",
            group=root.group or None, seq=root.seq, call=call, **fields))

    # -- bookkeeping -----------------------------------------------------------------------
    def _agents(self) -> frozenset[str]:
        if self._agents_now is None:
            source = self._agents_source
            self._agents_now = frozenset(source() if callable(source) else source)
        return self._agents_now

    def _watch_sequence(self, text: str) -> None:
        if not (text.isascii() and text.isdigit()):
            return
        sequence, last = int(text), self._last_sequence
        if last is None or sequence > last:
            if last is not None:
                self.stats.sequence_gaps += sequence - last - 1
            self._last_sequence = sequence
        else:
            # Numbered before an event already received: it was counted missing back then.
            self.stats.sequence_late += 1
            if sequence < last and self.stats.sequence_gaps > 0:
                self.stats.sequence_gaps -= 1

    def _skip(self, why: str | None = None) -> None:
        self.stats.skipped += 1
        if why is not None:
            setattr(self.stats, why, getattr(self.stats, why) + 1)

    def _remember_gone(self, uuid: str) -> None:
        self._gone[uuid] = None
        if len(self._gone) > GONE_REMEMBERED:
            self._gone.popitem(last=False)

    def _drain(self) -> list[Call]:
        out, self._out = self._out, []
        self.stats.calls += len(out)
        self.stats.open = len(self._open) + len(self._waiting)
        return out


def _answering_segment(root: _Channel) -> _Segment | None:
    """The last agent who answered and was bridged to the client; the operator who passed the
    call on is an earlier segment. Without any CHANNEL_BRIDGE (not subscribed, or lost), the
    agent leg that answered last."""
    answered = [s for s in root.segments if s.leg.answered_us]
    if answered:
        return max(enumerate(answered), key=lambda item: (item[1].start_us or 0, item[0]))[1]
    if root.segments:
        return None
    legs = [leg for leg in root.legs if leg.answered_us]
    if not legs:
        return None
    leg = max(legs, key=lambda leg: leg.answered_us)
    return _Segment(leg, leg.answered_us)


def _handled_by(root: _Channel, agent: str | None) -> tuple[str, ...]:
    """The agents who talked to the client, in turn, as the live story told them (answered, then
    each transferred); more than one means the call was transferred. A call whose bridges were
    not seen ends with the agent the record found."""
    if not agent:
        return ()
    agents = list(root.handled)
    if not agents or agents[-1] != agent:
        agents.append(agent)
    return tuple(agents)


def _leg_route(root: _Channel, leg: _Channel) -> str | None:
    """How fsrouter rang this leg: "sticky" (the first leg to the router's fsrouter_agent),
    "fallback" (any other leg while the router's fsrouter_route says so), or None (fsrouter did
    not route the call, or the leg is a transfer's: the client had talked to an agent already).
    Read off the root's variables as far as its events have shown them: at a leg's CREATE the
    router's multiset is not shown yet (capture 12: the root's next event is its ANSWER)."""
    if leg.route in (_STICKY, _FALLBACK):
        return leg.route  # set on the leg itself ([fsrouter_route=...] in its dial string)
    if root.handled:
        return None
    if root.sticky_agent and leg.agent == root.sticky_agent:
        first = next((other for other in root.legs if other.agent == leg.agent), leg)
        if first is leg:
            return _STICKY
    return _FALLBACK if root.route in (_STICKY, _FALLBACK) else None


def _whole_seconds(start_us: int | None, end_us: int | None) -> float:
    if not start_us or not end_us or end_us <= start_us:
        return 0.0
    return float(math.floor((end_us - start_us) / 1_000_000))


def _inbound_call(root: _Channel, client: str) -> Call:
    ended_us = root.hangup_us or root.last_us
    segment = _answering_segment(root)
    agent = answered_us = None
    talk = 0.0
    if segment is not None:
        leg = segment.leg
        agent = leg.agent
        # A leg the client channel rang talks from its answer; an adopted (transferred-to) leg
        # from its bridge to the client, not from its answer to the operator.
        answered_us = leg.answered_us if leg.originator == root.uuid else max(
            leg.answered_us or 0, segment.start_us or 0)
        talk = _whole_seconds(answered_us, leg.hangup_us or segment.end_us or ended_us)
    return Call(
        direction=INBOUND, client=client, agent=agent,
        started_at=_utc(root.created_us), ended_at=_utc(ended_us),
        talk_seconds=talk, answered=agent is not None, uuid=root.uuid,
        group=root.group or None, answered_at=_utc(answered_us) if answered_us else None,
        rung=tuple(leg.agent for leg in root.legs), route=root.route or None,
        recording=root.recording or None, handled_by=_handled_by(root, agent),
        outcome="answered" if agent else "missed", sticky_agent=root.sticky_agent or None,
    )


def _outbound_call(channel: _Channel, agent: str, client: str) -> Call:
    ended_us = channel.hangup_us or channel.last_us
    # The agent's own channel is answered by the far end's answer (early media only pre-answers
    # it), but a dialplan may answer it itself: the bridge or the bridge's outcome decides.
    if channel.bridged_us or channel.disposition:
        answered = channel.bridged_us is not None or channel.disposition == "SUCCESS"
    else:
        answered = bool(channel.billsec)
    answered_us = channel.answered_us if answered else None
    return Call(
        direction=OUTBOUND, client=client, agent=agent,
        started_at=_utc(channel.created_us), ended_at=_utc(ended_us),
        talk_seconds=_whole_seconds(answered_us, ended_us), answered=answered, uuid=channel.uuid,
        group=channel.group or None, answered_at=_utc(answered_us) if answered_us else None,
        route=channel.route or None, outcome="answered" if answered else "missed",
        recording=channel.recording or None, handled_by=(agent,) if answered else (),
    )
