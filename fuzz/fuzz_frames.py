"""atheris entry point: fuzz the frames input (see targets.check_frames and README.md).

    .venv/bin/python fuzz/fuzz_frames.py fuzz/corpus/frames -max_total_time=60
"""
import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent))
with atheris.instrument_imports(include=["fsrouter", "greenswitch", "targets"]):
    import targets


def main() -> None:
    atheris.Setup(sys.argv, targets.check_frames)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
