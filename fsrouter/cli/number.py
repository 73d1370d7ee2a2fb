"""`fsrouter number ...`: numbers that are not one client's (switchboards, call-centre lines)."""
from __future__ import annotations

import click

from ..core.settings import parse_bool
from .common import ON_OFF, command_group, example, pass_app


@command_group(epilog=example("fsrouter number shared +380442000000 on"))
def number():
    """Numbers that are not one client's: switchboards, call-centre lines."""


@number.command("shared", epilog=example("fsrouter number shared +380442000000 on",
                                          "fsrouter number shared +380442000000 off"))
@click.argument("value", metavar="NUMBER")
@click.argument("state", type=ON_OFF)
@pass_app
def number_shared(app, value, state):
    """A shared NUMBER never binds and never routes sticky (on), or is a client's again (off)."""
    normal = app.service.normalize(value)
    app.store.set_shared(normal, parse_bool(state))
    click.echo(f"{normal}: shared {state.lower()}")
