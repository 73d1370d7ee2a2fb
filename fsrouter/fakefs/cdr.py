"""mod_cdr_csv as the fake plays it: a line per call, written with fsrouter's templates
(conf/cdr_csv.conf.xml) when the channel reports, just before its CHANNEL_HANGUP_COMPLETE, and
whether anybody listens to the event socket or not: that is what the CDR catch-up relies on.

Bytes as FreeSWITCH 1.10.12 writes them (../shared/cdr-captures, pass2-proposed-templates-legs-ab/):
every cell in double quotes, cells joined by commas, the line ended by "\n", appended to
<folder>/<accountcode>.csv. The client's channel of a call to a group's extension carries
accountcode fsrouter_in (dialplan/public/01_fsrouter_sales.xml), an agent's phone calling out
fsrouter_out (dialplan/default/00_fsrouter_outbound.xml); the fake writes no other file (legs=ab
also writes the agent legs to Master.csv and <ext>.csv, which fsrouter never reads).
"""
from __future__ import annotations

import time
from pathlib import Path


def _iso(us: int) -> str:
    # ${strftime_tz(UTC ${start_epoch}|%Y-%m-%dT%H:%M:%SZ)}
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(us // 1_000_000))


def _talk(bridged_us: int, end_us: int) -> str:
    # ${cond(${bridge_epoch} > 0 ? ${expr(ipart((${end_uepoch} - ${bridge_uepoch}) / 1000000))} : 0)}
    return str(max(0, end_us - bridged_us) // 1_000_000) if bridged_us else "0"


class CdrWriter:
    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.lines: list[tuple[str, bytes]] = []  # (file name, line), in the order written

    def channel_reported(self, channel) -> None:
        t = channel.times
        bridged = t["bridged"]
        fsrouter = [channel.var(name) or "" for name in ("fsrouter_group", "fsrouter_route", "fsrouter_agent")]
        if channel.role == "client" and channel.group:
            agent = channel.other.ext if bridged and channel.other is not None and channel.other.ext else "-"
            name = "fsrouter_in.csv"
            cells = [_iso(t["created"]), "inbound", channel.caller, agent if bridged else "-"]
        elif channel.role == "out":
            name = "fsrouter_out.csv"
            cells = [_iso(t["created"]), "outbound", channel.dest, channel.caller]
        else:
            return
        cells += [_talk(bridged, t["hangup"]), channel.uuid, str(t["created"]), str(bridged), str(t["hangup"]),
                  *fsrouter]
        line = (",".join(f'"{cell}"' for cell in cells) + "\n").encode()
        with open(self.folder / name, "ab") as file:
            file.write(line)
        self.lines.append((name, line))
