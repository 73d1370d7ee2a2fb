"""A fix to greenswitch's header parsing, applied on import of fsrouter.esl.

greenswitch url-decodes a whole header block before splitting it into lines, so a caller ID of
"123%0AVariable-X: y" becomes a header of its own. FreeSWITCH encodes each value separately, so
the block must be split first and each value decoded after: then a hostile caller ID stays one
(odd) value that number normalisation refuses.
"""
from __future__ import annotations

from urllib.parse import unquote

from greenswitch import esl as _greenswitch


def _parse_data(self, data: str) -> None:
    last_key = None
    for line in data.strip().splitlines():
        name, sep, value = line.partition(": ")
        if sep:
            last_key = name.strip()
            self.headers[last_key] = unquote(value).strip()
        elif last_key is not None and line:
            self.headers[last_key] += "\n" + unquote(line)


_greenswitch.ESLEvent.parse_data = _parse_data
