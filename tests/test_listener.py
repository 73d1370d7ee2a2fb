"""The event listener's own guards (its reconnection is tested end to end in test_daemon_e2e)."""
from __future__ import annotations


def test_a_listener_handler_that_raises_is_counted_and_logged_not_raised():
    from types import SimpleNamespace

    from fsrouter.esl.inbound import EventListener

    def boom(headers):
        raise RuntimeError("a bug in a handler")

    listener = EventListener("127.0.0.1", 1, "secret", on_event=boom)
    listener._dispatch(SimpleNamespace(headers={"Event-Name": "CHANNEL_CREATE"}))
    assert listener.stats.handler_errors == 1
