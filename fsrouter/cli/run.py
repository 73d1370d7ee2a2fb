"""`fsrouter run` (the daemon) and `fsrouter demo`."""
from __future__ import annotations

import sys

import click

from .common import example, pass_app


@click.command(epilog=example("fsrouter --config /etc/fsrouter/fsrouter.toml run"))
@pass_app
def run(app):
    """Run the router daemon (what the systemd unit starts)."""
    from ..daemon import run_daemon
    sys.exit(run_daemon(app.config, app.config_path))


@click.command(epilog=example("fsrouter demo --speed 10"))
@click.option("--speed", type=float, default=1.0, show_default=True, help="How much faster than real time.")
def demo(speed):
    """Watch fsrouter route an office day against a bundled fake FreeSWITCH."""
    from ..demo import run_demo
    run_demo(speed=speed)
