"""The checked-in fuzz corpus, replayed through the atheris targets' checks on every test run.

Every file under fuzz/corpus/<target>/ (seeds from the real FreeSWITCH captures, and whatever
atheris found worth keeping) must pass targets.check_<target>; then hypothesis mutates corpus
entries (bytes flipped, inserted, cut, spliced) for a few hundred more inputs, so the targets
are exercised in CI even where atheris does not run.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings

FUZZ = Path(__file__).resolve().parents[1] / "fuzz"
sys.path.insert(0, str(FUZZ))
import targets
from mutations import mutated

CORPUS = {name: sorted((FUZZ / "corpus" / name).iterdir()) for name in targets.TARGETS}


def test_every_target_has_a_corpus():
    for name, files in CORPUS.items():
        assert len(files) >= 5, name


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_the_corpus_passes_its_target(name):
    check = targets.TARGETS[name]
    for path in CORPUS[name]:
        try:
            check(path.read_bytes())
        except Exception as exc:
            raise AssertionError(f"fuzz/corpus/{name}/{path.name}: {type(exc).__name__}: {exc}") from exc


# What atheris would insert into these targets' inputs besides random bytes.
TOKENS = [b"\n", b"\n\n", b":", b"%0A", b"\x00", b"\xff", b'"', b",", b"Content-Length: 9\n", b"=", b"9" * 30]


MUTATIONS = hsettings(max_examples=150, deadline=None, database=None,
                      suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_mutations_of_the_corpus_pass_their_target(name):
    @MUTATIONS
    @given(mutated(CORPUS[name], TOKENS))
    def run(data):
        targets.TARGETS[name](data)

    run()
