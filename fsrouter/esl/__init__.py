"""The FreeSWITCH Event Socket side: wire frames, the outbound-socket router, the event listener."""
from . import headers as _headers  # noqa: F401  (fixes greenswitch's header decoding before any use)
from . import reader as _reader  # noqa: F401  (a frame greenswitch cannot read ends the stream cleanly)
