"""client.KeepAlive: the webhook sender's connections, kept open per origin between requests;
one the server closed while it sat idle is replaced without the request failing."""
from __future__ import annotations

import gevent
import pytest
from gevent.server import StreamServer
from http_fakes import Receiver

from fsrouter.http.client import HttpError, KeepAlive


class OneRequestServer:
    """Answers each connection's first request 200 (keep-alive, as HTTP/1.1 implies), then closes
    it: the next request on that connection meets a closed socket."""

    def __init__(self, close_header: bool = False):
        self.connections = 0
        self.requests = 0
        self.close_header = close_header
        self.server = StreamServer(("127.0.0.1", 0), self._serve)
        self.server.start()
        self.url = f"http://127.0.0.1:{self.server.address[1]}/hook"

    def _serve(self, sock, _peer):
        self.connections += 1
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                return
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length")))
        while len(body) < length:
            body += sock.recv(65536)
        self.requests += 1
        extra = b"Connection: close\r\n" if self.close_header else b""
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n" + extra + b"\r\nok")
        if not self.close_header:
            gevent.sleep(0.05)  # the client has read the answer and kept the connection
        sock.close()

    def stop(self):
        self.server.stop()


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.stop()


def test_requests_to_one_origin_share_one_kept_connection(receiver):
    client = KeepAlive()
    for n in range(5):
        assert client.request("POST", receiver.url + "/hook", body=b'{"n": %d}' % n).ok
    assert client.opened == 1 and len(receiver.received) == 5
    client.close()


def test_a_kept_connection_the_server_closed_is_replaced_and_the_request_made_once():
    server = OneRequestServer()
    client = KeepAlive()
    try:
        assert client.request("POST", server.url, body=b"1").ok
        gevent.sleep(0.2)  # the server has closed it meanwhile
        assert client.request("POST", server.url, body=b"2").ok
        assert client.opened == 2 and server.requests == 2
    finally:
        client.close()
        server.stop()


def test_a_connection_the_answer_says_to_close_is_not_kept():
    server = OneRequestServer(close_header=True)
    client = KeepAlive()
    try:
        for n in range(3):
            assert client.request("POST", server.url, body=b"%d" % n).ok
        assert client.opened == 3 and server.requests == 3
    finally:
        client.close()
        server.stop()


def test_a_connection_idle_longer_than_idle_for_is_not_reused(receiver):
    now = [0.0]
    client = KeepAlive(idle_for=4.0, clock=lambda: now[0])
    assert client.request("POST", receiver.url + "/hook", body=b"1").ok
    now[0] = 3.0
    assert client.request("POST", receiver.url + "/hook", body=b"2").ok
    assert client.opened == 1
    now[0] = 10.0
    assert client.request("POST", receiver.url + "/hook", body=b"3").ok
    assert client.opened == 2
    client.close()


def test_a_refused_connection_is_one_line_error_not_a_retry_loop():
    server = StreamServer(("127.0.0.1", 0), lambda sock, peer: None)
    server.start()
    port = server.address[1]
    server.stop()
    client = KeepAlive()
    with pytest.raises(HttpError) as failure:
        client.request("POST", f"http://127.0.0.1:{port}/hook", body=b"1", timeout=1.0)
    assert "\n" not in str(failure.value) and client.opened == 1
