"""`fsrouter route`: the dry run of a routing decision, with the settings it runs under."""
from __future__ import annotations

import click

from .. import wiring
from ..core import hours, overrides, routing
from ..core.settings import format_duration
from ..service import parse_time
from .common import echo_json, example, pass_app


@click.command(epilog=example("fsrouter route 0501234567 --group sales",
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
    presence = wiring.route_presence(app.config) if live else None
    plan = app.service.route(number, group_name, now=parse_time(at) if at else None, crm=answer,
                             presence=presence)
    if as_json:
        return echo_json({**plan.as_dict(), "settings": route_settings(app, group_name)})
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
    echo_route_settings(app, group_name)


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

