"""`fsrouter agent ...`: the people (extensions) calls ring."""
from __future__ import annotations

import click

from ..core.settings import parse_bool
from ..http.links import Links, base_url
from .common import ON_OFF, command_group, echo_json, example, pass_app, table


def _agent_dict(agent) -> dict:
    return {"ext": agent.ext, "name": agent.name, "dial_string": agent.dial_string,
            "priority": agent.priority, "enabled": agent.enabled, "groups": sorted(agent.groups)}


@command_group(epilog=example("fsrouter agent add 1001 --name Anna --group sales", "fsrouter agent list"))
def agent():
    """Agents: the people (extensions) calls ring."""


@agent.command("add", epilog=example(
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


@agent.command("list", epilog=example("fsrouter agent list --json"))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def agent_list(app, as_json):
    """List the agents."""
    agents = app.store.agents().values()
    if as_json:
        return echo_json([_agent_dict(a) for a in agents])
    table(("EXT", "NAME", "PRIORITY", "ENABLED", "GROUPS", "DIAL STRING"),
           [(a.ext, a.name, a.priority, "yes" if a.enabled else "no", ",".join(sorted(a.groups)),
             a.dial_string) for a in agents])


@agent.command("disable", epilog=example("fsrouter agent disable 1001",
                                           "fsrouter agent disable 1001 --handover-to 1002"))
@click.argument("ext")
@click.option("--handover-to", metavar="EXT", help="Move all their bindings to this agent.")
@pass_app
def agent_disable(app, ext, handover_to):
    """Stop ringing agent EXT. Their learned bindings are released (the clients' next calls
    teach new ones); manual ones stay for a human (`binding list --stale`)."""
    with app.store.transaction():
        app.store.set_agent_enabled(ext, False)
        release_after_leaving(app, ext, handover_to)
    click.echo(f"disabled agent {ext}")


@agent.command("enable", epilog=example("fsrouter agent enable 1001"))
@click.argument("ext")
@pass_app
def agent_enable(app, ext):
    """Ring agent EXT again."""
    app.store.set_agent_enabled(ext, True)
    click.echo(f"enabled agent {ext}")


@agent.command("rm", epilog=example("fsrouter agent rm 1001", "fsrouter agent rm 1001 --handover-to 1002"))
@click.argument("ext")
@click.option("--handover-to", metavar="EXT", help="Move all their bindings (manual and learned) to this agent.")
@pass_app
def agent_rm(app, ext, handover_to):
    """Delete agent EXT. Their learned bindings are released; manual ones stay, shown by
    `binding list --stale`; --handover-to moves them all in one step."""
    with app.store.transaction():
        app.store.remove_agent(ext)
        release_after_leaving(app, ext, handover_to)
    click.echo(f"removed agent {ext}")


@agent.command("set", epilog=example(
    "fsrouter agent set 1001 --name 'Anna K.' --priority 1",
    "fsrouter agent set 1001 --dial-string 'sofia/gateway/gw/380441234567'",
    "fsrouter agent set 1001 --group sales --group support   # exactly these groups",
    "fsrouter agent set 1001 --add-group support --remove-group sales",
    "fsrouter agent set 1001 --crm-id 7", "fsrouter agent set 1001 --crm-id ''"))
@click.argument("ext")
@click.option("--name", help="The agent's name, as people know them.")
@click.option("--priority", type=int, help="Lower rings first in a sequential group.")
@click.option("--dial-string", help="How to ring them ('' = the default user/EXT@${domain_name}).")
@click.option("--group", "groups", multiple=True, metavar="G",
              help="The groups they are in, exactly (repeatable): they leave any other.")
@click.option("--add-group", "add_groups", multiple=True, metavar="G", help="Join group G too (repeatable).")
@click.option("--remove-group", "remove_groups", multiple=True, metavar="G", help="Leave group G (repeatable).")
@click.option("--crm-id", "crm_id", metavar="ID", help="The agent's user id in the CRM ('' clears it): a CRM "
              "lookup that answers with this id rings agent EXT.")
@pass_app
def agent_set(app, ext, name, priority, dial_string, groups, add_groups, remove_groups, crm_id):
    """Change agent EXT: name, priority, dial string, groups, CRM id. All or nothing: one bad
    value changes none of them."""
    if groups and (add_groups or remove_groups):
        raise click.UsageError("give --group (exactly these groups) or --add-group/--remove-group, not both")
    if all(v is None for v in (name, priority, dial_string, crm_id)) and not (groups or add_groups or remove_groups):
        raise click.UsageError("nothing to change: give --name, --priority, --dial-string, a group option or --crm-id")
    unknown = sorted({*groups, *add_groups, *remove_groups} - set(app.store.groups()))
    if unknown:
        raise ValueError(f"unknown group {unknown[0]!r}")
    with app.store.transaction():
        before = app.store.update_agent(ext, name=name, dial_string=dial_string, priority=priority)
        wanted = set(groups) if groups else (set(before.groups) | set(add_groups)) - set(remove_groups)
        for group in sorted(wanted - set(before.groups)):
            app.store.add_member(group, ext)
        for group in sorted(set(before.groups) - wanted):
            app.store.remove_member(group, ext)
        if crm_id is not None:
            app.store.set_agent_crm_id(ext, crm_id)
        changed = app.store.agent(ext)
    said = [f"name {changed.name}"] if name is not None else []
    said += [f"priority {changed.priority}"] if priority is not None else []
    said += [f"dial string {changed.dial_string}"] if dial_string is not None else []
    said += [f"groups {','.join(sorted(changed.groups)) or 'none'}"] if groups or add_groups or remove_groups else []
    if crm_id is not None:
        said.append(f"CRM id {changed.crm_id}" if changed.crm_id else "no CRM id")
    click.echo(f"agent {ext}: {', '.join(said)}")


@agent.command("dnd", epilog=example("fsrouter agent dnd 1001 on", "fsrouter agent dnd 1001"))
@click.argument("ext")
@click.argument("state", type=ON_OFF, required=False)
@pass_app
def agent_dnd(app, ext, state):
    """Do-not-disturb for agent EXT: on, they never ring (sticky or group); off, they do again."""
    if state is not None:
        app.store.set_agent_dnd(ext, parse_bool(state))
    current = app.store.agents().get(ext)
    if current is None:
        raise click.UsageError(f"unknown agent {ext!r}")
    click.echo(f"agent {ext}: do-not-disturb {'on' if current.dnd else 'off'}")


def release_after_leaving(app, ext: str, handover_to: str | None) -> None:
    """What `agent disable` and `agent rm` do with the bindings of an agent who goes."""
    if handover_to:
        moved, left = app.service.bindings.handover(ext, handover_to)
        click.echo(f"moved {moved} binding{'s' if moved != 1 else ''} of {ext} to {handover_to}")
    else:
        released = app.service.bindings.release_learned(ext)
        left = len(app.store.list_bindings(agent=ext))
        click.echo(f"released {released} learned binding{'s' if released != 1 else ''} of {ext}")
    if left:
        click.echo(f"{left} manual binding{'s' if left != 1 else ''} still name {ext}: "
                   f"see `fsrouter binding list --stale --agent {ext}`")


def page_links(app, base: str | None) -> tuple[Links, str]:
    """The pages' links (signed with the config's api_token) and the address they start with."""
    config = app.config
    if not config.api_token:
        raise click.ClickException("set api_token in the config: the pages are served on the API's listener "
                                   "(api_listen) and their links are signed with it")
    return Links(config.api_token), (base or base_url(config.api_listen))


@agent.command("link", epilog=example("fsrouter agent link 1001",
                                      "fsrouter agent link 1001 --base https://fsrouter.office.example"))
@click.argument("ext")
@click.option("--base", metavar="URL", help="The address people reach fsrouter's listener at "
              "(default: http://api_listen).")
@pass_app
def agent_link(app, ext, base):
    """Print agent EXT's own screen-pop page link (it opens no one else's)."""
    links, start = page_links(app, base)
    if app.store.agent(ext) is None:
        raise click.ClickException(f"no agent {ext}")
    click.echo(links.agent_url(start, ext))
