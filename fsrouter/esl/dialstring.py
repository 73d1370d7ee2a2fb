"""Bridge arguments from a routing plan.

Everything here comes from the sysadmin's configuration (agent dial strings) and from numbers the
core computed: no text the caller sent is ever put into a dial string.
"""
from __future__ import annotations

import re

from ..core.model import SEQUENTIAL, Leg

# A dial string may open with {channel variables} for the whole originate; per-leg variables go in
# [..]. We turn a leading {..} into [..] so it can sit beside this leg's own leg_timeout.
_LEADING_GLOBALS = re.compile(r"^\{([^{}]*)\}")
_SAFE_VALUE = re.compile(r"^[0-9A-Za-z_+.-]*$")


class UnsafeValue(ValueError):
    """A value that would change the meaning of a command sent to FreeSWITCH."""


def leg_string(leg: Leg, route: str | None = None) -> str:
    """One leg: its own [variables], then its dial string. `route` ("sticky", "fallback") is set
    on the leg as fsrouter_route: FreeSWITCH puts a leg's [variables] on its channel before the
    channel's CHANNEL_CREATE (capture 08: variable_leg_timeout on the agent legs' CREATE), so the
    event listener tells which way the agent was rung as the phone starts ringing, where the
    client channel's own fsrouter_route shows only on its next event (capture 12)."""
    seconds = max(1, round(leg.timeout.total_seconds()))
    variables = [f"leg_timeout={seconds}"]
    if route is not None:
        variables.append(f"fsrouter_route={safe_value(route)}")
    dial = leg.dial_string.strip()
    match = _LEADING_GLOBALS.match(dial)
    if match:
        if match.group(1):
            variables.append(match.group(1))
        dial = dial[match.end():]
    return f"[{','.join(variables)}]{dial}"


def bridge_args(legs: tuple[Leg, ...] | list[Leg], strategy: str = "simultaneous", route: str | None = None) -> str:
    """One bridge: ',' rings the legs together, '|' one after another (FreeSWITCH failover)."""
    separator = "|" if strategy == SEQUENTIAL else ","
    return separator.join(leg_string(leg, route) for leg in legs)


def safe_value(value: str | None) -> str:
    """A channel-variable value we set: only characters with no meaning to FreeSWITCH's parsers."""
    text = "" if value is None else str(value)
    if not _SAFE_VALUE.match(text) or len(text) > 128:
        raise UnsafeValue(f"refusing to send value {text[:40]!r} to FreeSWITCH")
    return text


def multiset_args(variables: dict[str, str | None]) -> str:
    """`multiset` arguments with an explicit '^^:' delimiter, so no value can split another."""
    parts = [f"{name}={safe_value(value)}" for name, value in variables.items()]
    return "^^:" + ":".join(parts)
