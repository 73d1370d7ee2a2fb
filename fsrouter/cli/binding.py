"""`fsrouter binding ...`: which agent a client rings first, and who they are kept away from."""
from __future__ import annotations

import sys
from datetime import UTC, datetime

import click
import structlog

from ..core.model import AUTO, MANUAL
from ..core.ownership import ACTIVE, REASONS
from .common import command_group, echo_json, example, iso, pass_app, positive_duration, table

log = structlog.get_logger("fsrouter.cli")

def _binding_dict(binding, state, groups=None) -> dict:
    row = {"client": binding.client, "agent": binding.agent, "source": binding.source,
           "at": iso(binding.at), "expires_at": iso(binding.expires_at), "why": binding.why,
           "call_uuid": binding.call_uuid, "state": state}
    if groups is not None:
        row["groups"] = groups
    return row


# What `state` means, for --help (the ownership rule is core/ownership.py; presence is not seen here).
_STATE_HELP = ("STATE is `active`, or why the binding does not route (route's reasons): first why it routes "
               "in no group at any hour (expired, agent_disabled, agent_unknown, agent_blocked, "
               "shared_number, mode, outside_scope), else why not now without a group (agent_dnd). "
               "Presence is not checked from the CLI: a phone that is offline or busy still shows "
               "active (`fsrouter route CLIENT --group G --live` asks FreeSWITCH).")


@command_group(epilog=example("fsrouter binding set 0501234567 1001", "fsrouter binding show 0501234567"))
def binding():
    """Bindings: which agent a client rings first."""


@binding.command("set", epilog=example("fsrouter binding set 0501234567 1001",
                                        "fsrouter binding set +380501234567 1002 --expires 14d"))
@click.argument("client")
@click.argument("ext")
@click.option("--expires", metavar="DURATION", help="Stop routing after this long (e.g. 14d); default never.")
@pass_app
def binding_set(app, client, ext, expires):
    """Bind CLIENT to agent EXT by hand (learning never overwrites it)."""
    now = datetime.now(UTC)
    expires_at = now + positive_duration(expires, "--expires") if expires else None
    made = app.service.bindings.set_manual_binding(app.service.normalize(client), ext, now, expires_at=expires_at)
    until = f" until {iso(made.expires_at)}" if made.expires_at else ""
    click.echo(f"bound {made.client} to {made.agent}{until}")
    state = app.service.standings([made]).get(made.client).state(made.source)
    if state != ACTIVE:  # e.g. binding.agent_disabled: routes only once the agent is enabled again
        log.warning(f"binding.{state}", agent=ext, detail=f"the binding does not route: {REASONS[state]}")


@binding.command("show", epilog=example("fsrouter binding show 0501234567 --json",
                                         "fsrouter binding show 0501234567 --group sales"))
@click.argument("client")
@click.option("--group", "group_name", metavar="G", help="STATE as for a call to this group (its scope, "
              "sticky hours and own settings, now).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def binding_show(app, client, group_name, as_json):
    """Show CLIENT's bindings (the CRM's answer too, when one is configured), with when, why and
    whether they route; then, per group, who a call now would ring first. A linked number shows
    its client's bindings (and its own shared flag)."""
    from ..http.crm import CrmClient

    number = app.service.normalize(client)
    if group_name is not None and group_name not in app.service.groups():
        raise ValueError(f"unknown group {group_name!r}")
    answer = app.service.crm_answer(number, CrmClient.from_config(app.config))
    standing = app.service.standing_of(number, crm=answer)

    def state(verdict):
        if group_name is not None:
            return standing.groups[group_name].of(verdict.source).state
        return standing.state(verdict.source)

    rows = [_binding_dict(v.binding, state(v), {g: o.of(v.source).state for g, o in standing.groups.items()})
            for v in standing.anywhere.verdicts]
    ringing = {g: {"agent": o.agent, "source": o.owner.source if o.owner else None, "reason": o.reason}
               for g, o in standing.groups.items() if group_name in (None, g)}
    if as_json:
        return echo_json({"client": number, "bindings": rows, "groups": ringing, "presence": "not checked"})
    if not rows:
        return click.echo(f"{number} has no bindings")
    table(("SOURCE", "AGENT", "STATE", "SINCE", "EXPIRES", "WHY"),
          [(r["source"], r["agent"], r["state"], r["at"], r["expires_at"] or "never", r["why"]) for r in rows])
    if ringing:
        click.echo("")
        table(("GROUP", "RINGS FIRST", "WHY"),
              [(g, r["agent"] or "-", REASONS.get(r["reason"], r["reason"])) for g, r in ringing.items()])
    click.echo("\npresence not checked: an offline or busy phone shows as routing "
               "(fsrouter route CLIENT --group G --live asks FreeSWITCH)")


binding_show.help += "\n\n" + _STATE_HELP


@binding.command("rm", epilog=example("fsrouter binding rm 0501234567 --learned"))
@click.argument("client")
@click.option("--learned", "which", flag_value="learned", help="Only the learned binding.")
@click.option("--manual", "which", flag_value="manual", help="Only the manual binding.")
@click.option("--all", "which", flag_value="all", default=True, help="Both (the default).")
@pass_app
def binding_rm(app, client, which):
    """Remove CLIENT's bindings."""
    sources = {"learned": (AUTO,), "manual": (MANUAL,), "all": (MANUAL, AUTO)}[which]
    number = app.service.normalize(client)
    removed = app.service.bindings.remove_bindings(number, sources)
    click.echo(f"removed {removed} binding{'s' if removed != 1 else ''} of {number}")


@binding.command("list", epilog=example("fsrouter binding list --agent 1001",
                                        "fsrouter binding list --stale --json"))
@click.option("--agent", "ext", metavar="EXT", help="Only this agent's bindings.")
@click.option("--stale", is_flag=True,
              help="Only bindings that route in no group at any hour, whoever is online: agent disabled "
                   "or deleted, expired, blocked, shared number, a kind the mode never routes, outside "
                   "every group's scope.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def binding_list(app, ext, stale, as_json):
    """List stored bindings (a CRM's answers are not stored: `binding show` asks it)."""
    found = app.store.list_bindings(agent=ext)
    standings = app.service.standings(found)
    if stale:
        found = [b for b in found if b.source in standings[b.client].stale]
    rows = [_binding_dict(b, standings[b.client].state(b.source)) for b in found]
    if as_json:
        return echo_json(rows)
    table(("CLIENT", "AGENT", "SOURCE", "STATE", "SINCE", "EXPIRES", "WHY"),
          [(r["client"], r["agent"], r["source"], r["state"], r["at"], r["expires_at"] or "never", r["why"])
           for r in rows])


binding_list.help += "\n\n" + _STATE_HELP


@binding.command("import", epilog=example("fsrouter binding import crm.csv   # lines: client,agent"))
@click.argument("file", metavar="FILE.csv")
@pass_app
def binding_import(app, file):
    """Set manual bindings from a CSV of client,agent; a bad line imports nothing."""
    with open(file, newline="", encoding="utf-8-sig") as handle:
        count = app.service.import_bindings_csv(handle)
    click.echo(f"imported {count} binding{'s' if count != 1 else ''}")


@binding.command("export", epilog=example("fsrouter binding export > bindings.csv"))
@click.option("-o", "--output", metavar="FILE", help="Write here instead of standard output.")
@pass_app
def binding_export(app, output):
    """Write client,agent CSV: the agent each client's next call rings first."""
    if output:
        with open(output, "w", newline="", encoding="utf-8") as handle:
            app.service.export_bindings_csv(handle)
    else:
        app.service.export_bindings_csv(sys.stdout)


@binding.command("block", epilog=example("fsrouter binding block 0501234567 1002"))
@click.argument("client_number", metavar="CLIENT")
@click.argument("ext")
@pass_app
def binding_block(app, client_number, ext):
    """Keep CLIENT away from agent EXT: never its sticky agent, by any source."""
    owner, dropped = app.service.bindings.block(app.service.normalize(client_number), ext)
    click.echo(f"client {owner} is kept away from {ext}"
               + (f" (dropped the learned binding to {ext})" if dropped else ""))
    manual = app.store.bindings_for(owner).get(MANUAL)
    if manual is not None and app.service.standings([manual])[owner].state(MANUAL) == "agent_blocked":
        click.echo(f"the manual binding of {owner} names {ext}: it no longer routes (binding set/rm it)")


@binding.command("unblock", epilog=example("fsrouter binding unblock 0501234567 1002"))
@click.argument("client_number", metavar="CLIENT")
@click.argument("ext")
@pass_app
def binding_unblock(app, client_number, ext):
    """Let agent EXT be CLIENT's sticky agent again."""
    removed = app.store.unblock(app.service.normalize(client_number), ext)
    click.echo(f"unblocked {ext}" if removed else f"{ext} was not blocked")


@binding.command("blocks", epilog=example("fsrouter binding blocks --json"))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def binding_blocks(app, as_json):
    """List which clients are kept away from which agents."""
    rows = app.store.blocks()
    if as_json:
        return echo_json([{"client": c, "agent": a} for c, a in rows])
    table(("CLIENT", "AGENT"), rows)
