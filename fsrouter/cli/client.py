"""`fsrouter client ...`: clients as people, the numbers one client calls from."""
from __future__ import annotations

import click

from .common import command_group, echo_json, example, pass_app


@command_group(epilog=example("fsrouter client link 0501234567 0671112233", "fsrouter client show 0501234567"))
def client():
    """Clients as people: the numbers one client calls from."""


@client.command("link", epilog=example("fsrouter client link 0501234567 0671112233"))
@click.argument("number")
@click.argument("other")
@pass_app
def client_link(app, number, other):
    """OTHER (and its client's numbers) become numbers of NUMBER's client: a binding learned on
    one routes them all."""
    a, b = app.service.normalize(number), app.service.normalize(other)
    owner = app.service.bindings.link_numbers(a, b)
    click.echo(f"client {owner}: {', '.join(app.store.numbers_of(owner))}")


@client.command("unlink", epilog=example("fsrouter client unlink 0441234567"))
@click.argument("number")
@pass_app
def client_unlink(app, number):
    """NUMBER stops being one of its client's numbers: it calls as a client of its own, with no
    bindings (the client keeps its bindings)."""
    normal = app.service.normalize(number)
    owner = app.store.unlink_number(normal)
    click.echo(f"{normal} is a client of its own now; client {owner}: {', '.join(app.store.numbers_of(owner))}")


@client.command("show", epilog=example("fsrouter client show 0671112233 --json"))
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
        return echo_json(info)
    click.echo(f"client    {owner}")
    click.echo(f"numbers   {', '.join(numbers)}")
    click.echo(f"shared    {', '.join(shared_numbers) or 'none'}")
    click.echo(f"blocked   {', '.join(sorted(blocked)) or 'none'}")
    click.echo("bindings  " + (", ".join(f"{s} {a}" for s, a in info["bindings"].items()) or "none"))
