"""atheris entry point: fuzz the numbers input (see targets.check_numbers and README.md).

    .venv/bin/python fuzz/fuzz_numbers.py fuzz/corpus/numbers -max_total_time=60
"""
import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent))
with atheris.instrument_imports(include=["fsrouter", "greenswitch", "targets"]):
    import targets


def main() -> None:
    atheris.Setup(sys.argv, targets.check_numbers)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
