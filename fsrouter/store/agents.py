"""Agents, groups and their members: who calls ring, and how a group rings."""
from __future__ import annotations

import json
import re
from datetime import timedelta

from ..core import hours, overrides
from ..core.model import (
    EXTENSION_RE,
    GROUP_NAME_RE,
    SCOPE_ANY,
    SIMULTANEOUS,
    STICKY_SCOPES,
    STRATEGIES,
    Agent,
    Group,
    default_dial_string,
)
from .connection import StoreError, _one_line, _reconnects

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class AgentTables:
    """The Store's methods on agents, groups and members."""

    @_reconnects
    def agents(self) -> dict[str, Agent]:
        groups: dict[str, set[str]] = {}
        for agent, group in self.m.Member.select(self.m.Member.agent, self.m.Member.grp).tuples():
            groups.setdefault(agent, set()).add(group)
        return {
            row.ext: Agent(ext=row.ext, name=row.name, dial_string=row.dial_string, priority=row.priority,
                           crm_id=row.crm_id,
                           enabled=bool(row.enabled), groups=frozenset(groups.get(row.ext, ())),
                           dnd=bool(row.dnd))
            for row in self.m.Agent.select().order_by(self.m.Agent.ext)
        }

    def agent(self, ext: str) -> Agent | None:
        return self.agents().get(ext)

    def add_agent(self, ext: str, name: str, dial_string: str | None = None, priority: int = 100,
                  groups=()) -> Agent:
        if not isinstance(ext, str) or not EXTENSION_RE.fullmatch(ext):
            raise StoreError(f"bad extension {ext!r}: use 1-32 letters, digits, '_', '.' or '-'")
        name = _clean_name(name)
        dial_string = _clean_dial_string(dial_string) if dial_string else default_dial_string(ext)
        priority = _clean_priority(priority)
        groups = tuple(dict.fromkeys(groups))
        with self.transaction():
            if self.m.Agent.get_or_none(self.m.Agent.ext == ext) is not None:
                raise StoreError(f"agent {ext} already exists")
            self._require_groups(groups)
            self.m.Agent.create(ext=ext, name=name, dial_string=dial_string, priority=priority, enabled=True)
            for group in groups:
                self.m.Member.create(agent=ext, grp=group)
        return self.agents()[ext]

    def update_agent(self, ext: str, name: str | None = None, dial_string: str | None = None,
                     priority: int | None = None) -> Agent:
        changes = {}
        if name is not None:
            changes["name"] = _clean_name(name)
        if dial_string is not None:
            changes["dial_string"] = (_clean_dial_string(dial_string) if dial_string
                                      else default_dial_string(ext))
        if priority is not None:
            changes["priority"] = _clean_priority(priority)
        with self.transaction():
            self.require_agent(ext)
            if changes:
                self.m.Agent.update(**changes).where(self.m.Agent.ext == ext).execute()
        return self.agents()[ext]

    def set_agent_crm_id(self, ext: str, crm_id: str | None) -> Agent:
        """The agent's user id in the CRM (a CRM lookup's answer maps to them); None or "" clears it."""
        crm_id = (crm_id or "").strip() or None
        if crm_id is not None and (len(crm_id) > 128 or _CONTROL.search(crm_id)):
            raise StoreError("the CRM id must be at most 128 characters, without control characters")
        with self.transaction():
            self.require_agent(ext)
            holder = self.m.Agent.get_or_none(self.m.Agent.crm_id == crm_id) if crm_id else None
            if holder is not None and holder.ext != ext:
                raise StoreError(f"CRM id {crm_id!r} is already agent {holder.ext}'s")
            self.m.Agent.update(crm_id=crm_id).where(self.m.Agent.ext == ext).execute()
        return self.agents()[ext]

    def set_agent_enabled(self, ext: str, enabled: bool) -> None:
        with self.transaction():
            self.require_agent(ext)
            self.m.Agent.update(enabled=bool(enabled)).where(self.m.Agent.ext == ext).execute()

    def remove_agent(self, ext: str) -> None:
        """The agent and their group memberships go; their bindings stay (shown as stale)."""
        with self.transaction():
            self.require_agent(ext)
            self.m.Member.delete().where(self.m.Member.agent == ext).execute()
            self.m.Agent.delete().where(self.m.Agent.ext == ext).execute()

    def require_agent(self, ext: str) -> None:
        if self.m.Agent.get_or_none(self.m.Agent.ext == ext) is None:
            raise StoreError(f"unknown agent {ext!r}")

    @_reconnects
    def groups(self) -> dict[str, Group]:
        return {row.name: _group(row) for row in self.m.Group.select().order_by(self.m.Group.name)}

    def group(self, name: str) -> Group | None:
        row = self.m.Group.get_or_none(self.m.Group.name == name)
        return _group(row) if row is not None else None

    def add_group(self, name: str, strategy: str = SIMULTANEOUS, sticky_scope: str = SCOPE_ANY,
                  ring_timeout: timedelta = timedelta(seconds=30)) -> Group:
        if not isinstance(name, str) or not GROUP_NAME_RE.fullmatch(name):
            raise StoreError(f"bad group name {name!r}: use 1-64 letters, digits, '_', '.' or '-'")
        if strategy not in STRATEGIES:
            raise StoreError(f"bad strategy {strategy!r}: one of {', '.join(STRATEGIES)}")
        if sticky_scope not in STICKY_SCOPES:
            raise StoreError(f"bad sticky scope {sticky_scope!r}: one of {', '.join(STICKY_SCOPES)}")
        if not isinstance(ring_timeout, timedelta) or ring_timeout <= timedelta(0):
            raise StoreError("ring timeout must be above zero")
        with self.transaction():
            if self.m.Group.get_or_none(self.m.Group.name == name) is not None:
                raise StoreError(f"group {name} already exists")
            self.m.Group.create(name=name, strategy=strategy, sticky_scope=sticky_scope,
                                ring_timeout=ring_timeout.total_seconds())
        return self.group(name)

    def remove_group(self, name: str) -> None:
        """The group and its memberships go; its agents stay."""
        with self.transaction():
            self._require_groups([name])
            self.m.Member.delete().where(self.m.Member.grp == name).execute()
            self.m.Group.delete().where(self.m.Group.name == name).execute()

    def add_member(self, group: str, ext: str) -> None:
        with self.transaction():
            self._require_groups([group])
            self.require_agent(ext)
            self.m.Member.insert(agent=ext, grp=group).on_conflict_ignore().execute()

    def remove_member(self, group: str, ext: str) -> None:
        with self.transaction():
            self._require_groups([group])
            self.require_agent(ext)
            self.m.Member.delete().where(self.m.Member.grp == group, self.m.Member.agent == ext).execute()

    def _require_groups(self, names) -> None:
        names = set(names)
        if not names:
            return
        known = {name for (name,) in self.m.Group.select(self.m.Group.name)
                 .where(self.m.Group.name.in_(list(names))).tuples()}
        missing = sorted(names - known)
        if missing:
            raise StoreError(f"unknown group {missing[0]!r}")

    def set_agent_dnd(self, ext: str, on: bool) -> None:
        with self.transaction():
            self.require_agent(ext)
            self.m.Agent.update(dnd=bool(on)).where(self.m.Agent.ext == ext).execute()

    def set_group_options(self, name: str, sticky_hours: str | None = None, timezone: str | None = None,
                          settings: dict[str, str] | None = None, unset=(), supervisors=None) -> Group:
        """Sticky hours ("" = always), time zone ("" = UTC), the group's own settings (`unset`:
        keys that go back to the global value) and its supervisors (extensions; () = none)."""
        with self.transaction():
            row = self.m.Group.get_or_none(self.m.Group.name == name)
            if row is None:
                raise StoreError(f"unknown group {name!r}")
            changes = {}
            spec = row.sticky_hours if sticky_hours is None else " ".join(sticky_hours.split())
            zone = row.timezone if timezone is None else timezone.strip()
            try:
                if spec:
                    hours.parse(spec, zone or None)
                elif zone:
                    hours.zone(zone)
                own = dict(json.loads(row.overrides) if row.overrides else {})
                for key in unset:
                    if key not in overrides.GROUP_KEYS:
                        raise ValueError(f"a group cannot set {key!r}: only {', '.join(overrides.GROUP_KEYS)}")
                    own.pop(key, None)
                own.update(settings or {})
                own = dict(overrides.check(own.items()))
            except ValueError as exc:
                raise StoreError(_one_line(exc)) from None
            changes = {"sticky_hours": spec, "timezone": zone,
                       "overrides": json.dumps(own, sort_keys=True) if own else ""}
            if supervisors is not None:
                changes["supervisors"] = ",".join(_clean_supervisors(supervisors))
            self.m.Group.update(**changes).where(self.m.Group.name == name).execute()
        return self.group(name)


def _group(row) -> Group:
    stored = json.loads(row.overrides) if row.overrides else {}
    return Group(name=row.name, strategy=row.strategy, sticky_scope=row.sticky_scope,
                 ring_timeout=timedelta(seconds=row.ring_timeout), sticky_hours=row.sticky_hours or "",
                 timezone=row.timezone or "", overrides=tuple(sorted(stored.items())),
                 supervisors=tuple(ext for ext in (row.supervisors or "").split(",") if ext))


def _clean_supervisors(extensions) -> tuple[str, ...]:
    found = tuple(dict.fromkeys(ext.strip() for ext in extensions if ext.strip()))
    for ext in found:
        if not EXTENSION_RE.match(ext):
            raise StoreError(f"bad supervisor extension {ext[:40]!r}: use 1-32 letters, digits, '_', '.' or '-'")
    return found


def _clean_name(name) -> str:
    if not isinstance(name, str) or not name.strip():
        raise StoreError("the agent needs a name")
    if _CONTROL.search(name):
        raise StoreError("the agent's name must not contain control characters")
    return name.strip()


def _clean_dial_string(text) -> str:
    # The dial string goes verbatim into a bridge command: a newline there would end the command
    # and start another.
    if not isinstance(text, str) or _CONTROL.search(text):
        raise StoreError("the dial string must not contain newlines or control characters")
    return text.strip()


def _clean_priority(priority) -> int:
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise StoreError(f"bad priority {priority!r}: a whole number")
    return priority
