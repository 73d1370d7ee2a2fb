"""A fake FreeSWITCH that speaks the Event Socket byte for byte as FreeSWITCH 1.10.12 does.

Used by the tests, the benchmarks and `fsrouter demo`. It stands apart from the product: it
imports nothing of fsrouter but fsrouter.esl.frames. See server.FakeFreeSWITCH.
"""
from .agents import Agent
from .calls import BridgeRecord, CallHandle, LegRecord
from .outcalls import OutCallHandle
from .server import FakeFreeSWITCH
from .transfers import ATT_XFER, ATTENDED, BLIND, Transfer

__all__ = ["ATTENDED", "ATT_XFER", "BLIND", "Agent", "BridgeRecord", "CallHandle", "FakeFreeSWITCH", "LegRecord",
           "OutCallHandle", "Transfer"]
