"""Corpus mutations for the hypothesis side of the fuzz targets: what atheris does, in CI."""
from __future__ import annotations

from hypothesis import strategies as st


@st.composite
def mutated(draw, files, tokens):
    """A corpus file (of `files`) with 1-4 bits flipped, tokens or bytes inserted, runs cut, or a
    slice of another corpus file spliced in."""
    data = bytearray(draw(st.sampled_from(files)).read_bytes())
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        how = draw(st.sampled_from(["flip", "insert", "cut", "splice"]))
        if how == "flip" and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif how == "insert":
            data[at:at] = draw(st.one_of(st.binary(min_size=1, max_size=8), st.sampled_from(tokens)))
        elif how == "cut":
            del data[at:at + draw(st.integers(1, 64))]
        else:
            other = draw(st.sampled_from(files)).read_bytes()
            start = draw(st.integers(0, len(other)))
            data[at:at] = other[start:start + draw(st.integers(1, 200))]
    return bytes(data)
