"""Write the seed corpus under fuzz/corpus/ (it is checked in; rerun only to reseed).

    .venv/bin/python fuzz/seed_corpus.py [../shared/esl-captures]

frames: single frames and short runs cut from the real FreeSWITCH captures (each file starts
with the byte that picks the chunk size, see targets.check_frames), plus the fake's malformed
frames. numbers: every caller and destination number in the captures, and hostile caller IDs.
csv and config: small valid files and near misses.
"""
from __future__ import annotations

import hashlib
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from fsrouter.esl.frames import FrameError, event_headers
from fsrouter.fakefs.inbound import MALFORMED
from fsrouter.fakefs.wire import split_raw_frames

MAX_SEED = 6000  # bytes: small seeds mutate faster

HOSTILE_CALLERS = [
    "1001,user/6666@evil", "0501234567|sofia/gateway/x/900", "[origination_caller_id_number=1]user/1",
    "{absolute_codec_string=PCMU}x", "^^:a=b:c=d", "&bridge(user/6666)", "\"'; api system rm",
    "0501234567\nexecute-app-name: hangup", "${system(id)}", "9" * 400, "+380 50 123-45-67",
    "(050) 123 45 67", "00380501234567", "380501234567", "+49 170 1234567", "0501234567%0A",
    "\uff10\uff15\uff10\uff11\uff12\uff13\uff14\uff15\uff16\uff17", "\u0660\u0665\u0660\u0661\u0662\u0663",
    "+1 (202) 555-0143", "1001", "anonymous", "", " ", "+", "0" * 41,
]

CSV_SEEDS = {
    "calls_ok": "c" + "started_at,direction,client,agent,talk_seconds\n"
                "2024-05-01T09:30:00Z,inbound,0501234567,1001,95\n"
                "2024-05-01T10:00:00Z,outbound,0671112233,1002,0\n",
    "calls_escaped": "c" + "started_at,direction,client,agent,talk_seconds\n"
                     "2024-05-01T09:30:00+03:00,INBOUND,'+380501234567,1001,12.5\n",
    "calls_bad_time": "c" + "started_at,direction,client,agent,talk_seconds\n"
                      "9999-12-31T23:59:59-01:00,inbound,0501234567,1001,95\n",
    "calls_huge_talk": "c" + "started_at,direction,client,agent,talk_seconds\n"
                       "2024-05-01T09:30:00Z,inbound,0501234567,1001,1e300\n",
    "calls_extra_cell": "c" + "started_at,direction,client,agent,talk_seconds\n"
                        "2024-05-01T09:30:00Z,inbound,0501234567,1001,9,x\n",
    "calls_hostile": "c" + "started_at,direction,client,agent,talk_seconds\n"
                     "2024-05-01T09:30:00Z,inbound,\"0501234567,user/6666@evil\",1001,95\n",
    "bindings_ok": "b" + "client,agent\n0501234567,1001\n'+380671112233,1002\n",
    "bindings_dup": "b" + "0501234567,1001\n+380501234567,1002\n",
    "bindings_unknown_agent": "b" + "0501234567,9999\n",
    "bindings_quote": "b" + "\"0501234567\n\",1001\n",
}

CONFIG_SEEDS = {
    "minimal": 'esl_password = "s3cret"\n',
    "full": ('database = "sqlite:////var/lib/fsrouter/fsrouter.db"\nesl_host = "127.0.0.1"\nesl_port = 8021\n'
             'esl_password = "ClueCon"\nlisten_host = "127.0.0.1"\nlisten_port = 8084\n'
             'allowed_peers = ["127.0.0.1", "::1", "10.0.0.0/8"]\nignore_channels = ["loopback/"]\n'
             'decision_budget = 0.25\ndrain_timeout = 30.0\nlog_format = "json"\nlog_level = "info"\n'),
    "typo": "esl_prot = 8021\n",
    "big_int": "drain_timeout = 1" + "0" * 400 + "\n",
    "bad_peer": 'allowed_peers = ["not-an-address"]\n',
    "bad_type": 'esl_port = "many"\n',
    "nan": "decision_budget = nan\n",
    "table": "[esl]\nport = 1\n",
    "latin1": b'esl_password = "caf\xe9"\n',
}


def _write(directory: Path, data: bytes) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / hashlib.sha1(data).hexdigest()[:16]).write_bytes(data)


def seed_frames(captures: Path, out: Path) -> None:
    for raw in sorted(captures.glob("*.fs-to-client.raw")):
        frames = split_raw_frames(raw.read_bytes())
        kinds_seen = set()
        for i, (frame, data) in enumerate(frames):
            try:
                name = event_headers(frame).get("Event-Name") if frame.body else None
            except FrameError:
                name = None
            kind = (frame.headers.get("Content-Type"), name)
            if kind in kinds_seen or len(data) > MAX_SEED:
                continue
            kinds_seen.add(kind)
            _write(out, bytes([i % 251]) + data)
        # One short run of consecutive frames per capture, read in 7-byte chunks.
        run = b"".join(data for _, data in frames[:4])
        if len(run) <= MAX_SEED * 2:
            _write(out, b"\x06" + run)
    for data in MALFORMED.values():
        _write(out, b"\x00" + data)


def main(argv: list[str]) -> int:
    captures = Path(argv[1] if len(argv) > 1 else HERE.parent.parent / "shared" / "esl-captures")
    corpus = HERE / "corpus"
    seed_frames(captures, corpus / "frames")
    callers = set(HOSTILE_CALLERS)
    for raw in sorted(captures.glob("*.fs-to-client.raw")):
        for frame, _ in split_raw_frames(raw.read_bytes()):
            if not frame.body:
                continue
            try:
                headers = event_headers(frame)
            except FrameError:
                continue
            for name in ("Caller-Caller-ID-Number", "Caller-Destination-Number", "variable_dialed_user"):
                if headers.get(name):
                    callers.add(headers[name])
    for i, caller in enumerate(sorted(callers)):
        _write(corpus / "numbers", bytes([i % 8]) + caller.encode("utf-8"))
    for text in CSV_SEEDS.values():
        _write(corpus / "csv", text.encode("utf-8"))
    for text in CONFIG_SEEDS.values():
        _write(corpus / "config", text if isinstance(text, bytes) else text.encode("utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
