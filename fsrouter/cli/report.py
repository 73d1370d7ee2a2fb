"""`fsrouter report`: per agent and in total, over a period."""
from __future__ import annotations

from datetime import UTC, datetime

import click

from .common import echo_json, example, parse_since, pass_app, table


@click.command("report", epilog=example("fsrouter report --since 7d", "fsrouter report --group sales --html report.html"))
@click.option("--since", default="7d", show_default=True, metavar="DURATION|ISO",
              help="The period: calls since then (7d, or 2024-05-01T00:00Z).")
@click.option("--group", "group_name", metavar="G", help="Only calls to this group.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--html", "html_file", metavar="FILE", help="Also write a self-contained HTML page with charts.")
@pass_app
def report_command(app, since, group_name, as_json, html_file):
    """Per agent and in total: offered, answered, sticky hit rate, fallbacks, rebinds, missed, callbacks."""
    from ..core import report as reporting
    from ..http import report_html

    if group_name is not None and group_name not in app.store.groups():
        raise ValueError(f"unknown group {group_name!r}")
    start = parse_since(since, datetime.now(UTC))
    agents = [ext for ext, a in app.store.agents().items() if group_name is None or group_name in a.groups]
    # The call records come grouped (one GROUP BY: a million records are a few thousand rows); the
    # figures are still made by report.py alone, from the calls' shapes and their counts.
    result = reporting.build_counted(app.store.call_counts(reporting.CALL_FIELDS, since=start),
                                     app.service.missed_calls(since=start),
                                     app.store.binding_changes(since=start, rebinds_only=True), since=start,
                                     group=group_name, agents=agents)
    if html_file:
        with open(html_file, "w", encoding="utf-8") as handle:
            handle.write(report_html.render(result))
    if as_json:
        return echo_json(result.as_dict())
    percent = lambda v: f"{v * 100:.0f}%" if v is not None else "-"
    seconds = lambda v: report_html.human_duration(v) if v is not None else "-"
    table(("AGENT", "OFFERED", "ANSWERED", "STICKY", "STICKY ANSWERED", "HIT RATE", "FALLBACKS", "REBINDS IN",
            "REBINDS OUT", "MISSED", "CALLED BACK", "CALLBACKS MADE", "CALLBACK MEDIAN", "CALLBACK P90"),
           [(f.agent, f.offered, f.answered, f.sticky_attempts, f.sticky_answered, percent(f.hit_rate), f.fallbacks,
             f.rebinds_in, f.rebinds_out, f.missed, f.called_back, f.callbacks_made,
             seconds(f.callback_median_s), seconds(f.callback_p90_s)) for f in result.agents + [result.total]])
    if result.rebinds:
        click.echo("")
        table(("REBOUND FROM", "TO", "HOW", "CLIENTS"),
              [(r.from_agent, r.to_agent or "none", r.kind, r.count) for r in result.rebinds])
    if html_file:
        click.echo(f"\nwrote {html_file}")
