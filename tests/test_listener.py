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


def test_events_reach_their_handlers_from_the_reader_itself_in_order_the_disconnect_notice_after_them():
    """The listener's connection hands each event on as it reads it (no queue, no greenlet of
    their own: behind the sender's and the calls' greenlets each event waited its turn); only the
    disconnect notice goes through greenswitch's queue, after every event before it."""
    import gevent
    import gevent.socket

    from fsrouter.esl.inbound import _EventConnection
    from fsrouter.fakefs.wire import event_json

    ours, theirs = gevent.socket.socketpair()
    conn = _EventConnection("127.0.0.1", 0, "ClueCon")
    conn.sock, conn.sock_file, conn.connected, conn._run = ours, ours.makefile("rb"), True, True
    seen = []
    conn.register_handle("*", lambda event: seen.append(event.headers["Event-Sequence"]))
    conn.register_handle("DISCONNECT", lambda event: seen.append("disconnect"))
    reader = gevent.spawn(conn.receive_events)  # the reader alone: process_events is not running
    try:
        theirs.sendall(b"".join(event_json([("Event-Name", "CHANNEL_CREATE"), ("Event-Sequence", str(n))])
                                for n in range(1, 4)))
        gevent.sleep(0.2)
        assert seen == ["1", "2", "3"] and conn._esl_event_queue.qsize() == 0
        theirs.sendall(b"Content-Type: text/disconnect-notice\nContent-Length: 0\n\n")
        gevent.sleep(0.1)
        assert conn._esl_event_queue.qsize() == 1  # waits for process_events, behind the events
        conn._hand_on(conn._esl_event_queue.get())
        assert seen == ["1", "2", "3", "disconnect"]
    finally:
        reader.kill()
        ours.close()
        theirs.close()
