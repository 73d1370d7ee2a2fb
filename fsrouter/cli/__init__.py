"""`fsrouter`: the sysadmin's command line. Every command prints for a person, or JSON with --json.

This module only builds `main` and adds the nouns; each noun's commands live in their own module,
and what they share in common.py.
"""
from __future__ import annotations

import click

from . import agent, binding, board, calls, client, db, group, number, outbox, report, route, run, settings
from .common import App, OneLineGroup, configure_logging, example


@click.group(cls=OneLineGroup, epilog=example("fsrouter --db sqlite:////tmp/fs.db agent list",
                                               "fsrouter route 0501234567 --group sales"))
@click.option("--db", metavar="URL", help="Database URL (sqlite:///path, postgresql://...). "
              "Default: FSROUTER_DATABASE, else the config file, else a file in your data directory.")
@click.option("--config", "config_path", metavar="FILE", envvar="FSROUTER_CONFIG",
              help="Config file (default /etc/fsrouter/fsrouter.toml when it exists).")
@click.version_option(package_name="fsrouter")
@click.pass_context
def main(ctx, db, config_path):
    """fsrouter: ring a known client's own agent first, then the group."""
    configure_logging()
    app = ctx.obj = App(db, config_path)
    ctx.call_on_close(app.close)


for command in (agent.agent, board.board, group.group, binding.binding, client.client, number.number,
                settings.settings_group, calls.calls, report.report_command, outbox.outbox, route.route,
                db.db_group, run.run, run.demo):
    main.add_command(command)

if __name__ == "__main__":
    main()
