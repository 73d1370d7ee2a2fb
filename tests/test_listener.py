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


def test_unread_bytes_tells_how_much_of_freeswitchs_stream_waits_in_the_socket():
    import socket
    from types import SimpleNamespace

    from fsrouter.esl.inbound import LiveConnection

    ours, theirs = socket.socketpair()
    try:
        connection = LiveConnection()
        assert connection.unread_bytes() == 0  # not connected
        connection.attach(SimpleNamespace(sock=ours, connected=True))
        assert connection.unread_bytes() == 0
        theirs.sendall(b"x" * 70_000)
        import time
        time.sleep(0.05)
        assert connection.unread_bytes() >= 64 * 1024
        ours.recv(70_000)
        ours.close()
        assert connection.unread_bytes() == 0  # closed meanwhile: no error
    finally:
        theirs.close()
