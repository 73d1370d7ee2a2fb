"""`fsrouter settings ...`: the routing and learning rules, shared by every node."""
from __future__ import annotations

import click

from ..core.settings import SETTINGS
from .common import command_group, echo_json, example, pass_app, table


@command_group("settings", epilog=example("fsrouter settings show", "fsrouter settings set sticky_timeout 25s"))
def settings_group():
    """The routing and learning rules, shared by every node."""


@settings_group.command("show", epilog=example("fsrouter settings show --json"))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def settings_show(app, as_json):
    """Show every setting."""
    values = app.store.settings().as_text()
    if as_json:
        return echo_json(values)
    table(("KEY", "VALUE", "MEANING"), [(key, values[key], spec.help) for key, spec in SETTINGS.items()])


@settings_group.command("set", epilog=example("fsrouter settings set lookback 60d",
                                               "fsrouter settings set mode manual"))
@click.argument("key", type=click.Choice(list(SETTINGS)), metavar="KEY")
@click.argument("value")
@pass_app
def settings_set(app, key, value):
    """Set KEY to VALUE (keys: see `settings show`)."""
    settings = app.store.set_setting(key, value)
    click.echo(f"{key} = {settings.as_text()[key]}")
