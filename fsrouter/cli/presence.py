"""Commands of presence, sticky hours, per-group settings, clients as people and handover
(docs/presence-and-hours.md). Registered on cli.py's groups when cli.py imports this module."""
from __future__ import annotations

import click

from ..core import hours, overrides
from ..core.settings import parse_bool
from . import _echo_json, _example, _table, agent, binding, group, main, pass_app

_ON_OFF = click.Choice(["on", "off"], case_sensitive=False)


# -- agents ------------------------------------------------------------------------------------

@agent.command("dnd", epilog=_example("fsrouter agent dnd 1001 on", "fsrouter agent dnd 1001"))
@click.argument("ext")
@click.argument("state", type=_ON_OFF, required=False)
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
        moved, left = app.store.handover(ext, handover_to)
        click.echo(f"moved {moved} binding{'s' if moved != 1 else ''} of {ext} to {handover_to}")
    else:
        released = app.store.release_learned(ext)
        left = len(app.store.list_bindings(agent=ext))
        click.echo(f"released {released} learned binding{'s' if released != 1 else ''} of {ext}")
    if left:
        click.echo(f"{left} manual binding{'s' if left != 1 else ''} still name {ext}: "
                   f"see `fsrouter binding list --stale --agent {ext}`")


# -- groups ------------------------------------------------------------------------------------

@group.command("set", epilog=_example(
    "fsrouter group set sales --sticky-hours 'mon-fri 09:00-18:00' --timezone Europe/Kyiv",
    "fsrouter group set sales --sticky-timeout 25s --mode auto",
    "fsrouter group set sales --unset mode --sticky-hours ''"))
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
@pass_app
def group_set(app, name, sticky_hours, timezone, sticky_timeout, lookback, learn_from, mode, unset):
    """Sticky hours and the group's own settings: a group's value beats the global one."""
    own = {key: value for key, value in (("sticky_timeout", sticky_timeout), ("lookback", lookback),
                                         ("learn_from", learn_from), ("mode", mode)) if value is not None}
    if sticky_hours is None and timezone is None and not own and not unset:
        raise click.UsageError("nothing to change: give --sticky-hours, --timezone, a setting or --unset")
    changed = app.store.set_group_options(name, sticky_hours=sticky_hours, timezone=timezone,
                                          settings=own, unset=unset)
    click.echo(f"group {changed.name}: sticky hours {hours.describe(changed.sticky_hours, changed.timezone)}")
    for key, (value, where) in overrides.sources(app.store.settings(), changed).items():
        click.echo(f"  {key} = {value} ({where})")


def route_settings(app, group_name: str) -> dict:
    """For `fsrouter route`: the values the call runs under and where each came from."""
    found = app.store.group(group_name)
    if found is None:
        return {}
    values = {key: {"value": value, "from": where}
              for key, (value, where) in overrides.sources(app.store.settings(), found).items()}
    values["sticky_hours"] = {"value": hours.describe(found.sticky_hours, found.timezone),
                              "from": "group" if found.sticky_hours else "default"}
    return values


def echo_route_settings(app, group_name: str) -> None:
    for key, item in route_settings(app, group_name).items():
        click.echo(f"{key:<15}{item['value']} ({item['from']})")


# -- clients as people -------------------------------------------------------------------------

@main.group(epilog=_example("fsrouter client link 0501234567 0671112233", "fsrouter client show 0501234567"))
def client():
    """Clients as people: the numbers one client calls from."""


@client.command("link", epilog=_example("fsrouter client link 0501234567 0671112233"))
@click.argument("number")
@click.argument("other")
@pass_app
def client_link(app, number, other):
    """OTHER (and its client's numbers) become numbers of NUMBER's client: a binding learned on
    one routes them all."""
    a, b = app.service.normalize(number), app.service.normalize(other)
    owner = app.store.link_numbers(a, b)
    click.echo(f"client {owner}: {', '.join(app.store.numbers_of(owner))}")


@client.command("unlink", epilog=_example("fsrouter client unlink 0441234567"))
@click.argument("number")
@pass_app
def client_unlink(app, number):
    """NUMBER stops being one of its client's numbers: it calls as a client of its own, with no
    bindings (the client keeps its bindings)."""
    normal = app.service.normalize(number)
    owner = app.store.unlink_number(normal)
    click.echo(f"{normal} is a client of its own now; client {owner}: {', '.join(app.store.numbers_of(owner))}")


@client.command("show", epilog=_example("fsrouter client show 0671112233 --json"))
@click.argument("number")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def client_show(app, number, as_json):
    """The client NUMBER belongs to: its numbers, shared ones, blocked agents and bindings."""
    normal = app.service.normalize(number)
    owner, _, blocked = app.store.client_of(normal)
    numbers = app.store.numbers_of(owner)
    found = app.store.bindings_for(owner)
    shared_numbers = [n for n in numbers if app.store.client_of(n)[1]]
    info = {"client": owner, "numbers": numbers, "shared": shared_numbers, "blocked": sorted(blocked),
            "bindings": {source: b.agent for source, b in sorted(found.items())}}
    if as_json:
        return _echo_json(info)
    click.echo(f"client    {owner}")
    click.echo(f"numbers   {', '.join(numbers)}")
    click.echo(f"shared    {', '.join(shared_numbers) or 'none'}")
    click.echo(f"blocked   {', '.join(sorted(blocked)) or 'none'}")
    click.echo("bindings  " + (", ".join(f"{s} {a}" for s, a in info["bindings"].items()) or "none"))


@main.group(epilog=_example("fsrouter number shared +380442000000 on"))
def number():
    """Numbers that are not one client's: switchboards, call-centre lines."""


@number.command("shared", epilog=_example("fsrouter number shared +380442000000 on",
                                          "fsrouter number shared +380442000000 off"))
@click.argument("value", metavar="NUMBER")
@click.argument("state", type=_ON_OFF)
@pass_app
def number_shared(app, value, state):
    """A shared NUMBER never binds and never routes sticky (on), or is a client's again (off)."""
    normal = app.service.normalize(value)
    app.store.set_shared(normal, parse_bool(state))
    click.echo(f"{normal}: shared {state.lower()}")


@binding.command("block", epilog=_example("fsrouter binding block 0501234567 1002"))
@click.argument("client_number", metavar="CLIENT")
@click.argument("ext")
@pass_app
def binding_block(app, client_number, ext):
    """Keep CLIENT away from agent EXT: never its sticky agent, by any source."""
    owner, dropped = app.store.block(app.service.normalize(client_number), ext)
    click.echo(f"client {owner} is kept away from {ext}"
               + (f" (dropped the learned binding to {ext})" if dropped else ""))
    manual = app.store.bindings_for(owner).get("manual")
    if manual is not None and manual.agent == ext:
        click.echo(f"the manual binding of {owner} names {ext}: it no longer routes (binding set/rm it)")


@binding.command("unblock", epilog=_example("fsrouter binding unblock 0501234567 1002"))
@click.argument("client_number", metavar="CLIENT")
@click.argument("ext")
@pass_app
def binding_unblock(app, client_number, ext):
    """Let agent EXT be CLIENT's sticky agent again."""
    removed = app.store.unblock(app.service.normalize(client_number), ext)
    click.echo(f"unblocked {ext}" if removed else f"{ext} was not blocked")


@binding.command("blocks", epilog=_example("fsrouter binding blocks --json"))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def binding_blocks(app, as_json):
    """List which clients are kept away from which agents."""
    rows = app.store.blocks()
    if as_json:
        return _echo_json([{"client": c, "agent": a} for c, a in rows])
    _table(("CLIENT", "AGENT"), rows)


def live_presence(config, timeout: float = 3.0):
    """Registrations asked of FreeSWITCH on one event-socket connection, as the daemon's
    presence does: a callable for Service.presence. One-line error when it cannot connect."""
    import gevent
    from greenswitch.esl import InboundESL, NotConnectedError

    from ..esl.presence import Presence, Registrations

    conn = InboundESL(config.esl_host, config.esl_port, config.esl_password, timeout=timeout)
    where = f"{config.esl_host}:{config.esl_port}"
    try:
        with gevent.Timeout(timeout):  # greenswitch waits for auth/request without a limit
            conn.connect()
    except ValueError:
        raise click.ClickException(f"--live: FreeSWITCH at {where} refused the event-socket password") from None
    except (OSError, gevent.Timeout, NotConnectedError) as exc:
        raise click.ClickException(f"--live: cannot reach FreeSWITCH's event socket at {where} "
                                   f"({type(exc).__name__})") from None

    def api(command: str, limit: float) -> str:
        with gevent.Timeout(limit):
            return conn.send(f"api {command}").data

    presence = Presence(registrations=Registrations(api, timeout=1.0))
    return lambda agents, wait_for: presence.availability(agents, wait_for={a.ext for a in agents})

