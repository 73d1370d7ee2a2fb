"""atheris entry point: fuzz the push API with whole requests (see api_target.check_api and README.md).

    .venv/bin/python fuzz/fuzz_api.py /tmp/fz/api fuzz/corpus/api -max_total_time=60 -max_len=20000
"""
import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent))
with atheris.instrument_imports(include=["fsrouter", "api_target"]):
    import api_target


def main() -> None:
    atheris.Setup(sys.argv, api_target.check_api)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
