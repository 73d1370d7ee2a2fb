"""Where the FreeSWITCH 1.10.12 recordings are: $FSROUTER_CAPTURES, else ../shared/esl-captures
beside this checkout, else beside the checkout it was cloned from (a fresh `git clone` of a local
repository into /tmp still finds them). Missing captures fail the test that needs them: the fake
FreeSWITCH and the listener are held to those bytes, so a run without them proves nothing."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path("shared") / "esl-captures"
SHARED_CDR = Path("shared") / "cdr-captures"  # mod_cdr_csv / mod_json_cdr bytes ($FSROUTER_CDR_CAPTURES)


def _candidates(variable: str = "FSROUTER_CAPTURES", shared: Path = SHARED) -> list[Path]:
    if os.environ.get(variable):
        return [Path(os.environ[variable])]
    found = [ROOT.parent / shared]
    try:
        origin = subprocess.run(["git", "-C", str(ROOT), "config", "--get", "remote.origin.url"],
                                check=False, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        origin = ""
    if origin and "://" not in origin and ":" not in origin.split("/")[0]:  # a local path, not a URL
        found.append((ROOT / origin).resolve().parent / shared)
    return found


def captures_dir() -> Path:
    tried = _candidates()
    for path in tried:
        if (path / "expected.json").is_file():
            return path
    pytest.fail(f"FreeSWITCH captures not found (tried {', '.join(map(str, tried))}): check out ../shared "
                "beside the clone or set FSROUTER_CAPTURES to the esl-captures directory", pytrace=False)


def cdr_captures_dir() -> Path:
    """The CDR bytes of ../shared/cdr-captures (its README maps every line to its call)."""
    tried = _candidates("FSROUTER_CDR_CAPTURES", SHARED_CDR)
    for path in tried:
        if (path / "pass2-proposed-templates-legs-ab" / "fsrouter_in.csv").is_file():
            return path
    pytest.fail(f"FreeSWITCH CDR captures not found (tried {', '.join(map(str, tried))}): check out ../shared "
                "beside the clone or set FSROUTER_CDR_CAPTURES to the cdr-captures directory", pytrace=False)
