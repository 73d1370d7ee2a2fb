"""A group's own values of some global settings: the group's value beats the global one.

Pure: a Settings and a Group in, the effective Settings (and where each value came from) out.
"""
from __future__ import annotations

from collections.abc import Iterable

from .model import Group
from .settings import SETTINGS, Settings

# The settings a group may set for itself.
GROUP_KEYS = ("sticky_timeout", "lookback", "learn_from", "mode")
GLOBAL = "global"
GROUP = "group"


def check(pairs: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """The pairs as stored: known keys only, each value in its canonical text; ValueError otherwise."""
    clean: dict[str, str] = {}
    base = Settings()
    for key, text in pairs:
        if key not in GROUP_KEYS:
            raise ValueError(f"a group cannot set {key!r}: only {', '.join(GROUP_KEYS)}")
        clean[key] = base.with_text(key, text).as_text()[key]
    return tuple(sorted(clean.items()))


def effective(settings: Settings, group: Group | None) -> Settings:
    """The settings a call to `group` runs under."""
    if group is None or not group.overrides:
        return settings
    for key, text in group.overrides:
        if key in GROUP_KEYS:
            settings = settings.with_text(key, text)
    return settings


def sources(settings: Settings, group: Group | None) -> dict[str, tuple[str, str]]:
    """For each key a group may set: (its effective text, GROUP or GLOBAL)."""
    own = dict(group.overrides) if group is not None else {}
    values = effective(settings, group).as_text()
    return {key: (values[key], GROUP if key in own else GLOBAL) for key in GROUP_KEYS}


assert set(GROUP_KEYS) <= set(SETTINGS)
