"""Agent presence, gathered at the edge and handed to the (pure) routing decision as plain data.

Two sources, both kept here so routing.decide never touches a socket:

* BusyMap: who is on a call now, from the CHANNEL events the daemon already reads. An agent is
  busy from the answer of a leg that rings them (outbound channel, ``variable_dialed_user``) or
  from the creation of a call their own phone places (inbound channel, the agent as caller),
  until that channel hangs up. A hang-up that is lost does not keep them busy for ever: an entry
  older than ``max_age`` is dropped, and the whole map is cleared when the event socket
  reconnects (events may have been lost meanwhile).
* Registrations: is the agent's phone registered? Asked of FreeSWITCH with
  ``api sofia_contact user/<ext>@<domain>`` on the event-socket connection, with a short
  timeout and a short cache, kept fresh in the background and corrected at once by mod_sofia's
  ``sofia::register`` / ``unregister`` / ``expire`` events. ``error/user_not_registered`` is
  offline; a contact is online; anything else (no connection, a timeout, an error) is
  *unknown*, which routes as available: a bound agent is never skipped because FreeSWITCH could
  not be asked.

``Presence.availability`` combines them into the mapping routing.decide takes
(extension -> routing.OFFLINE | routing.BUSY; available agents are left out). Do-not-disturb and
disabled agents come from the store with the agents themselves (Agent.dnd, Agent.enabled).
"""
from __future__ import annotations

import re
import time
from collections.abc import Callable, Collection, Iterable, Mapping

import gevent
import structlog

from ..core.routing import AVAILABLE, BUSY, OFFLINE
from .headers import header_text

log = structlog.get_logger("fsrouter.esl.presence")

# `user/<ext>@<domain>`, optionally after [leg] or {global} variables: the only dial strings whose
# registration FreeSWITCH can be asked about. Gateways and the like are never checked.
_USER_DIAL = re.compile(r"\A(?:\[[^\]]*\]|\{[^}]*\}|<[^>]*>)*user/([0-9A-Za-z_.-]{1,32})@([^\s,|\[\]]+)\Z")
_SAFE_DOMAIN = re.compile(r"\A(?:[0-9A-Za-z_.:-]+|\$\{[A-Za-z_][A-Za-z0-9_]*\})\Z")

REGISTRATION_TIMEOUT = 0.1  # seconds one sofia_contact may take while a call waits
REGISTRATION_TTL = 5.0  # seconds an answer is fresh (an older one is used while asked again)
UNKNOWN_TTL = 1.0  # seconds a failed question is not asked again
BUSY_MAX_AGE = 4 * 3600.0  # seconds after which a call whose hang-up never came stops counting
REGISTRATION_EVENTS = ("sofia::register", "sofia::unregister", "sofia::expire")  # mod_sofia's


class BusyMap:
    """Which agents are on a call, from CHANNEL events (feed every event; it is cheap)."""

    def __init__(self, agents: Callable[[], Collection[str]] | Collection[str],
                 max_age: float = BUSY_MAX_AGE, clock: Callable[[], float] = time.monotonic,
                 ignore_channels: tuple[str, ...] = ("loopback/",)):
        self._agents = agents
        self.max_age = max_age
        self.clock = clock
        self.ignore_channels = tuple(ignore_channels)
        self._live: dict[str, tuple[str, float]] = {}  # channel uuid -> (agent, since)

    def _known(self) -> Collection[str]:
        return self._agents() if callable(self._agents) else self._agents

    def feed(self, headers: Mapping[str, str]) -> None:
        if not isinstance(headers, Mapping):
            return
        event = header_text(headers, "Event-Name")
        if not event.startswith("CHANNEL_"):
            return
        uuid = header_text(headers, "Unique-ID")
        if not uuid:
            return
        if event in ("CHANNEL_HANGUP", "CHANNEL_HANGUP_COMPLETE", "CHANNEL_DESTROY"):
            self._live.pop(uuid, None)
            return
        if uuid in self._live or event not in ("CHANNEL_CREATE", "CHANNEL_ANSWER", "CHANNEL_BRIDGE"):
            return
        if self.ignore_channels and header_text(headers, "Channel-Name").startswith(self.ignore_channels):
            return
        agent = self._agent_of(headers, event)
        if agent is not None:
            self._live[uuid] = (agent, self.clock())

    def _agent_of(self, headers: Mapping, event: str) -> str | None:
        known = self._known()
        if header_text(headers, "Call-Direction") == "outbound":
            # A leg ringing an agent: busy once it is answered, not while it rings.
            if event == "CHANNEL_CREATE" and not header_text(headers, "Caller-Channel-Answered-Time").strip("0"):
                return None
            names = ("variable_dialed_user", "variable_dialed_extension", "Caller-Destination-Number")
        else:
            # The agent's own phone placing a call: on the phone from the first moment.
            names = ("Caller-Caller-ID-Number", "variable_user_name", "Caller-Username")
        return next((v for v in (header_text(headers, n) for n in names) if v and v in known), None)

    def busy(self) -> set[str]:
        now = self.clock()
        stale = [uuid for uuid, (_, since) in self._live.items() if now - since > self.max_age]
        for uuid in stale:
            del self._live[uuid]
        return {agent for agent, _ in self._live.values()}

    def is_busy(self, ext: str) -> bool:
        return ext in self.busy()

    def reset(self) -> None:
        self._live.clear()


def contact_target(dial_string: str) -> str | None:
    """`user/<ext>@<domain>` for sofia_contact, from an agent's dial string; None when it is not
    a user/ dial string (a gateway, a loopback...) or its domain is not plainly safe to send."""
    match = _USER_DIAL.fullmatch(dial_string.strip())
    if not match or not _SAFE_DOMAIN.fullmatch(match.group(2)):
        return None
    return f"user/{match.group(1)}@{match.group(2)}"


def read_contact(answer: str) -> str | None:
    """OFFLINE, AVAILABLE, or None (unknown) from sofia_contact's answer."""
    text = (answer or "").strip()
    if text.startswith("error/user_not_registered"):
        return OFFLINE
    if text.startswith(("sofia/", "sip:")) or "sip:" in text.split(",")[0]:
        return AVAILABLE
    return None


class Registrations:
    """sofia_contact answers, cached. `api(command, timeout)` is EventListener.api."""

    def __init__(self, api: Callable[[str, float], str], timeout: float = REGISTRATION_TIMEOUT,
                 ttl: float = REGISTRATION_TTL, unknown_ttl: float = UNKNOWN_TTL,
                 clock: Callable[[], float] = time.monotonic):
        self.api = api
        self.timeout, self.ttl, self.unknown_ttl = timeout, ttl, unknown_ttl
        self.clock = clock
        self._cache: dict[str, tuple[str | None, float]] = {}  # target -> (state, expires)
        self._asking: dict[str, gevent.Greenlet] = {}
        self.questions = 0
        self.failures = 0

    def cached(self, target: str) -> tuple[bool, str | None]:
        hit = self._cache.get(target)
        if hit is not None and hit[1] > self.clock():
            return True, hit[0]
        return False, None

    def last_known(self, target: str) -> str | None:
        """The last answer, however old, without asking (None: never answered): for a page."""
        hit = self._cache.get(target)
        return hit[0] if hit is not None else None

    def state(self, target: str, wait: bool = True) -> str | None:
        """OFFLINE, AVAILABLE or None (unknown).

        An old answer is still answered (and asked again in the background): phones register for
        minutes, so a few seconds' staleness is worth far less than a round trip on every call.
        Only a target never answered since the event socket connected may be waited for (`wait`),
        up to the short timeout; `warm` asks for every agent at connect, so that is rare."""
        hit = self._cache.get(target)
        if hit is not None and hit[1] > self.clock():
            return hit[0]
        asking = self._ask_soon(target)
        if hit is not None or not wait:
            return hit[0] if hit is not None else None
        asking.join(self.timeout + 0.05)
        return self.cached(target)[1]

    def warm(self, targets: Iterable[str], margin: float = 0.0) -> None:
        """Ask, in the background, for every target not known or going stale within `margin`
        seconds (the event socket just connected, or the refresher's round)."""
        soon = self.clock() + margin
        for target in targets:
            hit = self._cache.get(target)
            if hit is None or hit[1] <= soon:
                self._ask_soon(target)

    def feed(self, headers: Mapping[str, str]) -> None:
        """mod_sofia's sofia::register / unregister / expire events: a phone that registers is
        online from now on; one that goes away is asked about again (another of the user's
        phones may still be registered)."""
        if not isinstance(headers, Mapping) or header_text(headers, "Event-Name") != "CUSTOM":
            return
        subclass = header_text(headers, "Event-Subclass")
        if subclass not in REGISTRATION_EVENTS:
            return
        user, host = header_text(headers, "from-user"), header_text(headers, "from-host")
        now = self.clock()
        for target, (state, _expires) in list(self._cache.items()):
            ext, _, domain = target[len("user/"):].partition("@")
            if ext != user or not (domain == host or domain.startswith("${")):
                continue
            if subclass == "sofia::register":
                self._cache[target] = (AVAILABLE, now + self.ttl)
            else:
                self._cache[target] = (state, now)  # stale: still answered while asked again
                self._ask_soon(target)

    def _ask_soon(self, target: str) -> gevent.Greenlet:
        asking = self._asking.get(target)
        if asking is None or asking.dead:
            asking = self._asking[target] = gevent.spawn(self._ask, target)
        return asking

    def _ask(self, target: str) -> None:
        self.questions += 1
        command = f"sofia_contact {target}"
        if "${" in target:
            command = "expand " + command  # a stock vars.xml defines domain_name globally
        try:
            state = read_contact(self.api(command, self.timeout))
        except BaseException as exc:  # gevent.Timeout, NotConnectedError, OSError...
            if isinstance(exc, (KeyboardInterrupt, SystemExit, gevent.GreenletExit)):
                raise
            self.failures += 1
            log.debug("presence.contact_failed", target=target, error=type(exc).__name__)
            state = None
        ttl = self.unknown_ttl if state is None else self.ttl
        self._cache[target] = (state, self.clock() + ttl)
        self._asking.pop(target, None)

    def forget(self) -> None:
        self._cache.clear()


class Presence:
    """What the daemon hands the service: availability for the agents of one decision."""

    def __init__(self, busy: BusyMap | None = None, registrations: Registrations | None = None):
        self.busy_map = busy
        self.registrations = registrations

    def warm(self, agents: Iterable, margin: float = 0.0) -> None:
        """Ask FreeSWITCH, in the background, for the registration of every agent (model.Agent)
        whose answer is missing or goes stale within `margin` seconds."""
        if self.registrations is not None:
            self.registrations.warm((t for t in (contact_target(a.dial_string) for a in agents) if t), margin)

    def feed(self, headers: Mapping[str, str]) -> None:
        """Every event the listener reads: calls for the busy map, registrations for the cache."""
        if self.busy_map is not None:
            self.busy_map.feed(headers)
        if self.registrations is not None:
            self.registrations.feed(headers)

    def registered(self, agent) -> bool | None:
        """Is the agent's (model.Agent) phone registered, from the cache only (a page never makes
        the daemon ask FreeSWITCH); None: unknown."""
        target = contact_target(agent.dial_string)
        if self.registrations is None or target is None:
            return None
        state = self.registrations.last_known(target)
        return None if state is None else state != OFFLINE

    def availability(self, agents: Iterable, wait_for: Collection[str] = ()) -> dict[str, str]:
        """extension -> OFFLINE | BUSY for the agents (model.Agent) that are not available.

        Registration is waited for (up to its short timeout) only for the agents in `wait_for`
        (the bound agents: their state decides whether the sticky leg rings) and only when
        FreeSWITCH has never answered for them since the event socket connected; otherwise the
        last answer is used, and asked again in the background when it is old.
        """
        busy = self.busy_map.busy() if self.busy_map is not None else set()
        out: dict[str, str] = {}
        for agent in agents:
            if agent.ext in busy:
                out[agent.ext] = BUSY
                continue
            if self.registrations is None or not agent.enabled or agent.dnd:
                continue
            target = contact_target(agent.dial_string)
            if target is None:
                continue
            if self.registrations.state(target, wait=agent.ext in wait_for) == OFFLINE:
                out[agent.ext] = OFFLINE
        return out


class LivePresence(Presence):
    """The daemon's presence: a Presence kept fresh on the event socket's connection.

    `agents()` gives the agents whose registration is worth asking (read from the store under
    `lock`); `connected()` says whether the event socket is up. Each (re)connection forgets what
    may have been missed meanwhile and asks again, in the background, so that no decision waits
    for a sofia_contact round trip (docs/presence-and-hours.md).
    """

    def __init__(self, busy: BusyMap, registrations: Registrations, agents: Callable[[], Iterable],
                 lock, connected: Callable[[], bool], refresh_every: float = 4.0):
        super().__init__(busy, registrations)
        self._agents = agents
        self._lock = lock
        self._connected = connected
        self.refresh_every = refresh_every
        self._refresher: gevent.Greenlet | None = None

    def on_connect(self) -> None:
        # Events may have been lost while disconnected: a hang-up among them would leave an agent
        # busy for hours. Forget, and learn again from the events to come.
        self.busy_map.reset()
        self.registrations.forget()
        gevent.spawn(self._warm)
        if self._refresher is None:  # from the first connection on
            self._refresher = gevent.spawn(self._refresh)

    def stop(self) -> None:
        if self._refresher is not None:
            self._refresher.kill(block=False)

    def availability(self, agents: Iterable, wait_for: Collection[str] = ()) -> dict[str, str]:
        """Presence for one decision. The decision holds the database lock; a sofia_contact round
        trip must not hold up other calls' decisions, so the lock is let go meanwhile."""
        held = self._lock._is_owned()
        saved = self._lock._release_save() if held else None
        try:
            found = super().availability(agents, wait_for)
        finally:
            if held:
                self._lock._acquire_restore(saved)
        # Everyone known to be on a call, candidate or not (a CRM-named agent, say): it is free.
        return {**dict.fromkeys(self.busy_map.busy(), BUSY), **found}

    def _refresh(self) -> None:
        """Keep the registration cache fresh (its answers live 5 s; older ones are still used
        while asked again), so that no decision waits and a sequential group's order knows every
        member from the first call."""
        while True:
            gevent.sleep(self.refresh_every)
            if self._connected():
                self._warm(margin=self.refresh_every + 0.5)  # what would go stale before the next round

    def _warm(self, margin: float = 0.0) -> None:
        try:
            with self._lock:  # the configuration may need a read
                agents = [a for a in self._agents() if a.enabled and not a.dnd]
            self.warm(agents, margin)
        except Exception as exc:  # the database away: the next round asks again
            log.debug("presence.refresh_failed", error=str(exc)[:200])
