"""FreeSWITCH's own CDRs in, finished calls out: what the catch-up learns from after a loss window.

Pure: no files, no database, no clock. One line of mod_cdr_csv, written with the templates
fsrouter ships (conf/cdr_csv.conf.xml), is one call. The fields were chosen from the bytes of a
real FreeSWITCH 1.10.12 (../shared/cdr-captures, README "Which fields are right"):

  1 started_at   ${strftime_tz(UTC ${start_epoch}|...)}     the `calls import` columns, exactly the
  2 direction    inbound | outbound (one template each)      proposed template recorded in pass 2
  3 client       inbound: ${orig_caller_id_number}           (pass2-proposed-templates-legs-ab/
                 outbound: ${destination_number}              fsrouter_in.csv, fsrouter_out.csv):
  4 agent        inbound: ${last_sent_callee_id_number}      right for every situation there,
                 outbound: ${orig_caller_id_number}           att_xfer included
  5 talk_seconds floor((end - last bridge) / 1 s), 0 unbridged
  6 uuid         ${uuid}: the client's channel (inbound), the agent's phone's channel (outbound)
  7 ${start_uepoch}   8 ${bridge_uepoch}   9 ${end_uepoch}   microseconds: the real times
  10 ${fsrouter_group}   11 ${fsrouter_route}   12 ${fsrouter_agent}   what the router set

Columns 7-12 are plain variable expansions, added so that a recovered call is dated by when it
really ended (the README's "An imported call's end is started_at + talk" is what made the
later-ended rule prefer the wrong call) and learns under its group's own settings. The values the
same channels had are in json-cdr/*.body `variables` (start_uepoch, bridge_uepoch, end_uepoch,
fsrouter_group ...).

Why these fields and not the obvious ones:
  * client: ``caller_id_number`` of the client's channel is the *agent's* after att_xfer's
    uuid_bridge (README table "What the client channel carries", row g: 1001); the caller
    profile's original caller ID keeps the client.
  * agent: ``dialed_user`` on the client's channel is the last user *dialled* (1004 in (c), the
    group ring's last leg); ``callee_id_number`` is the client after att_xfer.
  * talk: ``billsec`` runs from the first answer, so a blind transfer adds the first agent's
    time (f2: 11 s for a 6.9 s talk, enough to bind a client the listener rightly did not). The
    client channel's bridge_uepoch is its *last* bridge (a transfer starts a new caller profile).
  * legs=ab: att_xfer gives the client's channel an originator profile, and legs=a skips it
    (README row g: no line at all).

Everything in a line is hostile (column 3 of an inbound line is whatever caller ID the carrier
delivered): a line is taken only with exactly the template's number of cells, each one checked.
mod_cdr_csv does not escape a `"` inside a value, so a caller ID that tries to forge cells only
ever adds cells, and the line is refused.

Agreement with the listener (tests/test_cdr_replay.py): the same client, agent, direction,
answered flag, uuid, start and end to the microsecond; answered_at is the client's bridge, a
few ms after the agent's answer the listener dates it by; talk within a second (the listener counts
an inbound call from the agent leg's answer, the CDR from the client's bridge, which can come
some milliseconds later: 12 s live, 11 s here, in pass 2's (c)).
"""
from __future__ import annotations

import math
import re
from collections.abc import Collection, Sequence
from datetime import UTC, datetime, timedelta

from .model import CALL_UUID_RE, INBOUND, OUTBOUND, Call
from .numbers import client_or_none

COLUMNS = ("started_at", "direction", "client", "agent", "talk_seconds", "uuid",
           "start_uepoch", "bridge_uepoch", "end_uepoch", "group", "route", "sticky_agent")
NO_AGENT = "-"  # the inbound template's agent when the client's channel was never bridged

_NAME = re.compile(r"[0-9A-Za-z_.+-]{0,64}")  # group, route, extension: what fsrouter itself sets
_MAX_DIGITS = 17  # microseconds up to ~ year 5000; more is garbage
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class BadCdr(ValueError):
    """A line that is not one of fsrouter's CDR lines; the message is one line, safe to log."""


def _micros(name: str, text: str) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > _MAX_DIGITS:
        raise BadCdr(f"{name} is not a time in microseconds: {text[:40]!r}")
    return int(text)


def _name(name: str, text: str) -> str | None:
    if not _NAME.fullmatch(text):
        raise BadCdr(f"bad {name} {text[:40]!r}")
    return text or None


def _utc(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def whole_seconds(start_us: int, end_us: int) -> float:
    """Talk time as FreeSWITCH's billsec and the listener count it: whole seconds, rounded down."""
    if not start_us or end_us <= start_us:
        return 0.0
    return float(math.floor((end_us - start_us) / 1_000_000))


def call_from_cdr(cells: Sequence[str], agents: Collection[str], region: str) -> Call | None:
    """The call one CDR line tells of; None when it is nobody's call to learn from (an inbound
    caller that is not a client, an outside call not placed by an agent); BadCdr when the line is
    not a line of fsrouter's templates."""
    if len(cells) != len(COLUMNS):
        raise BadCdr(f"{len(cells)} cells, the template has {len(COLUMNS)}")
    row = dict(zip(COLUMNS, cells))
    direction = row["direction"]
    if direction not in (INBOUND, OUTBOUND):
        raise BadCdr(f"bad direction {direction[:20]!r}")
    uuid = row["uuid"]
    if not CALL_UUID_RE.fullmatch(uuid):
        raise BadCdr(f"bad uuid {uuid[:70]!r}")
    start_us = _micros("start_uepoch", row["start_uepoch"])
    bridge_us = _micros("bridge_uepoch", row["bridge_uepoch"])
    end_us = _micros("end_uepoch", row["end_uepoch"])
    if not start_us or end_us < start_us or (bridge_us and not start_us <= bridge_us <= end_us):
        raise BadCdr(f"times out of order: start {start_us}, bridge {bridge_us}, end {end_us}")
    group, route = _name("group", row["group"]), _name("route", row["route"])
    sticky_agent = _name("sticky agent", row["sticky_agent"])
    agent_cell = row["agent"]
    if direction == INBOUND:
        client = client_or_none(row["client"], region)
        if client is None:
            return None  # an agent calling the office, an internal test: no client's call
        # Someone who is not an agent took the call (voicemail, an IVR, a phone that sent its
        # Contact user instead of its extension): as the listener does, nobody answered it.
        agent = agent_cell if agent_cell != NO_AGENT and agent_cell in agents else None
        answered = agent is not None and bridge_us > 0
    else:
        agent = agent_cell if agent_cell in agents else None
        client = client_or_none(row["client"], region)
        if agent is None or client is None:
            return None  # not an agent calling a client
        # The agent's own channel is answered by the far end's answer: the bridge tells it, as
        # for the listener (events._outbound_call).
        answered = bridge_us > 0
    answered_us = bridge_us if answered else 0
    return Call(
        direction=direction, client=client, agent=agent,
        started_at=_utc(start_us), ended_at=_utc(end_us),
        talk_seconds=whole_seconds(answered_us, end_us), answered=answered, uuid=uuid,
        group=group, answered_at=_utc(answered_us) if answered else None, route=route,
        outcome="answered" if answered else "missed", sticky_agent=sticky_agent,
        handled_by=(agent,) if answered and agent else (),
    )
