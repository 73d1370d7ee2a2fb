"""`fsrouter db ...`: back the database up while fsrouter runs, and restore it."""
from __future__ import annotations

import click

from ..config import default_database_url
from .common import command_group, example, pass_app


@command_group("db", epilog=example("fsrouter db backup /var/backups/fsrouter.db",
                                  "fsrouter db restore /var/backups/fsrouter.db"))
def db_group():
    """Back the database up while fsrouter runs, and restore it (SQLite; PostgreSQL: pg_dump)."""


@db_group.command("backup", epilog=example(
    "fsrouter db backup /var/backups/fsrouter-$(date +%F).db",
    "# PostgreSQL: pg_dump -Fc -f fsrouter.dump postgresql://fsrouter@db/fsrouter"))
@click.argument("file", metavar="FILE")
@pass_app
def db_backup(app, file):
    """Copy the database to FILE (0600), consistent, while the daemon keeps routing."""
    from ..store import backup

    summary = backup.backup(app.config.database or default_database_url(), file)
    click.echo(f"backed up to {file}: {summary.describe()}")


@db_group.command("restore", epilog=example(
    "systemctl stop fsrouter && fsrouter db restore /var/backups/fsrouter.db && systemctl start fsrouter"))
@click.argument("file", metavar="FILE")
@click.option("--force", is_flag=True,
              help="Restore even while the database is open elsewhere (a running daemon keeps going on the "
                   "restored data).")
@pass_app
def db_restore(app, file, force):
    """Replace the database with the backup FILE; the current one is kept beside it first.

    Refused while the database is in use (fsrouter run): stop the daemon first, or --force.
    """
    from ..store import backup

    summary, saved = backup.restore(app.config.database or default_database_url(), file, force=force)
    if saved is not None:
        click.echo(f"the database it replaced is in {saved}")
    click.echo(f"restored {file}: {summary.describe()}")
