"""`fsrouter run` (the daemon) and `fsrouter demo`."""
from __future__ import annotations

import sys

import click

from .common import example, pass_app


@click.command(epilog=example("fsrouter --config /etc/fsrouter/fsrouter.toml run"))
@pass_app
def run(app):
    """Run the router daemon (what the systemd unit starts)."""
    from .. import wiring
    from ..daemon import run_daemon

    wiring.make_database_cooperative(app.config)
    sys.exit(run_daemon(app.config, app.config_path, wiring.build_daemon))


@click.command(epilog=example("fsrouter demo --speed 10", "fsrouter demo --speed 0.2 --listen 127.0.0.1:8090 --linger 600"))
@click.option("--speed", type=float, default=1.0, show_default=True, help="How much faster than real time.")
@click.option("--listen", default="127.0.0.1:0", show_default=True, metavar="HOST:PORT",
              help="Where the board and the agents' pages are served (port 0: any free port).")
@click.option("--linger", type=click.FloatRange(min=0), default=0.0, show_default=True, metavar="SECONDS",
              help="Keep the pages up this long after the day (to look around in the browser).")
def demo(speed, listen, linger):
    """Watch fsrouter route an office day against a bundled fake FreeSWITCH; its board and an
    agent's screen pop are live in a browser meanwhile (the addresses are printed first)."""
    from ..demo import run_demo
    host, sep, port = listen.rpartition(":")
    if not (sep and host and port.isascii() and port.isdigit() and int(port) < 65536):
        raise click.BadParameter(f"expected HOST:PORT, e.g. 127.0.0.1:8090, got {listen!r}", param_hint="--listen")
    run_demo(speed=speed, listen=listen, linger=linger)
