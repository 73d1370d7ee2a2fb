"""The `api` commands the fake answers, with the bodies a FreeSWITCH 1.10.12 writes (captures 04,
10 and set-b 05): no trailing newline after true/false, `_undef_` for an unset variable,
`{"row_count": 0}` with a space when a table is empty."""
from __future__ import annotations

import json

from .clock import date_local

VERSION = "FreeSWITCH Version 1.10.12-release~64bit ( 64bit)\n"


def answer(fake, line: str) -> str:
    command, _, rest = line.strip().partition(" ")
    rest = rest.strip()
    handler = _COMMANDS.get(command)
    if handler is None:
        return f"-ERR {command} Command not found!\n"
    return handler(fake, rest)


def _status(fake, _rest: str) -> str:
    up = max(0, fake.clock.now_us() - fake.started_us)
    seconds, us = divmod(up, 1_000_000)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    years, days = divmod(days, 365)
    live = len(fake.channels)
    return (f"UP {years} years, {days} days, {hours} hours, {minutes} minutes, {seconds} seconds, "
            f"{us // 1000} milliseconds, {us % 1000} microseconds\n"
            "FreeSWITCH (Version 1.10.12-release  64bit) is ready\n"
            f"{fake.sessions_since_startup} session(s) since startup\n"
            f"{live} session(s) - peak {live}, last 5min {live} \n"
            "0 session(s) per Sec out of max 30, peak 0, last 5min 0 \n"
            "1000 session(s) max\nmin idle cpu 0.00/99.00\nCurrent Stack Size/Max 240K/8192K\n")


def _version(fake, _rest: str) -> str:
    return VERSION


def _registered(fake):
    return [agent for agent in fake.agents.values() if agent.registered]


def _sofia_contact(fake, rest: str) -> str:
    target = rest.split()[-1] if rest else ""
    user = target.removeprefix("user/")
    ext = user.split("@", 1)[0]
    agent = fake.agents.get(ext)
    if agent is None or not agent.registered:
        return "error/user_not_registered"
    return agent.contact


def _show(fake, rest: str) -> str:
    words = rest.split()
    what = words[0] if words else ""
    as_json = words[-2:] == ["as", "json"]
    if what == "registrations":
        rows = [{"reg_user": a.ext, "realm": "127.0.0.1", "token": f"fake-{a.ext}",
                 "url": a.contact, "expires": str(fake.started_us // 1_000_000 + 3600),
                 "network_ip": "127.0.0.1", "network_port": "5070", "network_proto": "udp",
                 "hostname": "vm", "metadata": ""} for a in _registered(fake)]
    elif what in ("channels", "calls"):
        if words[1:2] == ["count"]:
            return f"\n{len(fake.channels)} total.\n"
        rows = [{"uuid": ch.uuid, "direction": "inbound" if ch.role == "client" else "outbound",
                 "created": date_local(ch.times["created"]), "created_epoch": str(ch.times["created"] // 10**6),
                 "name": ch.name, "state": "CS_EXECUTE", "cid_name": ch.caller, "cid_num": ch.caller,
                 "dest": ch.dest, "callstate": ch.call_state}
                for ch in fake.channels.values()]
    else:
        return "-USAGE: show <what>\n"
    if as_json:
        if not rows:
            return '{"row_count": 0}\n'
        return json.dumps({"row_count": len(rows), "rows": rows}, separators=(",", ":")) + "\n"
    if not rows:
        return "\n0 total.\n"
    names = list(rows[0])
    lines = [",".join(names)] + [",".join(str(r[n]) for n in names) for r in rows]
    return "\n".join(lines) + f"\n\n{len(rows)} total.\n"


def _uuid_exists(fake, rest: str) -> str:
    return "true" if rest.strip() in fake.channels else "false"


def _uuid_kill(fake, rest: str) -> str:
    uuid, _, cause = rest.partition(" ")
    if not fake.kill_channel(uuid.strip(), cause.strip() or "NORMAL_CLEARING"):
        return "-ERR No such channel!\n"
    return "+OK\n"


def _uuid_getvar(fake, rest: str) -> str:
    uuid, _, name = rest.partition(" ")
    channel = fake.channels.get(uuid.strip())
    if channel is None:
        return "-ERR No such channel!\n"
    value = channel.var(name.strip())
    return "_undef_" if value is None else value


_COMMANDS = {"status": _status, "version": _version, "sofia_contact": _sofia_contact, "show": _show,
             "uuid_exists": _uuid_exists, "uuid_kill": _uuid_kill, "uuid_getvar": _uuid_getvar}
