"""`fsrouter`: the sysadmin's command line. Every command prints for a person, or JSON with --json.

Bad input of any kind ends in one line on stderr (`Error: ...`) and a non-zero exit: errors are
turned into that at one place, OneLineGroup, never shown as a traceback.
"""
from __future__ import annotations

import json
import logging
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from functools import cached_property

import click
import peewee
import structlog

from ..config import ConfigError, default_database_url, load_config
from ..core import routing, rules
from ..core.model import AUTO, MANUAL, SCOPE_ANY, SIMULTANEOUS, STICKY_SCOPES, STRATEGIES
from ..core.numbers import NotAClient
from ..core.settings import SETTINGS, format_duration, parse_duration
from ..service import Service, ServiceError, parse_time
from ..store import Store, StoreError

log = structlog.get_logger("fsrouter.cli")
# What bad input, a missing file or an unreachable database raise; each becomes one line.
_EXPECTED_ERRORS = (StoreError, ServiceError, ConfigError, NotAClient, ValueError, OSError,
                    peewee.PeeweeException)
_HELP_ERRORS = tuple(e for e in (getattr(click.exceptions, "NoArgsIsHelpError", None),) if e)


def _one_line(text) -> str:
    return " ".join(str(text).split()) or "failed"


class _Failure(click.ClickException):
    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(_one_line(message))
        self.exit_code = exit_code


class OneLineGroup(click.Group):
    group_class = type  # subgroups are OneLineGroups too

    def make_context(self, *args, **kwargs):
        # A subcommand's usage errors surface in its parent's invoke(); only the top level's
        # own options (fsrouter --bogus) are parsed here, outside any invoke().
        return _parse_one_line(super().make_context, *args, **kwargs)

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except _HELP_ERRORS:
            raise
        except click.UsageError as exc:  # e.g. no such command
            raise _Failure(exc.format_message(), exit_code=2) from None
        except _EXPECTED_ERRORS as exc:
            raise _Failure(str(exc)) from None


def _parse_one_line(make_context, *args, **kwargs):
    # click shows a usage error as usage, a hint and the error: four lines. Keep only the error.
    try:
        return make_context(*args, **kwargs)
    except _HELP_ERRORS:
        raise
    except click.UsageError as exc:
        raise _Failure(exc.format_message(), exit_code=2) from None


def _example(*lines: str) -> str:
    return "\b\nExample:\n" + "\n".join(f"  {line}" for line in lines)


class App:
    """What the commands share; the config and the database are opened on first use."""

    def __init__(self, db: str | None, config_path: str | None):
        self.db = db
        self.config_path = config_path

    @cached_property
    def config(self):
        config = load_config(self.config_path)
        return replace(config, database=self.db) if self.db else config

    @cached_property
    def store(self) -> Store:
        store = Store.open(self.config.database or default_database_url())
        # With webhooks on, a binding changed here is an event the daemon's sender delivers.
        store.webhook_urls = tuple(self.config.webhook_urls)
        return store

    @cached_property
    def service(self) -> Service:
        return Service(self.store)

    def close(self) -> None:
        if "store" in self.__dict__:
            self.store.close()


def _configure_logging() -> None:
    # Minimal: the CLI talks to people through stdout; only warnings go to stderr, as one line each.
    structlog.configure(
        processors=[structlog.processors.add_log_level, structlog.dev.ConsoleRenderer(colors=False)],
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )


def _echo_json(value) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def _table(headers, rows) -> None:
    rows = [[("" if cell is None else str(cell)) for cell in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    for row in [list(headers)] + rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z") if value else None


def _since(text: str, now: datetime) -> datetime:
    try:
        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        return parse_time(text)
    except ValueError:
        raise ValueError(f"bad --since {text!r}: a duration (7d, 12h) or an ISO time") from None


def _positive_duration(text: str, what: str) -> timedelta:
    value = parse_duration(text)
    if value <= timedelta(0):
        raise ValueError(f"{what} must be above zero")
    return value


pass_app = click.make_pass_decorator(App)


@click.group(cls=OneLineGroup, epilog=_example("fsrouter --db sqlite:////tmp/fs.db agent list",
                                                "fsrouter route 0501234567 --group sales"))
@click.option("--db", metavar="URL", help="Database URL (sqlite:///path, postgresql://...). "
              "Default: FSROUTER_DATABASE, else the config file, else a file in your data directory.")
@click.option("--config", "config_path", metavar="FILE", envvar="FSROUTER_CONFIG",
              help="Config file (default /etc/fsrouter/fsrouter.toml when it exists).")
@click.version_option(package_name="fsrouter")
@click.pass_context
def main(ctx, db, config_path):
    """fsrouter: ring a known client's own agent first, then the group."""
    _configure_logging()
    app = ctx.obj = App(db, config_path)
    ctx.call_on_close(app.close)


# -- agents ------------------------------------------------------------------------------------

def _agent_dict(agent) -> dict:
    return {"ext": agent.ext, "name": agent.name, "dial_string": agent.dial_string,
            "priority": agent.priority, "enabled": agent.enabled, "groups": sorted(agent.groups)}


@main.group(epilog=_example("fsrouter agent add 1001 --name Anna --group sales", "fsrouter agent list"))
def agent():
    """Agents: the people (extensions) calls ring."""


@agent.command("add", epilog=_example(
    "fsrouter agent add 1001 --name Anna --group sales --priority 1",
    "fsrouter agent add 1002 --name Bohdan --dial-string 'sofia/gateway/gw/380441234567'"))
@click.argument("ext")
@click.option("--name", required=True, help="The agent's name, as people know them.")
@click.option("--group", "groups", multiple=True, metavar="G", help="A group to join (repeatable).")
@click.option("--dial-string", help="How to ring them (default user/EXT@${domain_name}).")
@click.option("--priority", type=int, default=100, show_default=True,
              help="Lower rings first in a sequential group.")
@pass_app
def agent_add(app, ext, name, groups, dial_string, priority):
    """Add agent EXT."""
    added = app.store.add_agent(ext, name, dial_string=dial_string, priority=priority, groups=groups)
    click.echo(f"added agent {added.ext} ({added.name}), dial string {added.dial_string}")


@agent.command("list", epilog=_example("fsrouter agent list --json"))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def agent_list(app, as_json):
    """List the agents."""
    agents = app.store.agents().values()
    if as_json:
        return _echo_json([_agent_dict(a) for a in agents])
    _table(("EXT", "NAME", "PRIORITY", "ENABLED", "GROUPS", "DIAL STRING"),
           [(a.ext, a.name, a.priority, "yes" if a.enabled else "no", ",".join(sorted(a.groups)),
             a.dial_string) for a in agents])


@agent.command("disable", epilog=_example("fsrouter agent disable 1001",
                                           "fsrouter agent disable 1001 --handover-to 1002"))
@click.argument("ext")
@click.option("--handover-to", metavar="EXT", help="Move all their bindings to this agent.")
@pass_app
def agent_disable(app, ext, handover_to):
    """Stop ringing agent EXT. Their learned bindings are released (the clients' next calls
    teach new ones); manual ones stay for a human (`binding list --stale`)."""
    from .presence import release_after_leaving

    with app.store.transaction():
        app.store.set_agent_enabled(ext, False)
        release_after_leaving(app, ext, handover_to)
    click.echo(f"disabled agent {ext}")


@agent.command("enable", epilog=_example("fsrouter agent enable 1001"))
@click.argument("ext")
@pass_app
def agent_enable(app, ext):
    """Ring agent EXT again."""
    app.store.set_agent_enabled(ext, True)
    click.echo(f"enabled agent {ext}")


@agent.command("rm", epilog=_example("fsrouter agent rm 1001", "fsrouter agent rm 1001 --handover-to 1002"))
@click.argument("ext")
@click.option("--handover-to", metavar="EXT", help="Move all their bindings (manual and learned) to this agent.")
@pass_app
def agent_rm(app, ext, handover_to):
    """Delete agent EXT. Their learned bindings are released; manual ones stay, shown by
    `binding list --stale`; --handover-to moves them all in one step."""
    from .presence import release_after_leaving

    with app.store.transaction():
        app.store.remove_agent(ext)
        release_after_leaving(app, ext, handover_to)
    click.echo(f"removed agent {ext}")


@agent.command("set", epilog=_example("fsrouter agent set 1001 --crm-id 7", "fsrouter agent set 1001 --crm-id ''"))
@click.argument("ext")
@click.option("--crm-id", "crm_id", metavar="ID", help="The agent's user id in the CRM ('' clears it): a CRM "
              "lookup that answers with this id rings agent EXT.")
@pass_app
def agent_set(app, ext, crm_id):
    """Change agent EXT's CRM id."""
    if crm_id is None:
        raise click.UsageError("nothing to change: give --crm-id")
    changed = app.store.set_agent_crm_id(ext, crm_id)
    click.echo(f"agent {ext}: CRM id {changed.crm_id}" if changed.crm_id else f"agent {ext}: no CRM id")


# -- groups ------------------------------------------------------------------------------------

@main.group(epilog=_example("fsrouter group add sales --strategy sequential", "fsrouter group list"))
def group():
    """Groups: who rings after the sticky agent, and how."""


@group.command("add", epilog=_example(
    "fsrouter group add sales",
    "fsrouter group add support --strategy sequential --sticky-scope members"))
@click.argument("name")
@click.option("--strategy", type=click.Choice(STRATEGIES), default=SIMULTANEOUS, show_default=True,
              help="Ring all members at once, or one by one by priority.")
@click.option("--sticky-scope", type=click.Choice(STICKY_SCOPES), default=SCOPE_ANY, show_default=True,
              help="any: ring the bound agent whoever they are; members: only members of this group.")
@click.option("--ring-timeout", default="30s", show_default=True, metavar="DURATION",
              help="Ring time of the group (simultaneous) or of each agent (sequential).")
@pass_app
def group_add(app, name, strategy, sticky_scope, ring_timeout):
    """Add group NAME."""
    timeout = _positive_duration(ring_timeout, "--ring-timeout")
    added = app.store.add_group(name, strategy, sticky_scope, timeout)
    click.echo(f"added group {added.name} ({added.strategy}, sticky scope {added.sticky_scope})")


@group.command("list", epilog=_example("fsrouter group list --json"))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def group_list(app, as_json):
    """List the groups and their members."""
    agents = app.store.agents()
    by_ring_order = sorted(agents.values(), key=lambda a: (a.priority, a.ext))
    rows = []
    for g in app.store.groups().values():
        members = [a.ext for a in by_ring_order if g.name in a.groups]
        rows.append({"name": g.name, "strategy": g.strategy, "sticky_scope": g.sticky_scope,
                     "ring_timeout": g.ring_timeout.total_seconds(), "members": members})
    if as_json:
        return _echo_json(rows)
    _table(("NAME", "STRATEGY", "STICKY SCOPE", "RING", "MEMBERS"),
           [(r["name"], r["strategy"], r["sticky_scope"],
             format_duration(timedelta(seconds=r["ring_timeout"])), ",".join(r["members"])) for r in rows])


@group.command("rm", epilog=_example("fsrouter group rm sales"))
@click.argument("name")
@pass_app
def group_rm(app, name):
    """Delete group NAME (its agents stay)."""
    app.store.remove_group(name)
    click.echo(f"removed group {name}")


# -- bindings ----------------------------------------------------------------------------------

def _binding_state(binding, agents, settings, now) -> str:
    """'active', or why the binding cannot route (a routing.REASONS key)."""
    if not rules.is_current(binding, settings, now):
        return "expired"
    agent = agents.get(binding.agent)
    if agent is None:
        return "agent_unknown"
    return "active" if agent.enabled else "agent_disabled"


def _binding_dict(binding, state) -> dict:
    return {"client": binding.client, "agent": binding.agent, "source": binding.source,
            "at": _iso(binding.at), "expires_at": _iso(binding.expires_at), "why": binding.why,
            "call_uuid": binding.call_uuid, "state": state}


@main.group(epilog=_example("fsrouter binding set 0501234567 1001", "fsrouter binding show 0501234567"))
def binding():
    """Bindings: which agent a client rings first."""


@binding.command("set", epilog=_example("fsrouter binding set 0501234567 1001",
                                        "fsrouter binding set +380501234567 1002 --expires 14d"))
@click.argument("client")
@click.argument("ext")
@click.option("--expires", metavar="DURATION", help="Stop routing after this long (e.g. 14d); default never.")
@pass_app
def binding_set(app, client, ext, expires):
    """Bind CLIENT to agent EXT by hand (learning never overwrites it)."""
    now = datetime.now(UTC)
    expires_at = now + _positive_duration(expires, "--expires") if expires else None
    made = app.store.set_manual_binding(app.service.normalize(client), ext, now, expires_at=expires_at)
    until = f" until {_iso(made.expires_at)}" if made.expires_at else ""
    click.echo(f"bound {made.client} to {made.agent}{until}")
    if not app.store.agents()[ext].enabled:
        log.warning("binding.agent_disabled", agent=ext,
                    detail="the binding routes only once the agent is enabled again")


@binding.command("show", epilog=_example("fsrouter binding show 0501234567 --json"))
@click.argument("client")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def binding_show(app, client, as_json):
    """Show CLIENT's manual and learned bindings, with when, why and whether they route."""
    number = app.service.normalize(client)
    found = app.store.bindings_for(app.store.client_of(number)[0])  # a linked number shows its client's
    agents, settings, now = app.store.agents(), app.store.settings(), datetime.now(UTC)
    rows = [_binding_dict(found[s], _binding_state(found[s], agents, settings, now))
            for s in (MANUAL, AUTO) if s in found]
    if as_json:
        return _echo_json({"client": number, "bindings": rows})
    if not rows:
        return click.echo(f"{number} has no bindings")
    _table(("SOURCE", "AGENT", "STATE", "SINCE", "EXPIRES", "WHY"),
           [(r["source"], r["agent"], r["state"], r["at"], r["expires_at"] or "never", r["why"])
            for r in rows])


@binding.command("rm", epilog=_example("fsrouter binding rm 0501234567 --learned"))
@click.argument("client")
@click.option("--learned", "which", flag_value="learned", help="Only the learned binding.")
@click.option("--manual", "which", flag_value="manual", help="Only the manual binding.")
@click.option("--all", "which", flag_value="all", default=True, help="Both (the default).")
@pass_app
def binding_rm(app, client, which):
    """Remove CLIENT's bindings."""
    sources = {"learned": (AUTO,), "manual": (MANUAL,), "all": (MANUAL, AUTO)}[which]
    number = app.service.normalize(client)
    removed = app.store.remove_bindings(number, sources)
    click.echo(f"removed {removed} binding{'s' if removed != 1 else ''} of {number}")


@binding.command("list", epilog=_example("fsrouter binding list --agent 1001",
                                         "fsrouter binding list --stale --json"))
@click.option("--agent", "ext", metavar="EXT", help="Only this agent's bindings.")
@click.option("--stale", is_flag=True,
              help="Only bindings that cannot route: agent disabled or deleted, expired.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def binding_list(app, ext, stale, as_json):
    """List bindings."""
    agents, settings, now = app.store.agents(), app.store.settings(), datetime.now(UTC)
    found = app.store.list_bindings(agent=ext, stale=stale, now=now, settings=settings)
    rows = [_binding_dict(b, _binding_state(b, agents, settings, now)) for b in found]
    if as_json:
        return _echo_json(rows)
    _table(("CLIENT", "AGENT", "SOURCE", "STATE", "SINCE", "EXPIRES", "WHY"),
           [(r["client"], r["agent"], r["source"], r["state"], r["at"], r["expires_at"] or "never", r["why"])
            for r in rows])


@binding.command("import", epilog=_example("fsrouter binding import crm.csv   # lines: client,agent"))
@click.argument("file", metavar="FILE.csv")
@pass_app
def binding_import(app, file):
    """Set manual bindings from a CSV of client,agent; a bad line imports nothing."""
    with open(file, newline="", encoding="utf-8-sig") as handle:
        count = app.service.import_bindings_csv(handle)
    click.echo(f"imported {count} binding{'s' if count != 1 else ''}")


@binding.command("export", epilog=_example("fsrouter binding export > bindings.csv"))
@click.option("-o", "--output", metavar="FILE", help="Write here instead of standard output.")
@pass_app
def binding_export(app, output):
    """Write client,agent CSV: the agent each client's next call rings first."""
    if output:
        with open(output, "w", newline="", encoding="utf-8") as handle:
            app.service.export_bindings_csv(handle)
    else:
        app.service.export_bindings_csv(sys.stdout)


# -- settings ----------------------------------------------------------------------------------

@main.group("settings", epilog=_example("fsrouter settings show", "fsrouter settings set sticky_timeout 25s"))
def settings_group():
    """The routing and learning rules, shared by every node."""


@settings_group.command("show", epilog=_example("fsrouter settings show --json"))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def settings_show(app, as_json):
    """Show every setting."""
    values = app.store.settings().as_text()
    if as_json:
        return _echo_json(values)
    _table(("KEY", "VALUE", "MEANING"), [(key, values[key], spec.help) for key, spec in SETTINGS.items()])


@settings_group.command("set", epilog=_example("fsrouter settings set lookback 60d",
                                               "fsrouter settings set mode manual"))
@click.argument("key", type=click.Choice(list(SETTINGS)), metavar="KEY")
@click.argument("value")
@pass_app
def settings_set(app, key, value):
    """Set KEY to VALUE (keys: see `settings show`)."""
    settings = app.store.set_setting(key, value)
    click.echo(f"{key} = {settings.as_text()[key]}")


# -- calls -------------------------------------------------------------------------------------

def _call_dict(call) -> dict:
    return {"uuid": call.uuid, "started_at": _iso(call.started_at), "ended_at": _iso(call.ended_at),
            "direction": call.direction, "client": call.client, "agent": call.agent,
            "talk_seconds": call.talk_seconds, "answered": call.answered, "group": call.group,
            "route": call.route, "outcome": call.outcome, "rung": list(call.rung)}


@main.group(epilog=_example("fsrouter calls import history.csv", "fsrouter calls list --since 1d"))
def calls():
    """Call records, and warming bindings from the call history you already have."""


@calls.command("import", epilog=_example(
    "fsrouter calls import history.csv",
    "# history.csv:",
    "#   started_at,direction,client,agent,talk_seconds[,uuid]",
    "#   2024-05-01T09:30:00Z,inbound,0501234567,1001,95",
    "#   2024-05-01T10:00:00Z,outbound,0671112233,1002,0",
    "# uuid (optional, FreeSWITCH's ${uuid} in a CDR): a call the daemon recorded is skipped"))
@click.argument("file", metavar="FILE.csv")
@pass_app
def calls_import(app, file):
    """Import past calls: each teaches bindings exactly as a live call would. A bad line imports nothing."""
    with open(file, newline="", encoding="utf-8-sig") as handle:
        result = app.service.import_calls_csv(handle)
    known = f"; {result.known} already recorded by the daemon, skipped" if result.known else ""
    click.echo(f"imported {result.calls} call{'s' if result.calls != 1 else ''}, "
               f"{result.learned} changed a learned binding{known}")


@calls.command("list", epilog=_example("fsrouter calls list --since 7d --client 0501234567 --json"))
@click.option("--since", metavar="DURATION|ISO",
              help="Only calls started since then (7d, or 2024-05-01T00:00Z).")
@click.option("--client", help="Only this client's calls.")
@click.option("--limit", type=click.IntRange(min=0), default=100, show_default=True,
              help="At most this many (0: all).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def calls_list(app, since, client, limit, as_json):
    """List call records, newest first."""
    found = app.store.calls(since=_since(since, datetime.now(UTC)) if since else None,
                            client=app.service.normalize(client) if client else None, limit=limit or None)
    if as_json:
        return _echo_json([_call_dict(c) for c in found])
    _table(("STARTED", "DIRECTION", "CLIENT", "AGENT", "TALK", "OUTCOME", "ROUTE"),
           [(_iso(c.started_at), c.direction, c.client, c.agent or "-", f"{c.talk_seconds:.0f}s", c.outcome,
             c.route or "") for c in found])


# -- missed calls and reports -----------------------------------------------------------------

def _missed_rows(app, start):
    rows = app.store.missed_call_rows(since=start)
    return rows, app.store.bindings_of({c.client for c in rows})


def _missed_dict(row) -> dict:
    after = row.callback_after
    return {"bound_agent": row.bound_agent, "client": row.client, "uuid": row.call.uuid,
            "missed_at": _iso(row.call.started_at), "group": row.call.group, "rung": list(row.call.rung),
            "sticky_agent": row.call.sticky_agent, "open": row.is_open, "closed_by": row.closed_by,
            "callback_agent": row.callback_agent, "callback_at": _iso(row.callback_at),
            "callback_uuid": row.closing_call.uuid if row.closing_call else None,
            "client_answered": row.client_answered,
            "callback_after_seconds": after.total_seconds() if after is not None else None}


@calls.command("missed", epilog=_example("fsrouter calls missed --open", "fsrouter calls missed --since 1d --json"))
@click.option("--open", "only_open", is_flag=True, help="Only those nobody has called back yet.")
@click.option("--since", default="7d", show_default=True, metavar="DURATION|ISO",
              help="Only calls missed since then (1d, or 2024-05-01T00:00Z).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def calls_missed(app, only_open, since, as_json):
    """Inbound calls nobody answered, and who called back after how long; bound agent first."""
    from ..core.missed import missed_calls
    from ..http.report_html import human_duration

    start = _since(since, datetime.now(UTC))
    rows_in, bindings = _missed_rows(app, start)
    rows = missed_calls(rows_in, bindings, since=start, only_open=only_open)
    if as_json:
        return _echo_json([_missed_dict(r) for r in rows])
    states = {"callback": "called back", "answered_again": "called again, answered"}
    _table(("BOUND AGENT", "CLIENT", "MISSED AT", "GROUP", "STATE", "BY", "AFTER", "CLIENT ANSWERED"),
           [(r.bound_agent or "-", r.client, _iso(r.call.started_at), r.call.group or "",
             "open" if r.is_open else states.get(r.closed_by, r.closed_by), r.callback_agent or "",
             human_duration(r.callback_after.total_seconds()) if r.callback_after is not None else "",
             "" if r.is_open else ("yes" if r.client_answered else "no")) for r in rows])


@main.command("report", epilog=_example("fsrouter report --since 7d", "fsrouter report --group sales --html report.html"))
@click.option("--since", default="7d", show_default=True, metavar="DURATION|ISO",
              help="The period: calls since then (7d, or 2024-05-01T00:00Z).")
@click.option("--group", "group_name", metavar="G", help="Only calls to this group.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--html", "html_file", metavar="FILE", help="Also write a self-contained HTML page with charts.")
@pass_app
def report_command(app, since, group_name, as_json, html_file):
    """Per agent and in total: offered, answered, sticky hit rate, fallbacks, rebinds, missed, callbacks."""
    from ..core import report as reporting
    from ..core.missed import missed_calls
    from ..http import report_html

    if group_name is not None and group_name not in app.store.groups():
        raise ValueError(f"unknown group {group_name!r}")
    start = _since(since, datetime.now(UTC))
    rows_in, bindings = _missed_rows(app, start)
    agents = [ext for ext, a in app.store.agents().items() if group_name is None or group_name in a.groups]
    # The call records come grouped (one GROUP BY: a million records are a few thousand rows); the
    # figures are still made by report.py alone, from the calls' shapes and their counts.
    result = reporting.build_counted(app.store.call_counts(reporting.CALL_FIELDS, since=start),
                                     missed_calls(rows_in, bindings, since=start),
                                     app.store.binding_changes(since=start, rebinds_only=True), since=start,
                                     group=group_name, agents=agents)
    if html_file:
        with open(html_file, "w", encoding="utf-8") as handle:
            handle.write(report_html.render(result))
    if as_json:
        return _echo_json(result.as_dict())
    percent = lambda v: f"{v * 100:.0f}%" if v is not None else "-"
    seconds = lambda v: report_html.human_duration(v) if v is not None else "-"
    _table(("AGENT", "OFFERED", "ANSWERED", "STICKY", "STICKY ANSWERED", "HIT RATE", "FALLBACKS", "REBINDS IN",
            "REBINDS OUT", "MISSED", "CALLED BACK", "CALLBACKS MADE", "CALLBACK MEDIAN", "CALLBACK P90"),
           [(f.agent, f.offered, f.answered, f.sticky_attempts, f.sticky_answered, percent(f.hit_rate), f.fallbacks,
             f.rebinds_in, f.rebinds_out, f.missed, f.called_back, f.callbacks_made,
             seconds(f.callback_median_s), seconds(f.callback_p90_s)) for f in result.agents + [result.total]])
    if result.rebinds:
        click.echo("")
        _table(("REBOUND FROM", "TO", "CLIENTS"), [(r.from_agent, r.to_agent, r.count) for r in result.rebinds])
    if html_file:
        click.echo(f"\nwrote {html_file}")


# -- the outbox --------------------------------------------------------------------------------

@main.group(epilog=_example("fsrouter outbox list", "fsrouter outbox retry", "fsrouter outbox purge"))
def outbox():
    """Webhook events waiting to be delivered (the daemon sends them; docs/crm.md)."""


@outbox.command("list", epilog=_example("fsrouter outbox list", "fsrouter outbox list --all --json"))
@click.option("--all", "show_all", is_flag=True, help="Also what was delivered (kept for a week).")
@click.option("--limit", type=click.IntRange(min=0), default=100, show_default=True, help="At most this many (0: all).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def outbox_list(app, show_all, limit, as_json):
    """Show pending and dead (given up) deliveries, oldest first."""
    from ..http.outbox import DEAD, PENDING, SENT, Outbox

    box = Outbox(app.store)
    entries = box.entries((PENDING, DEAD, SENT) if show_all else (PENDING, DEAD), limit=limit or None)
    if as_json:
        return _echo_json([e.as_dict() for e in entries])
    if not entries:
        return click.echo("the outbox is empty" if not show_all else "nothing in the outbox")
    _table(("ID", "EVENT", "STATE", "ATTEMPTS", "NEXT TRY", "URL", "LAST ERROR"),
           [(e.id, e.event_type, e.state, e.attempts, _iso(e.next_at) if e.state == PENDING else "",
             e.target, e.last_error) for e in entries])


@outbox.command("retry", epilog=_example("fsrouter outbox retry", "fsrouter outbox retry 12 13"))
@click.argument("ids", nargs=-1, type=int, metavar="[ID]...")
@pass_app
def outbox_retry(app, ids):
    """Try pending and dead deliveries (these IDs, default all) again now."""
    from ..http.outbox import Outbox

    count = Outbox(app.store).retry(ids or None)
    click.echo(f"{count} deliver{'ies' if count != 1 else 'y'} will be tried again now")


@outbox.command("purge", epilog=_example("fsrouter outbox purge", "fsrouter outbox purge --dead"))
@click.option("--dead", is_flag=True, help="Also drop what was given up on.")
@click.option("--all", "everything", is_flag=True, help="Drop everything, pending too: those events are lost.")
@pass_app
def outbox_purge(app, dead, everything):
    """Drop delivered events (and, if asked, dead or all ones)."""
    from ..http.outbox import DEAD, PENDING, SENT, Outbox

    states = (SENT, DEAD, PENDING) if everything else (SENT, DEAD) if dead else (SENT,)
    count = Outbox(app.store).purge(states)
    click.echo(f"purged {count} event{'s' if count != 1 else ''} ({', '.join(states)})")


# -- the decision ------------------------------------------------------------------------------

@main.command(epilog=_example("fsrouter route 0501234567 --group sales",
                              "fsrouter route 0501234567 --group sales --live",
                              "fsrouter route +380501234567 --group sales --at 2024-06-01T12:00:00Z --json"))
@click.argument("client")
@click.option("--group", "group_name", required=True, metavar="G", help="The group the call is for.")
@click.option("--at", metavar="ISO_TIME",
              help="Decide as if it were this time (default now; UTC unless an offset is given).")
@click.option("--live", is_flag=True,
              help="Ask FreeSWITCH (the config's event socket) whose phones are registered, as the "
                   "daemon does; calls in progress are still not seen from here.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def route(app, client, group_name, at, live, as_json):
    """Dry run: who a call from CLIENT to group G would ring, and why."""
    number = app.service.normalize(client)  # garbage is an error here, not a "not a client" plan
    from ..http.crm import CrmClient

    answer = app.service.crm_answer(number, CrmClient.from_config(app.config))  # the CRM, when configured
    if live:
        from .presence import live_presence

        app.service.presence = live_presence(app.config)
    plan = app.service.route(number, group_name, now=parse_time(at) if at else None, crm=answer)
    if as_json:
        from .presence import route_settings

        return _echo_json({**plan.as_dict(), "settings": route_settings(app, group_name)})
    click.echo(f"client    {plan.client}")
    click.echo(f"group     {plan.group}")
    if plan.sticky:
        click.echo(f"sticky    {plan.sticky.agent} ({routing.REASONS.get(plan.reason, plan.reason)}), "
                   f"rings {format_duration(plan.sticky.timeout)}")
    else:
        click.echo(f"sticky    none: {routing.REASONS.get(plan.reason, plan.reason)}")
    if plan.fallback:
        how = "one by one" if plan.strategy == "sequential" else "together"
        click.echo(f"fallback  {', '.join(leg.agent for leg in plan.fallback)} ({how}, "
                   f"{format_duration(plan.fallback[0].timeout)})")
    else:
        click.echo("fallback  nobody: the group has no enabled members")
    from .presence import echo_route_settings

    echo_route_settings(app, group_name)


# -- the database ------------------------------------------------------------------------------

@main.group("db", epilog=_example("fsrouter db backup /var/backups/fsrouter.db",
                                  "fsrouter db restore /var/backups/fsrouter.db"))
def db_group():
    """Back the database up while fsrouter runs, and restore it (SQLite; PostgreSQL: pg_dump)."""


@db_group.command("backup", epilog=_example(
    "fsrouter db backup /var/backups/fsrouter-$(date +%F).db",
    "# PostgreSQL: pg_dump -Fc -f fsrouter.dump postgresql://fsrouter@db/fsrouter"))
@click.argument("file", metavar="FILE")
@pass_app
def db_backup(app, file):
    """Copy the database to FILE (0600), consistent, while the daemon keeps routing."""
    from ..store import backup

    summary = backup.backup(app.config.database or default_database_url(), file)
    click.echo(f"backed up to {file}: {summary.describe()}")


@db_group.command("restore", epilog=_example(
    "systemctl stop fsrouter && fsrouter db restore /var/backups/fsrouter.db && systemctl start fsrouter"))
@click.argument("file", metavar="FILE")
@click.option("--force", is_flag=True,
              help="Restore even while the database is open elsewhere (a running daemon keeps going on the "
                   "restored data).")
@pass_app
def db_restore(app, file, force):
    """Replace the database with the backup FILE; the current one is kept beside it first.

    Refused while the database is in use (fsrouter run): stop the daemon first, or --force.
    """
    from ..store import backup

    summary, saved = backup.restore(app.config.database or default_database_url(), file, force=force)
    if saved is not None:
        click.echo(f"the database it replaced is in {saved}")
    click.echo(f"restored {file}: {summary.describe()}")


# -- implemented elsewhere ---------------------------------------------------------------------

@main.command(epilog=_example("fsrouter --config /etc/fsrouter/fsrouter.toml run"))
@pass_app
def run(app):
    """Run the router daemon (what the systemd unit starts)."""
    from ..daemon import run_daemon
    sys.exit(run_daemon(app.config, app.config_path))


@main.command(epilog=_example("fsrouter demo --speed 10"))
@click.option("--speed", type=float, default=1.0, show_default=True, help="How much faster than real time.")
def demo(speed):
    """Watch fsrouter route an office day against a bundled fake FreeSWITCH."""
    from ..demo import run_demo
    run_demo(speed=speed)


from . import presence as cli_presence  # noqa: F401  (presence, hours, clients: registers its commands)

if __name__ == "__main__":
    main()
