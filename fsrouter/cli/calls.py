"""`fsrouter calls ...`: call records, the history import, missed calls."""
from __future__ import annotations

from datetime import UTC, datetime

import click

from .common import command_group, echo_json, example, iso, parse_since, pass_app, table


def _call_dict(call) -> dict:
    return {"uuid": call.uuid, "started_at": iso(call.started_at), "ended_at": iso(call.ended_at),
            "direction": call.direction, "client": call.client, "agent": call.agent,
            "talk_seconds": call.talk_seconds, "answered": call.answered, "group": call.group,
            "route": call.route, "outcome": call.outcome, "rung": list(call.rung)}


@command_group(epilog=example("fsrouter calls import history.csv", "fsrouter calls list --since 1d"))
def calls():
    """Call records, and warming bindings from the call history you already have."""


@calls.command("import", epilog=example(
    "fsrouter calls import history.csv",
    "# history.csv:",
    "#   started_at,direction,client,agent,talk_seconds[,uuid]",
    "#   2024-05-01T09:30:00Z,inbound,0501234567,1001,95",
    "#   2024-05-01T10:00:00Z,outbound,0671112233,1002,0",
    "# uuid (optional, FreeSWITCH's ${uuid} in a CDR): a call the daemon recorded is skipped"))
@click.argument("file", metavar="FILE.csv")
@pass_app
def calls_import(app, file):
    """Import past calls: each teaches bindings exactly as a live call would. A bad line imports nothing."""
    with open(file, newline="", encoding="utf-8-sig") as handle:
        result = app.service.import_calls_csv(handle)
    known = f"; {result.known} already recorded by the daemon, skipped" if result.known else ""
    click.echo(f"imported {result.calls} call{'s' if result.calls != 1 else ''}, "
               f"{result.learned} changed a learned binding{known}")


@calls.command("list", epilog=example("fsrouter calls list --since 7d --client 0501234567 --json"))
@click.option("--since", metavar="DURATION|ISO",
              help="Only calls started since then (7d, or 2024-05-01T00:00Z).")
@click.option("--client", help="Only this client's calls.")
@click.option("--limit", type=click.IntRange(min=0), default=100, show_default=True,
              help="At most this many (0: all).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def calls_list(app, since, client, limit, as_json):
    """List call records, newest first."""
    found = app.store.calls(since=parse_since(since, datetime.now(UTC)) if since else None,
                            client=app.service.normalize(client) if client else None, limit=limit or None)
    if as_json:
        return echo_json([_call_dict(c) for c in found])
    table(("STARTED", "DIRECTION", "CLIENT", "AGENT", "TALK", "OUTCOME", "ROUTE"),
           [(iso(c.started_at), c.direction, c.client, c.agent or "-", f"{c.talk_seconds:.0f}s", c.outcome,
             c.route or "") for c in found])


# -- missed calls and reports -----------------------------------------------------------------

def _missed_dict(row) -> dict:
    after = row.callback_after
    return {"bound_agent": row.bound_agent, "owner": row.owner, "client": row.client, "uuid": row.call.uuid,
            "missed_at": iso(row.call.started_at), "group": row.call.group, "rung": list(row.call.rung),
            "sticky_agent": row.call.sticky_agent, "open": row.is_open, "closed_by": row.closed_by,
            "callback_agent": row.callback_agent, "callback_at": iso(row.callback_at),
            "callback_uuid": row.closing_call.uuid if row.closing_call else None,
            "client_answered": row.client_answered,
            "callback_after_seconds": after.total_seconds() if after is not None else None}


@calls.command("missed", epilog=example("fsrouter calls missed --open", "fsrouter calls missed --since 1d --json"))
@click.option("--open", "only_open", is_flag=True, help="Only those nobody has called back yet.")
@click.option("--since", default="7d", show_default=True, metavar="DURATION|ISO",
              help="Only calls missed since then (1d, or 2024-05-01T00:00Z).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def calls_missed(app, only_open, since, as_json):
    """Inbound calls nobody answered, and who called back after how long; bound agent first.

    A client is a person: a callback to any of their linked numbers closes the missed calls of
    all of them. BOUND AGENT is who the ownership rule holds responsible for the client now, in
    the missed call's group (the agent who would ring first, or would but for the hour or their
    presence; presence is not checked here). JSON adds `owner`: the agent of the call's sticky
    leg when one rang (a CRM's answer too), else the bound agent; the report counts by it."""
    from ..http.report_html import human_duration

    start = parse_since(since, datetime.now(UTC))
    rows = app.service.missed_calls(since=start, only_open=only_open)
    if as_json:
        return echo_json([_missed_dict(r) for r in rows])
    states = {"callback": "called back", "answered_again": "called again, answered"}
    table(("BOUND AGENT", "CLIENT", "MISSED AT", "GROUP", "STATE", "BY", "AFTER", "CLIENT ANSWERED"),
           [(r.bound_agent or "-", r.client, iso(r.call.started_at), r.call.group or "",
             "open" if r.is_open else states.get(r.closed_by, r.closed_by), r.callback_agent or "",
             human_duration(r.callback_after.total_seconds()) if r.callback_after is not None else "",
             "" if r.is_open else ("yes" if r.client_answered else "no")) for r in rows])


# -- loss windows ------------------------------------------------------------------------------

def _window_dict(w) -> dict:
    seconds = (w.closed_at - w.opened_at).total_seconds() if w.closed_at else None
    return {"id": w.id, "node": w.node, "from": iso(w.opened_at), "to": iso(w.closed_at), "seconds": seconds,
            "why": w.why, "detail": w.detail, "recovered": w.recovered, "learned": w.learned}


@calls.command("gaps", epilog=example("fsrouter calls gaps", "fsrouter calls gaps --since 30d --node pbx1 --json"))
@click.option("--since", default="7d", show_default=True, metavar="DURATION|ISO",
              help="Windows still open or closed since then (7d, or 2024-05-01T00:00Z).")
@click.option("--node", help="Only this daemon's windows (config `node`, default its host name).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def calls_gaps(app, since, node, as_json):
    """When the event listener was not subscribed, why, and the calls recovered from the CDRs for it
    (docs/operations.md, "Calls that ended while fsrouter was not listening")."""
    rows = [_window_dict(w) for w in app.store.loss_windows(node=node, since=parse_since(since, datetime.now(UTC)))]
    if as_json:
        return echo_json(rows)
    table(("ID", "NODE", "FROM", "TO", "SECONDS", "WHY", "RECOVERED", "LEARNED", "DETAIL"),
          [(r["id"], r["node"], r["from"], r["to"] or "open", f"{r['seconds']:.1f}" if r["seconds"] is not None else "-",
            r["why"], r["recovered"], r["learned"], r["detail"]) for r in rows])
