"""The tunable rules: one table of keys, their defaults, and how their text is read and shown.

The CLI, the store and the daemon all go through SETTINGS, so a default lives only here.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, fields, replace
from datetime import timedelta
from decimal import ROUND_HALF_EVEN, Decimal

import phonenumbers

from .model import INBOUND, OUTBOUND, ROUTE_SOURCES

MODES = ("manual", "auto", "both")
LEARN_FROM = (INBOUND, OUTBOUND, "both")

_DURATION_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", re.ASCII)
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_MICROSECONDS = 1_000_000


def parse_duration(text: str) -> timedelta:
    """'30d', '20s', '90m', '1.5h', '45' (seconds) -> timedelta; ValueError with a readable message.

    Exact to the microsecond (decimal arithmetic, not float), and a duration too large for a
    timedelta is a ValueError like any other bad duration, never an OverflowError.
    """
    match = _DURATION_RE.fullmatch(str(text).lower())
    if not match:
        raise ValueError(f"bad duration {text!r}: use a number with s, m, h, d or w, e.g. 20s, 90m, 30d")
    micro = Decimal(match.group(1)) * _UNIT_SECONDS[match.group(2)] * _MICROSECONDS
    try:
        return timedelta(microseconds=int(micro.to_integral_value(ROUND_HALF_EVEN)))
    except OverflowError:
        raise ValueError(f"bad duration {text!r}: too long") from None


def format_duration(value: timedelta) -> str:
    """The shortest text parse_duration reads back as exactly `value`: 30d, 20s, 90m, 1.5s, 0s."""
    micro = value // timedelta(microseconds=1)
    if micro % _MICROSECONDS:
        sign = "-" if micro < 0 else ""
        whole, frac = divmod(abs(micro), _MICROSECONDS)
        return f"{sign}{whole}.{frac:06d}".rstrip("0") + "s"
    seconds = micro // _MICROSECONDS
    for unit in ("w", "d", "h", "m"):
        size = _UNIT_SECONDS[unit]
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def parse_bool(text: str) -> bool:
    lowered = str(text).strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"bad boolean {text!r}: use true or false")


def _choice(options):
    def parse(text: str) -> str:
        value = str(text).strip().lower()
        if value not in options:
            raise ValueError(f"bad value {text!r}: choose one of {', '.join(options)}")
        return value
    return parse


def parse_count(text: str) -> int:
    value = str(text).strip()
    if not (value.isascii() and value.isdigit()) or len(value) > 6:
        raise ValueError(f"bad number {text!r}: a whole number, 0 or more")
    return int(value)


def parse_sources(text: str) -> tuple[str, ...]:
    """'crm,manual,auto' -> ('crm', 'manual', 'auto'): the order the sticky agent is looked for in."""
    names = tuple(part.strip().lower() for part in str(text).split(",") if part.strip())
    unknown = [name for name in names if name not in ROUTE_SOURCES]
    if not names or unknown or len(set(names)) != len(names):
        raise ValueError(f"bad sources {text!r}: some of {', '.join(ROUTE_SOURCES)}, comma separated, "
                         "each once (e.g. crm,manual,auto)")
    return names


def parse_region(text: str) -> str:
    region = str(text).strip().upper()
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f"bad region {text!r}: use a two-letter country code such as UA, DE, US")
    return region


@dataclass(frozen=True)
class Settings:
    lookback: timedelta = timedelta(days=30)  # 0 = forever
    sticky_timeout: timedelta = timedelta(seconds=20)
    min_talk: timedelta = timedelta(seconds=10)
    mode: str = "both"
    learn_from: str = "both"
    outbound_requires_answer: bool = False
    fallback_excludes_sticky: bool = False
    default_region: str = "UA"
    sources: tuple[str, ...] = ROUTE_SOURCES
    max_sticky_misses: int = 0  # 0 = off; see docs/presence-and-hours.md

    def with_text(self, key: str, text: str) -> Settings:
        """A copy with one key set from its text form; KeyError/ValueError on bad input."""
        spec = SETTINGS.get(key)
        if spec is None:
            raise KeyError(f"unknown setting {key!r}: one of {', '.join(SETTINGS)}")
        value = spec.parse(text)
        if key in ("sticky_timeout", "min_talk") and value <= timedelta(0):
            raise ValueError(f"{key} must be above zero")
        return replace(self, **{key: value})

    def as_text(self) -> dict[str, str]:
        return {key: spec.format(getattr(self, key)) for key, spec in SETTINGS.items()}

    @classmethod
    def from_text(cls, items: dict[str, str]) -> Settings:
        settings = cls()
        for key, text in items.items():
            if key in SETTINGS:
                settings = settings.with_text(key, text)
        return settings


@dataclass(frozen=True)
class SettingSpec:
    parse: callable
    format: callable
    help: str


def _bool_text(value: bool) -> str:
    return "true" if value else "false"


SETTINGS: dict[str, SettingSpec] = {
    "lookback": SettingSpec(parse_duration, format_duration,
                            "how old a learned binding's last call may be to still route (0 = forever)"),
    "sticky_timeout": SettingSpec(parse_duration, format_duration,
                                  "how long the bound agent rings before the group"),
    "min_talk": SettingSpec(parse_duration, format_duration,
                            "talk time an answered inbound call needs to bind the client"),
    "mode": SettingSpec(_choice(MODES), str, "which bindings route: manual, auto or both"),
    "learn_from": SettingSpec(_choice(LEARN_FROM), str, "which calls teach bindings: inbound, outbound or both"),
    "outbound_requires_answer": SettingSpec(parse_bool, _bool_text,
                                            "an agent's outbound call binds only if answered for min_talk"),
    "fallback_excludes_sticky": SettingSpec(parse_bool, _bool_text,
                                            "leave the bound agent out of the group ring that follows"),
    "default_region": SettingSpec(parse_region, str, "country for numbers dialled without a country code"),
    "sources": SettingSpec(parse_sources, ",".join,
                           "where the sticky agent comes from, in order: crm, manual, auto (mode still filters)"),
    "max_sticky_misses": SettingSpec(lambda text: parse_count(text), str,
                                     "a bound agent who misses this many sticky calls of a client in a row "
                                     "loses that learned binding (0 = off)"),
}

assert set(SETTINGS) == {f.name for f in fields(Settings)}
