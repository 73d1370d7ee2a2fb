"""The outbound session reads its socket in the call's own greenlet, whenever the call waits."""
from __future__ import annotations

import gevent
import pytest
from gevent import socket

from fsrouter.esl.session import CONNECT_HEADERS, RouterSession, SessionGone

CONNECT_REPLY = (b"Content-Type: command/reply\nReply-Text: +OK\nUnique-ID: 11111111-2222\n"
                 b"Caller-Caller-ID-Number: 0501234567\nvariable_fsrouter_group: sales\n"
                 b"variable_sip_user_agent: Yealink%20T46S\nChannel-Name: sofia/external/x\n\n")


@pytest.fixture
def pair():
    ours, theirs = socket.socketpair()
    yield ours, theirs
    for sock in (ours, theirs):
        sock.close()


def test_a_session_spawns_no_greenlet_and_reads_while_it_waits(pair, monkeypatch):
    spawned = []
    monkeypatch.setattr(gevent, "spawn", lambda *a, **k: spawned.append(a) or gevent.Greenlet(*a, **k))
    ours, theirs = pair
    session = RouterSession(("127.0.0.1", 1), ours)
    theirs.sendall(CONNECT_REPLY)
    data = session.connect()
    assert spawned == [] and session._receive_events_greenlet is None
    assert theirs.recv(100) == b"connect\n\n"
    # Only what the router reads of the connect reply is kept for the call's lifetime.
    assert data == {"Unique-ID": "11111111-2222", "Caller-Caller-ID-Number": "0501234567",
                    "variable_fsrouter_group": "sales"}
    assert set(data) <= set(CONNECT_HEADERS)


def test_a_wait_ends_with_session_gone_when_the_socket_closes(pair):
    ours, theirs = pair
    session = RouterSession(("127.0.0.1", 1), ours)
    theirs.sendall(CONNECT_REPLY)
    session.connect()
    done = session.execute_nowait("bridge", "user/1001@pbx")
    theirs.sendall(b"Content-Type: command/reply\nReply-Text: +OK\n\n")
    theirs.close()
    with pytest.raises(SessionGone):
        session.wait(done, 5)
    with pytest.raises(SessionGone):
        session.send_nowait("exit")


def test_a_wait_that_times_out_gives_the_stream_up(pair):
    ours, theirs = pair
    session = RouterSession(("127.0.0.1", 1), ours)
    theirs.sendall(b"Content-Type: command/reply\nReply-")  # half a frame, then nothing
    with pytest.raises(gevent.Timeout):
        session.wait(session.send_nowait("connect"), 0.1)
    assert not session.connected  # a half-read frame: nothing after it can be trusted



def test_blank_lines_between_frames_are_skipped(pair):
    ours, theirs = pair
    session = RouterSession(("127.0.0.1", 1), ours)
    theirs.sendall(b"\n\n" + CONNECT_REPLY)
    assert session.connect()["Unique-ID"] == "11111111-2222"
