"""`fsrouter outbox ...`: webhook events waiting to be delivered."""
from __future__ import annotations

import click

from .common import command_group, echo_json, example, iso, pass_app, table


@command_group(epilog=example("fsrouter outbox list", "fsrouter outbox retry", "fsrouter outbox purge"))
def outbox():
    """Webhook events waiting to be delivered (the daemon sends them; docs/crm.md)."""


@outbox.command("list", epilog=example("fsrouter outbox list", "fsrouter outbox list --all --json"))
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
        return echo_json([e.as_dict() for e in entries])
    if not entries:
        return click.echo("the outbox is empty" if not show_all else "nothing in the outbox")
    table(("ID", "EVENT", "STATE", "ATTEMPTS", "NEXT TRY", "URL", "LAST ERROR"),
           [(e.id, e.event_type, e.state, e.attempts, iso(e.next_at) if e.state == PENDING else "",
             e.target, e.last_error) for e in entries])


@outbox.command("retry", epilog=example("fsrouter outbox retry", "fsrouter outbox retry 12 13"))
@click.argument("ids", nargs=-1, type=int, metavar="[ID]...")
@pass_app
def outbox_retry(app, ids):
    """Try pending and dead deliveries (these IDs, default all) again now."""
    from ..http.outbox import Outbox

    count = Outbox(app.store).retry(ids or None)
    click.echo(f"{count} deliver{'ies' if count != 1 else 'y'} will be tried again now")


@outbox.command("purge", epilog=example("fsrouter outbox purge", "fsrouter outbox purge --dead"))
@click.option("--dead", is_flag=True, help="Also drop what was given up on.")
@click.option("--all", "everything", is_flag=True, help="Drop everything, pending too: those events are lost.")
@pass_app
def outbox_purge(app, dead, everything):
    """Drop delivered events (and, if asked, dead or all ones)."""
    from ..http.outbox import DEAD, PENDING, SENT, Outbox

    states = (SENT, DEAD, PENDING) if everything else (SENT, DEAD) if dead else (SENT,)
    count = Outbox(app.store).purge(states)
    click.echo(f"purged {count} event{'s' if count != 1 else ''} ({', '.join(states)})")
