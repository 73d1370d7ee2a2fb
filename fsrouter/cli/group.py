"""`fsrouter group ...`: who rings after the sticky agent, and how; the group's own settings."""
from __future__ import annotations

from datetime import timedelta

import click

from ..core import hours, overrides
from ..core.model import SCOPE_ANY, SIMULTANEOUS, STICKY_SCOPES, STRATEGIES
from ..core.settings import format_duration
from .common import command_group, echo_json, example, pass_app, positive_duration, table


@command_group(epilog=example("fsrouter group add sales --strategy sequential", "fsrouter group list"))
def group():
    """Groups: who rings after the sticky agent, and how."""


@group.command("add", epilog=example(
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
    timeout = positive_duration(ring_timeout, "--ring-timeout")
    added = app.store.add_group(name, strategy, sticky_scope, timeout)
    click.echo(f"added group {added.name} ({added.strategy}, sticky scope {added.sticky_scope})")


@group.command("list", epilog=example("fsrouter group list --json"))
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
                     "ring_timeout": g.ring_timeout.total_seconds(), "members": members,
                     "supervisors": list(g.supervisors)})
    if as_json:
        return echo_json(rows)
    table(("NAME", "STRATEGY", "STICKY SCOPE", "RING", "MEMBERS"),
           [(r["name"], r["strategy"], r["sticky_scope"],
             format_duration(timedelta(seconds=r["ring_timeout"])), ",".join(r["members"])) for r in rows])


@group.command("rm", epilog=example("fsrouter group rm sales"))
@click.argument("name")
@pass_app
def group_rm(app, name):
    """Delete group NAME (its agents stay)."""
    app.store.remove_group(name)
    click.echo(f"removed group {name}")


@group.command("set", epilog=example(
    "fsrouter group set sales --sticky-hours 'mon-fri 09:00-18:00' --timezone Europe/Kyiv",
    "fsrouter group set sales --sticky-timeout 25s --mode auto",
    "fsrouter group set sales --unset mode --sticky-hours ''",
    "fsrouter group set sales --supervisor 1009 --supervisor 1010",
    "fsrouter group set sales --supervisor ''"))
@click.argument("name")
@click.option("--sticky-hours", metavar="SPEC", help="When the sticky leg may ring, e.g. 'mon-fri 09:00-18:00' "
              "('' = always).")
@click.option("--timezone", metavar="ZONE", help="IANA time zone of the sticky hours, e.g. Europe/Kyiv ('' = UTC).")
@click.option("--sticky-timeout", metavar="DURATION", help="The group's own sticky_timeout.")
@click.option("--lookback", metavar="DURATION", help="The group's own lookback.")
@click.option("--learn-from", metavar="WHICH", help="The group's own learn_from (inbound, outbound, both).")
@click.option("--mode", metavar="MODE", help="The group's own mode (manual, auto, both).")
@click.option("--unset", "unset", multiple=True, type=click.Choice(overrides.GROUP_KEYS), metavar="KEY",
              help="Use the global value of KEY again (repeatable).")
@click.option("--supervisor", "supervisors", multiple=True, metavar="EXT",
              help="Told (webhooks) when a call of the group is answered by an extension that is no "
                   "known agent's (repeatable; replaces the list; '' = none).")
@pass_app
def group_set(app, name, sticky_hours, timezone, sticky_timeout, lookback, learn_from, mode, unset, supervisors):
    """Sticky hours, supervisors and the group's own settings: a group's value beats the global one."""
    own = {key: value for key, value in (("sticky_timeout", sticky_timeout), ("lookback", lookback),
                                         ("learn_from", learn_from), ("mode", mode)) if value is not None}
    if sticky_hours is None and timezone is None and not own and not unset and not supervisors:
        raise click.UsageError("nothing to change: give --sticky-hours, --timezone, --supervisor, a setting "
                               "or --unset")
    changed = app.store.set_group_options(name, sticky_hours=sticky_hours, timezone=timezone,
                                          settings=own, unset=unset, supervisors=supervisors or None)
    click.echo(f"group {changed.name}: sticky hours {hours.describe(changed.sticky_hours, changed.timezone)}")
    if supervisors:
        click.echo(f"  supervisors: {', '.join(changed.supervisors) or 'none'}")
    for key, (value, where) in overrides.sources(app.store.settings(), changed).items():
        click.echo(f"  {key} = {value} ({where})")
