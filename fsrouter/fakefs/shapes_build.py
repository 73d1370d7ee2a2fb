"""Regenerates shapes.json: the header names, order and static values of real FreeSWITCH events.

    python -m fsrouter.fakefs.shapes_build [CAPTURES_DIR]

The fake does not guess what FreeSWITCH sends: each event it emits starts from one recorded
event of the same kind and moment (the table below names them by capture and Event-Sequence),
with the values that identify a call (uuids, numbers, extension) turned into ⟨placeholders⟩.
Times, outcomes and the variables a router sets are filled in by the fake when it renders
(see channel.py). The captures stay outside the package; tests check shapes.json against them.
"""
from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from urllib.parse import unquote

from .wire import split_raw_frames

C11_IN = "11-sip-call-answered-12s-inbound-view.fs-to-client.raw"
C11_OUT = "11-sip-call-answered-12s.fs-to-client.raw"
C08_IN = "08-sip-call-sticky-timeout-then-group-inbound-view.fs-to-client.raw"
C09 = "09-sip-agent-outbound-calls.fs-to-client.raw"
C13B = "13b-sip-attended-transfer-att-xfer-inbound-view.fs-to-client.raw"

# The values that name the call in each recording, and the placeholder each becomes.
_CALL11 = {
    "ed8678a3-4649-494e-bb7e-ca0c4820f054": "client",
    "839adff9-b952-4eeb-9341-0dcd0d245863": "leg",   # 1001, rang and not answered
    "7c70fced-a367-425b-bd14-cc497ac29f4f": "leg",   # 1003, answered
    "numbers": {"0501234567": "caller", "5100": "dest", "1001": "ext", "1003": "ext"},
}
_CALL08 = {
    "30ed2904-96ba-44f0-abf4-d77778e8eaac": "client",
    "f3468a4f-9f54-4455-99fa-66967aa02b4d": "leg",   # 1002, busy
    "numbers": {"+380671112233": "caller", "5100": "dest", "1002": "ext"},
}
_CALL09 = {
    "c13cbbe4-882a-4b07-9177-bb36e3f329ac": "client",  # 1004 calls out, not answered
    "c8f4423e-b530-4f7c-9196-314c6ee254af": "client",  # 1004 calls out, answered
    "26f08f22-fc03-4dd2-9cc4-24b0566ded5d": "leg",     # the outside party (a stand-in PSTN leg)
    "d8c059fe-2e36-478e-bde8-46e1f54ddf98": "leg",     # the outside party that never answered
    "numbers": {"+380671112233": "dest", "+380672223344": "dest", "1004": "ext"},
}
_CALL13B = {  # att_xfer: the operator's (1003's) leg bridges to the 1001 leg it originated
    "1cff3aa8-9243-44d5-ac1c-8e9e297ce3e4": "leg",       # 1001's leg
    "70a40f64-626b-4bda-a448-e3f2005624b0": "client",
    "7cc75cd4-8642-43dc-84da-c7bb7fe4dcba": "operator",  # 1003's leg, which originated 1001's
    "numbers": {"+380671112233": "other_caller", "5100": "dest", "1001": "ext", "1003": "operator"},
}

# shape name -> (capture, Event-Sequence, call). Roles: client = the caller's channel on the
# carrier profile; agent_* = an agent leg the bridge originates; out_* = an agent's own phone
# calling a client. Phases of the client channel: dialplan (before the socket app), socket
# (before any bridge), failed (after a failed bridge), hungup.
TABLE = {
    "connect": (C11_OUT, None, _CALL11),
    "client/CHANNEL_CREATE": (C11_IN, 193685, _CALL11),
    "client/CHANNEL_EXECUTE_COMPLETE/dialplan": (C11_IN, 193696, _CALL11),
    "client/CHANNEL_PARK": (C11_OUT, 193699, _CALL11),
    "client/CHANNEL_EXECUTE/socket": (C11_OUT, 193702, _CALL11),
    "client/CHANNEL_EXECUTE_COMPLETE/socket": (C11_OUT, 193703, _CALL11),
    "client/CHANNEL_PROGRESS": (C11_OUT, 193705, _CALL11),
    "client/CHANNEL_EXECUTE/failed": (C11_OUT, 193752, _CALL11),
    "client/CHANNEL_EXECUTE_COMPLETE/failed": (C11_OUT, 193746, _CALL11),
    "client/CHANNEL_ANSWER": (C11_OUT, 193799, _CALL11),
    "client/CHANNEL_BRIDGE": (C11_OUT, 193804, _CALL11),
    "client/CHANNEL_HANGUP": (C11_OUT, 193829, _CALL11),
    "client/CHANNEL_UNBRIDGE": (C11_OUT, 193833, _CALL11),
    "client/CHANNEL_EXECUTE_COMPLETE/hungup": (C11_OUT, 193834, _CALL11),
    "client/CHANNEL_UNPARK": (C11_OUT, 193835, _CALL11),
    "client/CHANNEL_EXECUTE_COMPLETE/socket_end": (C11_OUT, 193836, _CALL11),
    "client/CHANNEL_STATE/hangup": (C11_OUT, 193837, _CALL11),
    "client/CHANNEL_STATE/reporting": (C11_OUT, 193839, _CALL11),
    "client/CHANNEL_HANGUP_COMPLETE": (C11_OUT, 193840, _CALL11),
    "agent_ring/CHANNEL_CREATE": (C11_IN, 193715, _CALL11),
    "agent_ring/CHANNEL_ORIGINATE": (C11_IN, 193716, _CALL11),
    "agent_ring/CHANNEL_PROGRESS": (C11_IN, 193741, _CALL11),
    "agent_ring/CHANNEL_HANGUP": (C11_IN, 193743, _CALL11),
    "agent_ring/CHANNEL_HANGUP_COMPLETE": (C11_IN, 193749, _CALL11),
    "agent_answer/CHANNEL_CREATE": (C11_IN, 193758, _CALL11),
    "agent_answer/CHANNEL_ORIGINATE": (C11_IN, 193759, _CALL11),
    "agent_answer/CHANNEL_ANSWER": (C11_IN, 193796, _CALL11),
    "agent_answer/CHANNEL_HANGUP": (C11_IN, 193830, _CALL11),
    "agent_answer/CHANNEL_HANGUP_COMPLETE": (C11_IN, 193843, _CALL11),
    "agent_busy/CHANNEL_CREATE": (C08_IN, 193306, _CALL08),
    "agent_busy/CHANNEL_ORIGINATE": (C08_IN, 193307, _CALL08),
    "agent_busy/CHANNEL_HANGUP": (C08_IN, 193362, _CALL08),
    "agent_busy/CHANNEL_HANGUP_COMPLETE": (C08_IN, 193367, _CALL08),
    "out_answer/CHANNEL_CREATE": (C09, 193493, _CALL09),
    "out_answer/CHANNEL_ANSWER": (C09, 193576, _CALL09),
    "out_answer/CHANNEL_BRIDGE": (C09, 193581, _CALL09),
    "out_answer/CHANNEL_HANGUP": (C09, 193599, _CALL09),
    "out_answer/CHANNEL_UNBRIDGE": (C09, 193611, _CALL09),
    "out_answer/CHANNEL_HANGUP_COMPLETE": (C09, 193622, _CALL09),
    "out_cancel/CHANNEL_CREATE": (C09, 193468, _CALL09),
    "out_cancel/CHANNEL_HANGUP": (C09, 193633, _CALL09),
    "out_cancel/CHANNEL_HANGUP_COMPLETE": (C09, 193645, _CALL09),
    # An agent leg as a bridge's originator (a transfer: the fake's fakefs/transfers.py).
    "agent_answer/CHANNEL_BRIDGE": (C13B, 647029, _CALL13B),
    "agent_answer/CHANNEL_UNBRIDGE": (C13B, 647069, _CALL13B),
}

CORE_UUID = "d6e5c7e7-2cbd-4c0b-9e62-1fac66fc330d"  # the recording FreeSWITCH's own id

# Variables the recording's router set (set/export over the socket): the fake puts the variables
# its own router set in their place, marked by ROUTER_MARK. The rig's test-phone switches are
# dropped: an office's FreeSWITCH has no such thing.
ROUTER_VARIABLES = {"variable_continue_on_fail", "variable_hangup_after_bridge", "variable_fsrouter_client"}
RIG_VARIABLES = {"variable_client_mode", "variable_agent_mode"}
ROUTER_MARK = ("⟨router_variables⟩", "")

# Numbers in these headers are counters, times, ports or codec figures, never a phone number,
# even when their digits happen to equal one.
_NO_NUMBER_SUBST = re.compile(
    r"^(Event-Sequence|Event-Calling-Line-Number|Event-Date-.*|.*-Time|Channel-State-Number|.*Codec.*"
    r"|variable_.*(sdp|_str|stamp|epoch|sec|usec|msec|duration|_port|_ssrc|_pt|_bytes|_count|_rate"
    r"|_payload|session_id|cseq))$")


def _substitute(name: str, value: str, own_uuid: str, call: dict) -> str:
    value = value.replace(CORE_UUID, "⟨core_uuid⟩")
    if name == "variable_fsrouter_group":
        return "⟨group⟩"
    for uuid, role in call.items():
        if uuid == "numbers":
            continue
        if uuid in value:
            token = ("⟨uuid⟩" if uuid == own_uuid else
                     "⟨operator_uuid⟩" if role == "operator" else "⟨other_uuid⟩")
            value = value.replace(uuid, token)
    if not _NO_NUMBER_SUBST.match(name):
        for number, token in sorted(call["numbers"].items(), key=lambda kv: -len(kv[0])):
            value = re.sub(r"(?<![0-9+])" + re.escape(number) + r"(?![0-9])", f"⟨{token}⟩", value)
    return value


def _event_pairs(frame) -> tuple[list[tuple[str, str]], bytes]:
    block, _, body = frame.body.partition(b"\n\n")
    pairs = []
    for line in block.decode("utf-8").split("\n"):
        name, _, value = line.partition(": ")
        if name != "Content-Length":
            pairs.append((name, unquote(value)))
    return pairs, body


def extract(captures: Path) -> dict[str, list[tuple[str, str]]]:
    frames_by_file: dict[str, list] = {}
    shapes: dict[str, list[tuple[str, str]]] = {}
    for shape, (capture, sequence, call) in TABLE.items():
        if capture not in frames_by_file:
            frames_by_file[capture] = [f for f, _ in split_raw_frames((captures / capture).read_bytes())]
        frames = frames_by_file[capture]
        if sequence is None:
            # The reply to `connect`: the first frame of an outbound-socket recording.
            frame = frames[0]
            pairs = [(k, unquote(v)) for k, v in frame.headers.items()]
        else:
            frame = next(f for f in frames if f.headers.get("Content-Type") == "text/event-plain"
                         and f"\nEvent-Sequence: {sequence}\n".encode() in f.body)
            pairs, _ = _event_pairs(frame)
        own = dict(pairs).get("Unique-ID", "")
        out = []
        for name, value in pairs:
            if name in RIG_VARIABLES:
                continue
            if name in ROUTER_VARIABLES:
                if ROUTER_MARK not in out:
                    out.append(ROUTER_MARK)
                continue
            out.append((name, _substitute(name, value, own, call)))
        shapes[shape] = out
    return shapes


def render_json(shapes: dict[str, list[tuple[str, str]]]) -> str:
    """shapes.json: `lines`, the (header, decoded value) pairs with ⟨placeholders⟩, each once;
    `shapes`, per event kind and moment, the lines of one real event in their real order."""
    lines: list[tuple[str, str]] = []
    index: dict[tuple[str, str], int] = {}
    table = {}
    for shape, pairs in shapes.items():
        ids = []
        for pair in pairs:
            if pair not in index:
                index[pair] = len(lines)
                lines.append(pair)
            ids.append(index[pair])
        table[shape] = ids
    dump = lambda value: json.dumps(value, ensure_ascii=False)
    out = ["{", f' "about": {dump(ABOUT)},', ' "lines": [']
    out += [f"  {dump(list(pair))}," for pair in lines]
    out[-1] = out[-1].rstrip(",")
    out += [" ],", ' "shapes": {']
    out += [f"  {dump(shape)}: {dump(ids)}," for shape, ids in table.items()]
    out[-1] = out[-1].rstrip(",")
    out += [" }", "}", ""]
    return "\n".join(out)


ABOUT = ("GENERATED by `python -m fsrouter.fakefs.shapes_build` from the recorded FreeSWITCH 1.10.12 "
         "captures: do not edit. Read by fakefs/shapes.py.")


def default_captures() -> Path:
    env = os.environ.get("FSROUTER_CAPTURES")
    return Path(env) if env else Path(__file__).resolve().parents[2].parent / "shared" / "esl-captures"


def main(argv: list[str]) -> int:
    captures = Path(argv[0]) if argv else default_captures()
    target = Path(__file__).with_name("shapes.json")
    target.write_text(render_json(extract(captures)), encoding="utf-8")
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
