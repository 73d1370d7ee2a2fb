"""What the agent's screen pop and the office board show: plain dicts, read from the store, the
hub and presence, and decided by the core (calls_now, missed, report, the ownership rule).

Nothing here is markup: the pages (pages.py, templates/, assets/live.js) put these values into
the page as text. Whatever comes from a caller ID or the CRM stays a plain string.
"""
from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

from ..core import ownership, report
from ..core.calls_now import OVER, CallNow, call_now
from ..core.missed import ANSWERED_AGAIN, CALLBACK, missed_calls
from ..core.model import MANUAL, Agent

LAST_CALLS = 5  # the card's "last calls"
_PHONE = {True: "registered", False: "not registered", None: "unknown"}


def iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else None


def holding(answer: ownership.Ownership) -> ownership.Verdict | None:
    """The binding a card shows: the one that routes now, else the holder's (the agent who is
    away only for the hour or their presence), else the first one tried, with why it does not."""
    if answer.owner is not None:
        return answer.owner
    held = next((v for v in answer.verdicts if v.agent == answer.holder), None)
    return held or next(iter(answer.verdicts), None)


def card_url(template: str, client: str) -> str | None:
    """The client's card in the CRM (config crm_card_url: {client} the E.164 number, {digits}
    the same without '+'), with the number percent-encoded; None when not configured."""
    if not template:
        return None
    return template.replace("{client}", quote(client, safe="")).replace("{digits}", quote(client.lstrip("+")))


def today_start(now: datetime) -> datetime:
    """Midnight of `now`'s day in the machine's time zone (the office's), as UTC."""
    local = now.astimezone()
    return local.replace(hour=0, minute=0, second=0, microsecond=0).astimezone(UTC)


class Screens:
    """Reads what a page shows. `lock` guards the store's connection (the daemon's db_lock);
    `presence` is the daemon's esl.presence.Presence (or None); `crm_name(client)` the client's
    name as the CRM last said it (or None); `clock` gives aware UTC now."""

    def __init__(self, service, hub, lock, presence=None, crm_name: Callable[[str], str | None] | None = None,
                 crm_card_url: str = "", clock: Callable[[], datetime] = lambda: datetime.now(UTC)):
        self.service = service
        self.store = service.store
        self.hub = hub
        self.lock = lock
        self.presence = presence
        self.crm_name = crm_name or (lambda client: None)
        self.crm_card_url = crm_card_url
        self.clock = clock

    # -- calls in progress ----------------------------------------------------------------------
    def calls(self) -> list[CallNow]:
        return [now for now in (call_now(story) for story in self.hub.calls()) if now and now.state != OVER]

    def agents(self) -> dict[str, Agent]:
        """The agents, as the service caches them; under the lock, since a stale cache reads the
        database on the connection a routing decision may be using."""
        with self.lock:
            return self.service.agents()

    def agent_name(self, ext: str | None) -> str | None:
        if ext is None:
            return None
        agent = self.agents().get(ext)
        return agent.name if agent else None

    # -- the agent's screen pop -----------------------------------------------------------------
    def card(self, call: CallNow, ext: str) -> dict:
        """The client's card for `ext`'s screen: who calls, whose client they are, what happened."""
        now = self.clock()
        with self.lock:
            client_id = self.store.client_of(call.client)[0]
            numbers = self.store.numbers_of(client_id)
            # The ownership rule, as `binding show` asks it, in the call's group.
            standing = self.service.standing_of(call.client, now)
            history = sorted((c for number in numbers for c in self.store.calls(client=number, limit=50)),
                             key=lambda c: c.started_at, reverse=True)
        bound = None
        answer = standing.groups.get(call.group or "") or standing.anywhere
        verdict = holding(answer)
        if verdict is not None:
            binding = verdict.binding
            bound = {"agent": binding.agent, "agent_name": self.agent_name(binding.agent),
                     "to_me": binding.agent == ext, "source": binding.source,
                     "kind": "set by hand" if binding.source == MANUAL else "learned from calls",
                     "since": iso(binding.at), "why": binding.why,
                     "state": "rings first on their calls now" if verdict.routes
                     else f"does not ring first now: {ownership.REASONS.get(verdict.state, verdict.state)}"}
        earlier = [c for c in history if c.uuid != call.call_uuid]
        # Clients are people: a call to or from any of their numbers closes their missed calls.
        open_missed = missed_calls(earlier, {client_id: answer.holder}, only_open=True,
                                   clients=dict.fromkeys(numbers, client_id))
        return {
            "call": call.call_uuid, "state": call.state, "missed": call.missed, "direction": call.direction,
            "client": call.client, "name": self.crm_name(call.client), "crm_url": card_url(self.crm_card_url, call.client),
            "since": iso(call.since), "route": call.route, "group": call.group,
            "passed_by": call.from_agent, "passed_by_name": self.agent_name(call.from_agent),
            "agent": call.agent, "agent_name": self.agent_name(call.agent),
            "bound": bound,
            "numbers": [n for n in numbers if n != call.client],
            "last_calls": [{"at": iso(c.started_at), "direction": c.direction, "number": c.client,
                            "agent": c.agent, "answered": bool(c.answered and c.agent),
                            "talk_seconds": round(c.talk_seconds)} for c in earlier[:LAST_CALLS]],
            "open_missed": [{"at": iso(row.call.started_at), "number": row.client, "owner": row.owner}
                            for row in open_missed],
        }

    def agent_view(self, ext: str, shown: dict[str, dict]) -> dict:
        """`ext`'s screen: the cards of the calls that concern them now, then the last one that
        did (`shown`: call uuid -> card, kept between updates by the page's stream)."""
        agent = self.agents().get(ext)
        current = {c.call_uuid: c for c in self.calls() if c.concerns(ext)}
        for uuid, call in current.items():
            old = shown.pop(uuid, None)
            if old is None or (old["state"], old["agent"], old["passed_by"]) != (call.state, call.agent,
                                                                                 call.from_agent):
                old = self.card(call, ext)
            shown[uuid] = old  # the latest last
        gone = [uuid for uuid in shown if uuid not in current]
        for uuid in gone[:-1]:  # of the calls that left this screen, the latest stays, as over
            del shown[uuid]
        for uuid in gone[-1:]:
            shown[uuid] = {**shown[uuid], "state": OVER}
        cards = [shown[uuid] for uuid in current] + [shown[uuid] for uuid in gone[-1:]]
        return {"ext": ext, "name": agent.name if agent else ext, "cards": cards}

    # -- the office board -----------------------------------------------------------------------
    def board_live(self) -> dict:
        """What changes with every event: calls in progress and presence (no database read but
        the cached agents)."""
        agents = self.agents()
        busy = self.presence.busy_map.busy() if self.presence and self.presence.busy_map else set()
        calls = []
        for c in self.calls():
            calls.append({"call": c.call_uuid, "client": c.client, "name": self.crm_name(c.client),
                          "state": c.state, "agent": c.agent, "ringing": list(c.ringing),
                          "since": iso(c.since), "state_since": iso(c.state_since),
                          "route": c.route, "passed_by": c.from_agent, "direction": c.direction})
        talking = {c["agent"] for c in calls if c["state"] == "talking"}
        return {"calls": calls,
                "agents": [{"ext": a.ext, "name": a.name, "enabled": a.enabled, "dnd": a.dnd,
                            "phone": _PHONE[self._registered(a)], "on_call": a.ext in busy or a.ext in talking}
                           for a in sorted(agents.values(), key=lambda a: a.ext)]}

    def _registered(self, agent: Agent) -> bool | None:
        """From presence's cache only (esl.presence.Presence.registered); None: unknown."""
        return self.presence.registered(agent) if self.presence else None

    def board_day(self) -> dict:
        """Today's missed calls with their callback state, and today's sticky hit rate."""
        now = self.clock()
        start = today_start(now)
        with self.lock:
            missed = self.service.missed_calls(since=start, now=now)  # as `calls missed` says them
            counted = self.store.call_counts(report.CALL_FIELDS, since=start)
        missed.sort(key=lambda r: r.call.started_at, reverse=True)
        total = report.build_counted(counted, []).total
        return {
            "day": start.astimezone().date().isoformat(),
            "missed": [{"call": r.call.uuid, "at": iso(r.call.started_at), "client": r.client,
                        "name": self.crm_name(r.client), "owner": r.owner, "open": r.is_open,
                        "called_back": r.closed_by == CALLBACK, "called_again": r.closed_by == ANSWERED_AGAIN,
                        "callback_agent": r.callback_agent,
                        "callback_after_s": _seconds(r.callback_after), "client_answered": r.client_answered}
                       for r in missed],
            "hit_rate": {"attempts": total.sticky_attempts, "answered": total.sticky_answered,
                         "rate": total.hit_rate},
        }


def _seconds(value: timedelta | None) -> float | None:
    return round(value.total_seconds()) if value is not None else None
