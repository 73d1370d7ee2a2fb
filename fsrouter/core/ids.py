"""Ids derived from what they name (RFC 4122 version 5), so the same thing gets the same id."""
from __future__ import annotations

import hashlib
import uuid


def uuid5(namespace: uuid.UUID, name: str) -> str:
    """str(uuid.uuid5(namespace, name)), without making a UUID object: 3 µs instead of 9 (timeit on
    the 2-core machine). An import of call history takes one per call without a uuid, the live
    stream one per webhook event."""
    digest = bytearray(hashlib.sha1(namespace.bytes + name.encode("utf-8")).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # the RFC 4122 variant
    x = digest.hex()
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"
