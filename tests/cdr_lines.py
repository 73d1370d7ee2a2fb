"""The CDR lines of ../shared/cdr-captures as fsrouter's shipped templates (conf/cdr_csv.conf.xml)
write them, and the calls the listener makes of the same calls' events.

Columns 1-6 of a shipped line are the proposed template recorded on the real FreeSWITCH in pass 2
(pass2-proposed-templates-legs-ab/fsrouter_in.csv, fsrouter_out.csv), byte for byte. Columns
7-12 are plain `${variable}` expansions that pass did not have in its template; their values are
the ones the same channel's mod_json_cdr body carries (json-cdr/*.body `variables`, the same
FreeSWITCH, the same calls), quoted as mod_cdr_csv quotes every cell.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

from captures import cdr_captures_dir

from fsrouter.esl.events import CallTracker

PASS2 = "pass2-proposed-templates-legs-ab"
EXTRA_VARIABLES = ("start_uepoch", "bridge_uepoch", "end_uepoch", "fsrouter_group", "fsrouter_route",
                   "fsrouter_agent")
AGENTS = frozenset({"1001", "1002", "1003", "1004"})  # the rig's agents (README "Passes")
REGION = "UA"
# README pass 2 table: the client channel's (inbound) or the agent's phone's (outbound) uuid.
SITUATIONS = {
    "a": "9540196b-8ef9-4649-9d42-3646842689a2",
    "b": "c3ae6829-6dc6-4a43-9cc8-8c9b287928df",
    "c": "6bbab1af-b577-46ab-97e0-e24e02f9c5ba",
    "d": "4158285d-37c1-4414-b6a8-3cfd9cf5f8e5",
    "e": "982c1b00-0aa2-45b2-b6e1-e07af42de71f",
    "f": "f08491dd-f487-47ba-913b-08164724ba9c",
    "f2": "10f55e54-85e1-487f-bf20-c675c2631bf1",
    "g": "385201e8-abf9-4f70-a041-6940cfeeb160",
    "d_receiver_down": "d3dbc512-189a-4823-9cc9-38fb9aca4918",
}


def json_variables(root: Path | None = None) -> dict[str, dict]:
    """uuid -> the `variables` of its mod_json_cdr body (the POSTs and the err-log-dir files)."""
    root = root or cdr_captures_dir()
    found = {}
    for path in [*root.glob("json-cdr/*.body"), *root.glob("json-cdr/receiver-down-err-log-dir/*.cdr.json")]:
        variables = json.loads(path.read_bytes())["variables"]
        found[variables["uuid"]] = variables
    return found


def shipped_lines(name: str, root: Path | None = None) -> list[bytes]:
    """The lines of pass 2's `name` (fsrouter_in.csv / fsrouter_out.csv) with the shipped
    template's added cells, each ending in a newline as mod_cdr_csv writes it."""
    root = root or cdr_captures_dir()
    variables = json_variables(root)
    lines = []
    for raw in (root / PASS2 / name).read_bytes().splitlines():
        uuid = next(csv.reader([raw.decode()]))[5]
        extra = ",".join(f'"{variables[uuid].get(v, "")}"' for v in EXTRA_VARIABLES)
        lines.append(raw + b"," + extra.encode() + b"\n")
    return lines


def listener_calls(root: Path | None = None) -> dict:
    """uuid -> the call today's listener makes of the captured events (work/events.jsonl: every
    CHANNEL_* event of both passes, as FreeSWITCH sent it)."""
    root = root or cdr_captures_dir()
    tracker = CallTracker(AGENTS, REGION)
    calls = {}
    for line in (root / "work" / "events.jsonl").read_text().splitlines():
        for call in tracker.feed(json.loads(json.loads(line)["event"])):
            calls[call.uuid] = call
    for call in tracker.flush():
        calls[call.uuid] = call
    return calls
