"""The CHANNEL events every bench listener subscribes to: fsrouter's own list (fsrouter.esl.inbound.
CHANNEL_KINDS: its subscription without mod_sofia's registration events), written out here so that the bare
greenswitch baselines need not import fsrouter (which patches greenswitch's parsing on import).
tests/test_bench_subscription.py checks that the two lists agree."""
EVENTS = "CHANNEL_CREATE CHANNEL_ANSWER CHANNEL_BRIDGE CHANNEL_UNBRIDGE CHANNEL_HANGUP_COMPLETE HEARTBEAT"
