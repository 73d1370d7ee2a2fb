"""The bench's listeners (fsrouter's and the bare greenswitch baselines) subscribe to the events the
daemon subscribes to: a baseline that reads more, or fewer, events than fsrouter would skew every
ratio of the CPU and ingestion figures."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from fsrouter.esl.inbound import CHANNEL_KINDS


def test_the_bench_subscribes_to_the_daemons_channel_events():
    path = Path(__file__).resolve().parent.parent / "bench" / "subscription.py"
    spec = importlib.util.spec_from_file_location("bench_subscription", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.EVENTS.split() == CHANNEL_KINDS.split()
