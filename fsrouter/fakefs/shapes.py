"""The shapes of real FreeSWITCH events (shapes.json beside this file, made by shapes_build from
the recorded captures): LINES are (header, decoded value) pairs with ⟨placeholders⟩; SHAPES
list, per event kind and moment, the LINES of one real event in their real order."""
from __future__ import annotations

import json
from importlib import resources

_DATA = json.loads(resources.files(__package__).joinpath("shapes.json").read_text(encoding="utf-8"))
LINES: tuple[tuple[str, str], ...] = tuple(tuple(pair) for pair in _DATA["lines"])
SHAPES: dict[str, tuple[int, ...]] = {shape: tuple(ids) for shape, ids in _DATA["shapes"].items()}
