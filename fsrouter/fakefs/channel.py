"""A FreeSWITCH channel as the fake keeps it, and how its events are written.

An event is one recorded event of the same kind and moment (shapes.json, read by shapes.py) with this channel's
values put in: its ids and numbers into the ⟨placeholders⟩, its times into every time header,
the variables the router set where the recording's router had set its own, and the outcome
variables the fake computed (channel.dynamic) over the recorded ones. A variable in `dynamic`
with the value None is left out, as FreeSWITCH leaves out a variable it never set.
"""
from __future__ import annotations

import re
import uuid as uuidlib
from itertools import count

from .clock import date_gmt, date_local, date_rfc2822
from .shapes import LINES, SHAPES
from .wire import json_member, plain_line

ROUTER_MARK = "⟨router_variables⟩"
_PLACEHOLDER = re.compile(r"⟨([a-z_]+)⟩")
_TIME_HEADER = re.compile(
    r"^(Caller|Channel|Other-Leg)-(Profile-Created-Time|Channel-(Created|Answered|Progress|Progress-Media"
    r"|Hangup|Transfer|Resurrect|Bridged)-Time|Channel-Last-Hold|Channel-Hold-Accum)$")
_TIME_KEY = {"Profile-Created-Time": "created", "Channel-Created-Time": "created",
             "Channel-Answered-Time": "answered", "Channel-Progress-Time": "progress",
             "Channel-Progress-Media-Time": "progress_media", "Channel-Hangup-Time": "hangup",
             "Channel-Bridged-Time": "bridged"}
# The call-detail variables FreeSWITCH adds when a channel is torn down, from its times.
_STAMPS = {"start": "created", "profile_start": "created", "answer": "answered", "bridge": "bridged",
           "progress": "progress", "progress_media": "progress_media", "end": "hangup",
           "last_hold": None, "resurrect": None}
_SPANS = {"duration": ("created", "hangup"), "bill": ("answered", "hangup"),
          "progress": ("created", "progress"), "answer": ("created", "answered"),
          "wait": ("created", "bridged"), "progress_media": ("created", "progress_media"),
          "flow_bill": ("created", "hangup")}
# variable -> (start, end, unit): billsec in whole seconds (of the epochs, as FreeSWITCH counts),
# billmsec in ms, billusec in us; duration / mduration / uduration likewise.
_SPAN_VARS = {}
for _base, _ends in _SPANS.items():
    if _base == "duration":
        _SPAN_VARS.update({"duration": _ends + ("s",), "mduration": _ends + ("ms",), "uduration": _ends + ("us",)})
    else:
        _SPAN_VARS.update({_base + "sec": _ends + ("s",), _base + "msec": _ends + ("ms",),
                           _base + "usec": _ends + ("us",)})
_session_ids = count(1)

# Per shape and format: a list of (name, kind, payload, variable name or None, is an Other-Leg
# header). kind "s": a fixed line, already written in the format; "p": a value with placeholders;
# "c": computed from the channel; "r": the router's variables.
_COMPILED: dict[tuple[str, str], list[tuple[str, str, object, str | None, bool]]] = {}
# stamp variables -> (which time, unit)
_STAMP_VARS = {}
for _stamp, _key in _STAMPS.items():
    _STAMP_VARS.update({f"{_stamp}_stamp": (_key, "stamp"), f"{_stamp}_epoch": (_key, "s"),
                        f"{_stamp}_uepoch": (_key, "us")})


def _computed_names(name: str) -> bool:
    if name in ("Event-Name", "Core-UUID", "Event-Date-Local", "Event-Date-GMT", "Event-Date-Timestamp",
                "Event-Sequence", "Answer-State", "Channel-Call-State", "Hangup-Cause", "Application",
                "Application-Data", "Application-Response", "Application-UUID", "Other-Leg-Channel-Name",
                "Other-Leg-Destination-Number"):
        return True
    if _TIME_HEADER.match(name):
        return True
    if not name.startswith("variable_"):
        return False
    var = name[9:]
    return (var in ("session_id", "sip_call_id", "sip_invite_stamp", "RFC2822_DATE", "export_vars",
                    "current_application", "current_application_data", "last_app", "last_arg")
            or var.endswith(("_stamp", "_epoch", "_uepoch")) or var in _SPAN_VARS)


_WRITERS = {"plain": plain_line, "json": json_member}


def compiled(shape: str, fmt: str = "plain") -> list[tuple[str, str, object, str | None, bool]]:
    out = _COMPILED.get((shape, fmt))
    if out is None:
        write = _WRITERS[fmt]
        out = []
        for i in SHAPES[shape]:
            name, value = LINES[i]
            var = name[9:] if name.startswith("variable_") else None
            other = name == "Other-Type" or name.startswith("Other-Leg-")
            if name == ROUTER_MARK:
                out.append((name, "r", None, None, False))
            elif _computed_names(name):
                out.append((name, "c", value, var, other))
            elif "⟨" in value:
                out.append((name, "p", value, var, other))
            else:
                out.append((name, "s", write(name, value), var, other))
        _COMPILED[(shape, fmt)] = out
    return out


def _sec(us: int) -> int:
    return us // 1_000_000


class Channel:
    """role: client (a caller on the carrier profile), agent (a leg a bridge originates), out (an
    agent's phone calling out). `other` is the channel it is bridged to or was originated by."""

    def __init__(self, role: str, name: str, caller: str, dest: str, ext: str = "", group: str = "",
                 created_us: int = 0, uuid: str | None = None):
        self.role = role
        self.role_shape = role                     # which recorded channel its events copy
        self.uuid = uuid or str(uuidlib.uuid4())
        self.name = name
        self.caller, self.dest, self.ext, self.group = caller, dest, ext, group
        self.session_id = str(next(_session_ids))
        self.sip_call_id = str(uuidlib.uuid4())
        self.times = {"created": created_us, "answered": 0, "progress": 0, "progress_media": 0,
                      "bridged": 0, "hangup": 0}
        self.answer_state = "ringing"
        self.call_state = "RINGING"
        self.hangup_cause: str | None = None
        self.other: Channel | None = None
        self.other_name: str | None = None        # the outside party's channel name (agent calls out)
        self.peer_uuid = ""                        # a leg it originated that never bridged
        self.router_vars: dict[str, str] = {}      # set/export/multiset by the router, in FreeSWITCH's order
        self.exported: list[str] = []
        self.dynamic: dict[str, str | None] = {}   # outcome variables the fake computed
        self.operator = ""                         # a transfer: the extension who passed the call on
        self.operator_uuid = ""                    # ... and their leg (att_xfer: it originated this one)
        self.headers: dict[str, str] = {}          # headers FreeSWITCH rewrote (att_xfer's caller ID swap)
        self.app: tuple[str, str, str] | None = None  # (name, data, Application-UUID) running now
        self.last_app: tuple[str, str] | None = None
        self.alive = True
        self._line_cache_key: tuple = ()
        self._line_cache: dict = {}

    # -- state ---------------------------------------------------------------------------------
    def set_var(self, name: str, value: str) -> None:
        # FreeSWITCH re-adds a variable it sets again, so it moves to the end of the list.
        self.router_vars.pop(name, None)
        self.router_vars[name] = value

    def unset_var(self, name: str) -> None:
        self.router_vars.pop(name, None)

    def var(self, name: str, default: str | None = None) -> str | None:
        if name in self.router_vars:
            return self.router_vars[name]
        if name in self.dynamic:
            return self.dynamic[name]
        return {"uuid": self.uuid, "fsrouter_group": self.group or None,
                "caller_id_number": self.caller, "destination_number": self.dest}.get(name, default)

    # -- rendering -----------------------------------------------------------------------------
    def placeholders(self, core_uuid: str) -> dict[str, str]:
        other = self.other
        return {"uuid": self.uuid, "other_uuid": other.uuid if other else self.peer_uuid, "caller": self.caller,
                "dest": self.dest, "ext": self.ext or (other.ext if other else ""),
                "group": self.group, "core_uuid": core_uuid, "operator": self.operator,
                "operator_uuid": self.operator_uuid, "other_caller": other.caller if other else ""}

    def render(self, shape: str, event_name: str, seq: int, now_us: int, core_uuid: str,
               app: tuple[str, str, str] | None = None, response: str = "_none_", fmt: str = "plain") -> bytes:
        """The event's body: for "plain" its block (encoded header lines, no blank line), for
        "json" its object (the same headers in the same order, as `event json` gets them)."""
        write = _WRITERS[fmt]
        values = self.placeholders(core_uuid)
        sub = lambda text: _PLACEHOLDER.sub(lambda m: values.get(m.group(1), ""), text)
        # A line with placeholders renders the same until the channel's ids change (a bridge).
        key = tuple(values.values())
        if self._line_cache_key != key:
            self._line_cache_key, self._line_cache = key, {}
        cache = self._line_cache.get(fmt)
        if cache is None:
            cache = self._line_cache[fmt] = {}
        dynamic = self.dynamic
        out: list[str] = []
        seen_dynamic = set()
        last_var_at = None
        no_other = self.other is None
        rewritten = self.headers
        for name, kind, payload, var, other in compiled(shape, fmt):
            if other and no_other:
                continue
            if rewritten and name in rewritten:
                out.append(write(name, rewritten[name]))
                continue
            if var is not None and var in dynamic:
                seen_dynamic.add(var)
                value = dynamic[var]
                if value is not None:
                    out.append(write(name, value))
                    last_var_at = len(out)
                continue
            if kind == "s":
                out.append(payload)
            elif kind == "p":
                line = cache.get((name, payload))
                if line is None:
                    line = cache[(name, payload)] = write(name, sub(payload))
                out.append(line)
            elif kind == "r":
                for var, value in self.router_vars.items():
                    out.append(write(f"variable_{var}", value))
            else:
                value = self._computed(name, payload, event_name, seq, now_us, core_uuid, app, response, sub)
                if value is not None:
                    out.append(write(name, value))
            if var is not None:
                last_var_at = len(out)
        missing = [(k, v) for k, v in dynamic.items() if k not in seen_dynamic and v is not None]
        if missing and last_var_at is not None:
            extra = [write(f"variable_{k}", v) for k, v in missing]
            out[last_var_at:last_var_at] = extra
        if fmt == "json":
            return ("{" + ",".join(out) + "}").encode("utf-8")
        return "".join(out).encode("utf-8")

    def _computed(self, name, template, event_name, seq, now_us, core_uuid, app, response, sub):
        if name == "Event-Name":
            return event_name
        if name == "Core-UUID":
            return core_uuid
        if name == "Event-Date-Local":
            return date_local(now_us)
        if name == "Event-Date-GMT":
            return date_gmt(now_us)
        if name == "Event-Date-Timestamp":
            return str(now_us)
        if name == "Event-Sequence":
            return str(seq)
        if name == "Answer-State":
            return self.answer_state
        if name == "Channel-Call-State":
            return self.call_state
        if name == "Hangup-Cause":
            # Only a channel that has hung up carries it (the recorded shape may be a later moment).
            return self.hangup_cause
        if name in ("Application", "Application-Data", "Application-Response", "Application-UUID"):
            if app is None:
                return None
            app_name, data, app_uuid = app
            return {"Application": app_name, "Application-Data": data or None,
                    "Application-Response": response, "Application-UUID": app_uuid}[name]
        if name == "Other-Leg-Channel-Name" and self.other_name:
            return self.other_name
        if name == "Other-Leg-Destination-Number" and self.other_name:
            return self.dest
        if name.startswith(("Other-Leg-Channel-Name", "Other-Leg-Destination-Number")):
            return sub(template)
        match = _TIME_HEADER.match(name)
        if match:
            owner = self.other if match.group(1) == "Other-Leg" else self
            key = _TIME_KEY.get(match.group(2))
            return str(owner.times.get(key, 0) if (owner and key) else 0)
        return self._variable(name[9:], now_us)

    def _variable(self, var: str, now_us: int) -> str | None:
        t = self.times
        if var == "session_id":
            return self.session_id
        if var == "sip_call_id":
            return self.sip_call_id
        if var == "sip_invite_stamp":
            return str(t["created"])
        if var == "RFC2822_DATE":
            return date_rfc2822(t["created"])
        if var == "export_vars":
            return ",".join(["RFC2822_DATE"] + self.exported)
        if var in ("current_application", "current_application_data"):
            current = self.app or self.last_app
            if current is None:
                return None
            return current[0] if var == "current_application" else (current[1] or None)
        if var in ("last_app", "last_arg"):
            if self.last_app is None:
                return None
            return self.last_app[0] if var == "last_app" else (self.last_app[1] or None)
        stamp = _STAMP_VARS.get(var)
        if stamp is not None:
            key, unit = stamp
            us = t.get(key, 0) if key else 0
            if unit == "stamp":
                return date_local(us) if us else None
            return str(_sec(us) if unit == "s" else us)
        span = _SPAN_VARS.get(var)
        if span is not None:
            start, end, unit = span
            a, b = t.get(start, 0), t.get(end, 0)
            if not (a and b):
                return "0"
            if unit == "s":
                return str(_sec(b) - _sec(a))
            return str(b // 1000 - a // 1000 if unit == "ms" else b - a)
        return None
