"""The outbound-socket side: FreeSWITCH hands each inbound call to us and we bridge it.

Per call: one round trip for `connect`, the routing decision, then every command before the first
bridge is pipelined (FreeSWITCH runs them in order), so the caller waits for one exchange only.
"""
from __future__ import annotations

import ipaddress
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import gevent
import structlog
from gevent.pool import Pool
from gevent.server import StreamServer

from ..core.model import RoutePlan
from .dialstring import bridge_args, leg_string, multiset_args
from .session import RouterSession, SessionGone

log = structlog.get_logger("fsrouter.outbound")

# How long a bridge may run: a connected call lasts as long as people talk. The wait still ends at
# once when the socket closes.
MAX_CALL_SECONDS = 12 * 3600
REPLY_TIMEOUT = 5.0


@dataclass
class OutboundStats:
    calls: int = 0
    active: int = 0
    sticky_answered: int = 0
    fallback_answered: int = 0
    returned_to_dialplan: int = 0
    refused_peers: int = 0
    errors: int = 0
    decision_seconds: list[float] = field(default_factory=list)
    # The connect reply read -> the first bridge written: what the router adds before a phone rings.
    first_bridge_seconds: list[float] = field(default_factory=list)
    ended: deque = field(default_factory=lambda: deque(maxlen=10000))  # (uuid, monotonic) of the latest


def _answered(complete_headers: dict) -> bool:
    # The outcome lives in variable_originate_disposition; Application-Response is "_none_" whatever happened.
    return complete_headers.get("variable_originate_disposition") == "SUCCESS"


class CallRouter:
    """Routes one call on a connected session. `decide(caller, group, uuid)` never raises."""

    def __init__(self, decide: Callable[[str | None, str | None, str | None], RoutePlan | None],
                 stats: OutboundStats):
        self.decide = decide
        self.stats = stats

    def run(self, session: RouterSession) -> None:
        with gevent.Timeout(REPLY_TIMEOUT):
            session.connect()
        started = time.perf_counter()
        data = session.session_data or {}
        call_uuid = data.get("Unique-ID") or data.get("variable_uuid")
        plan = self.decide(data.get("Caller-Caller-ID-Number"), data.get("variable_fsrouter_group"), call_uuid)
        decided = time.perf_counter()
        self.stats.decision_seconds.append(decided - started)
        del self.stats.decision_seconds[:-10000]
        bound = log.bind(uuid=call_uuid)
        if plan is None or (plan.sticky is None and not plan.fallback):
            bound.info("call.no_route", reason=plan.reason if plan else "no_plan")
            with session.pipelined():
                session.own_events()
                done = self._set_route(session, plan, "none")
            session.wait(done, REPLY_TIMEOUT)
            self.stats.returned_to_dialplan += 1
            return
        first = "sticky" if plan.sticky else "fallback"
        first_legs = (leg_string(plan.sticky, "sticky") if plan.sticky
                      else bridge_args(plan.fallback, plan.strategy, "fallback"))
        # Nothing before the first bridge is waited for: one write, and the agent's phone rings.
        with session.pipelined():
            session.own_events()
            self._set_route(session, plan, first)
            session.execute_nowait("ring_ready")
            first_bridge = session.execute_nowait("bridge", first_legs)
        bridged = time.perf_counter()
        self.stats.first_bridge_seconds.append(bridged - started)
        del self.stats.first_bridge_seconds[:-10000]
        # Logged once the phone rings: rendering the line is not on the caller's time.
        bound.info("call.route", client=plan.client, group=plan.group, agent=plan.agent,
                   source=plan.source, reason=plan.reason, decision_ms=round((decided - started) * 1000, 3),
                   first_bridge_ms=round((bridged - started) * 1000, 3))
        if self._bridge_result(session, first_bridge, bound, first):
            self._count_answer(first)
            return
        if plan.sticky and plan.fallback:
            session.execute_nowait("set", "fsrouter_route=fallback")
            if self._bridge(session, bridge_args(plan.fallback, plan.strategy, "fallback"), bound, "fallback"):
                self._count_answer("fallback")
                return
        self._finish_unanswered(session, bound)

    def _count_answer(self, leg: str) -> None:
        if leg == "sticky":
            self.stats.sticky_answered += 1
        else:
            self.stats.fallback_answered += 1

    def _set_route(self, session: RouterSession, plan: RoutePlan | None, route: str):
        variables = {
            # Without continue_on_fail a failed bridge hangs up the caller (see the captures).
            "continue_on_fail": "true",
            "hangup_after_bridge": "true",
            "fsrouter_client": plan.client if plan else None,
            "fsrouter_agent": plan.agent if plan else None,
            "fsrouter_route": route,
            "fsrouter_reason": plan.reason if plan else "no_plan",
        }
        return session.execute_nowait("multiset", multiset_args(variables))

    def _bridge(self, session: RouterSession, args: str, bound, leg: str) -> bool:
        return self._bridge_result(session, session.execute_nowait("bridge", args), bound, leg)

    def _bridge_result(self, session: RouterSession, done, bound, leg: str) -> bool:
        complete = session.wait(done, MAX_CALL_SECONDS)
        disposition = complete.get("variable_originate_disposition")
        bound.info("call.bridge_done", leg=leg, disposition=disposition,
                   cause=complete.get("variable_last_bridge_hangup_cause"))
        return _answered(complete)

    def _finish_unanswered(self, session: RouterSession, bound) -> None:
        # Back to the dialplan: its next action (voicemail, a queue) runs when we close the socket.
        # fsrouter_nobody_answered tells the dialplan the group has rung already (so it goes to
        # voicemail rather than ringing everyone again). Set before the socket closes: waited for.
        done = session.execute_nowait("multiset", multiset_args({"fsrouter_route": "none",
                                                                 "fsrouter_nobody_answered": "true"}))
        session.wait(done, REPLY_TIMEOUT)
        self.stats.returned_to_dialplan += 1
        bound.info("call.unanswered", next="dialplan")


class OutboundServer:
    """Accepts FreeSWITCH's outbound-socket connections from allowed peers only."""

    def __init__(self, host: str, port: int, router: CallRouter, allowed_peers=("127.0.0.1", "::1"),
                 max_calls: int = 5000):
        self.router = router
        self.stats = router.stats
        self.allowed = [ipaddress.ip_network(p, strict=False) for p in allowed_peers]
        self.max_calls = max_calls
        # A pool, so stop() can wait for the calls in flight (without one gevent does not).
        self.calls = Pool()
        self.server = StreamServer((host, port), self._handle, backlog=1024, spawn=self.calls)

    @property
    def address(self) -> tuple[str, int]:
        return self.server.address

    def start(self) -> None:
        self.server.start()

    def stop(self, drain_timeout: float) -> None:
        """Stop accepting, let calls in flight finish for up to drain_timeout, then cut them."""
        self.server.stop(timeout=drain_timeout)

    def _allowed(self, peer: str) -> bool:
        try:
            address = ipaddress.ip_address(peer.split("%")[0])
        except ValueError:
            return False
        if address.version == 6 and address.ipv4_mapped:
            address = address.ipv4_mapped
        return any(address in net for net in self.allowed)

    def _handle(self, sock, peer) -> None:
        if not self._allowed(peer[0]):
            self.stats.refused_peers += 1
            log.warning("outbound.peer_refused", peer=peer[0])
            sock.close()
            return
        if self.stats.active >= self.max_calls:
            # Closing makes FreeSWITCH's socket application fail, so the dialplan rings the group.
            log.warning("outbound.over_capacity", active=self.stats.active)
            sock.close()
            return
        self.stats.calls += 1
        self.stats.active += 1
        session = RouterSession(peer, sock)
        try:
            self.router.run(session)
        except SessionGone:
            log.info("call.gone")
        except gevent.Timeout:
            self.stats.errors += 1
            log.warning("call.freeswitch_timeout")
        except Exception:
            self.stats.errors += 1
            log.exception("call.error")
        finally:
            self.stats.active -= 1
            self._close(session)
            uuid = (session.session_data or {}).get("Unique-ID")
            if uuid:
                self.stats.ended.append((uuid, time.monotonic()))

    @staticmethod
    def _close(session: RouterSession) -> None:
        try:
            if session.connected and not session._lingering:
                session.command("exit", REPLY_TIMEOUT)
        except (SessionGone, gevent.Timeout, OSError):
            pass
        session._run = False
        for closable in (session.sock_file, session.sock):
            try:
                closable.close()
            except OSError:
                pass
