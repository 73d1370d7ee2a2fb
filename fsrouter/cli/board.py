"""`fsrouter board link`: the office board's page."""
from __future__ import annotations

import click

from .agent import page_links
from .common import command_group, example, pass_app


@command_group(epilog=example("fsrouter board link"))
def board():
    """The office board: calls in progress, presence, today's missed calls and callbacks."""


@board.command("link", epilog=example("fsrouter board link", "fsrouter board link --base https://fsrouter.office.example"))
@click.option("--base", metavar="URL", help="The address people reach fsrouter's listener at "
              "(default: http://api_listen).")
@pass_app
def board_link(app, base):
    """Print the office board's link (for a manager's screen; it opens no agent's page)."""
    links, start = page_links(app, base)
    click.echo(links.board_url(start))
