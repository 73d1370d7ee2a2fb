"""Fuzzing the daemon end to end, over real TCP, against the fake FreeSWITCH.

The headline invariant: a caller ID is written by whoever places the call, and nothing of a
hostile one (dial-string syntax, ${...} expansions, API separators, encoded newlines, over-long
values) ever appears in any byte fsrouter sends to FreeSWITCH, on the outbound socket or the
event socket. Beyond the caller ID not appearing, every command sent is checked against the
short grammar of what fsrouter ever says. Then: whatever bytes FreeSWITCH itself sends mid-call
or on the event socket, no call's greenlet is left waiting and nothing is printed as a traceback.
"""
from __future__ import annotations

import re
import time

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from office import AGENTS, Office, hears, wait_until, without_uuids

from fsrouter.binding_path import BindingPath

E2E = hsettings(max_examples=30, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# Pieces a hostile caller ID is made of. Every payload holds a word that nothing fsrouter says
# ever contains, so finding it in the bytes sent means the caller's text got through.
SYNTAX = [",", "|", "[", "]", "{", "}", "^", "&", "'", '"', "${", "^^:", ":", ";", "=", "@", "/", "\\",
          "\n", "\r", "\r\n", "%0A", "%0D", "%0a", "%25", "%00", "\x00", "\t", " ", "\u2028", "\x85"]
PAYLOADS = ["user/6666@evil", "sofia/gateway/evilgw/900", "${system(id)}", "api system rm -rf",
            "execute-app-name: hangup", "origination_caller_id_number=6666", "absolute_codec_string=PCMU",
            "bgapi originate evil", "fsrouter_route=sticky", "call-command: hangup", "Event-UUID: evil",
            "Content-Length: 99", "{ignore_early_media=true}evil", "&transfer(6666)"]
MARKERS = ("6666", "evil", "system", "hangup\n", "originate", "absolute_codec", "PCMU", "transfer",
           "ignore_early_media", "999999999", "Content-Length: 99")
NUMBERS = ["0501234567", "+380501234567", "380671112233", "1001", "00380931234567"]

piece = st.one_of(st.sampled_from(SYNTAX), st.sampled_from(PAYLOADS), st.sampled_from(NUMBERS),
                  st.text(st.characters(blacklist_categories=("Cs",)), max_size=6))
hostile_callers = st.one_of(
    st.lists(piece, min_size=1, max_size=6).map("".join).map(lambda text: text + "user/6666@evil"),
    st.tuples(st.sampled_from(NUMBERS), st.sampled_from(SYNTAX), st.sampled_from(PAYLOADS)).map("".join),
    st.integers(200, 3000).map(lambda n: "9" * n),  # over-long
    st.integers(100, 1000).map(lambda n: "+38050" + "${system(id)}" * (n // 13)),
)

_SAFE = r"[0-9A-Za-z_+.-]*"
_MULTISET = re.compile(rf"\^\^:[a-z_]+={_SAFE}(:[a-z_]+={_SAFE})*")
_LEG = rf"\[leg_timeout=[0-9]+,fsrouter_route=(?:sticky|fallback)\]user/({'|'.join(AGENTS)})@127\.0\.0\.1"
_BRIDGE = re.compile(rf"{_LEG}([,|]{_LEG})*")
_SET = {"fsrouter_route=fallback", "fsrouter_route=none"}
_APPS_WITHOUT_ARG = {"ring_ready"}


def check_grammar(command) -> None:
    """One command of the few fsrouter ever sends on an outbound socket, with safe arguments."""
    if command.name in ("connect", "myevents", "exit", "linger", "nolinger"):
        assert command.line == command.name and not command.headers and not command.body, command
        return
    if command.name == "nixevent":  # event kinds, nothing else
        assert re.fullmatch(r"nixevent( [A-Z_]+)+", command.line) and not command.headers, command
        return
    assert command.line == "sendmsg", command
    headers = dict(command.headers)
    assert not command.body, command
    assert headers.pop("call-command") == "execute", command
    assert re.fullmatch(r"[0-9a-f-]{36}", headers.pop("Event-UUID")), command
    app = headers.pop("execute-app-name")
    arg = headers.pop("execute-app-arg", None)
    assert not headers, command
    if app == "multiset":
        assert _MULTISET.fullmatch(arg), arg
    elif app == "bridge":
        assert _BRIDGE.fullmatch(arg), arg
    elif app == "set":
        assert arg in _SET, arg
    else:
        assert app in _APPS_WITHOUT_ARG and arg is None, command


@pytest.fixture
def office(tmp_path):
    office = Office(tmp_path)
    for ext in AGENTS:
        office.fake.agent(ext, answers_after=1, talk=2)
    yield office
    office.close()


def sent_to_freeswitch(office, handle) -> bytes:
    """Every byte fsrouter wrote: this call's outbound socket and the event socket so far."""
    event_socket = b"".join(c.raw for conn in office.fake.inbound.connections for c in conn.commands)
    return b"".join(handle.commands) + event_socket


def test_hostile_caller_ids_never_reach_freeswitch(office):
    BindingPath(office.store).set_manual_binding("+380501234567", "1002", __import__("datetime").datetime.now(
        __import__("datetime").UTC))
    seen = {"calls": 0}

    @E2E
    @given(caller=hostile_callers, group=st.sampled_from(["sales", "sales", "no-such-group", "sales|x"]))
    def one_call(caller, group):
        handle = office.fake.place_call(caller=caller, group=group, router=office.router)
        assert handle.wait(15), "the call never ended"
        seen["calls"] += 1
        sent = sent_to_freeswitch(office, handle)
        text = without_uuids(sent.decode("utf-8", "replace"))
        assert caller.encode("utf-8", "replace") not in sent
        for marker in MARKERS:
            assert marker not in text, (marker, caller)
        for command in handle.parsed:
            check_grammar(command)
        assert handle.variables.get("fsrouter_client", "") == ""
        # The caller is still served: the group rings, or the dialplan takes the call back.
        assert handle.bridges or handle.returned_to_dialplan
        if group == "sales":
            assert handle.variables["fsrouter_reason"] == "not_a_client"
            assert handle.answered_by in AGENTS

    one_call()
    assert seen["calls"] >= 10
    assert office.daemon.listener.stats.handler_errors == 0
    assert office.daemon.outbound_stats.errors == 0
    # Not one hostile caller became a client with a call record or a binding.
    assert {c.client for c in office.store.calls()} <= {"+380501234567"}
    assert [b.client for b in office.store.list_bindings()] == ["+380501234567"]


def test_a_good_caller_id_goes_out_only_in_its_normalised_form(office):
    handle = office.call("(050) 123-45-67")
    for command in handle.parsed:
        check_grammar(command)
    assert handle.variables["fsrouter_client"] == "+380501234567"
    assert b"(050)" not in b"".join(handle.commands)


GARBAGE = st.one_of(
    st.binary(min_size=1, max_size=300),
    st.sampled_from([b"Content-Type: text/event-plain\nContent-Length: abc\n\n",
                     b"Content-Length: 3\n\nabc",
                     b"Content-Type: text/event-plain\nContent-Length: 4\n\n\xff\xfe\n\n",
                     b"Content-Type: command/reply\nReply-Text: +OK\n\n",
                     b"Content-Type: api/response\nContent-Length: 9999999999\n\n",
                     b"Content-Type: text/event-plain\nContent-Length: -5\n\nabc",
                     b"Content-Type: text/disconnect-notice\nContent-Length: 0\n\n"]),
)


def test_garbage_from_freeswitch_mid_call_never_leaves_a_call_waiting(tmp_path, capfd):
    office = Office(tmp_path, time_scale=0.02)
    try:
        for ext in AGENTS:
            office.fake.agent(ext, answers_after=1, talk=2)

        @hsettings(max_examples=12, deadline=None, database=None,
                   suppress_health_check=[HealthCheck.too_slow])
        @given(garbage=GARBAGE)
        def one_call(garbage):
            handle = office.fake.place_call(caller="0501234567", router=office.router)
            assert wait_until(lambda: handle.bridges or handle.done.is_set(), 10)
            session = handle._call.session
            if session is not None:
                session.deliver(garbage)
            assert handle.wait(15)
            # The router's end lets go within a poll or two of the socket closing.
            assert wait_until(lambda: office.daemon.outbound_stats.active == 0, 3), office.daemon.outbound_stats

        one_call()
    finally:
        office.close()
    assert "Traceback" not in capfd.readouterr().err


def test_garbage_on_the_event_socket_costs_a_reconnect_at_most(tmp_path, capfd):
    office = Office(tmp_path)
    try:
        @hsettings(max_examples=12, deadline=None, database=None,
                   suppress_health_check=[HealthCheck.too_slow])
        @given(garbage=GARBAGE)
        def inject(garbage):
            office.fake.inject_malformed(data=garbage)
            # Read past, or a reconnect: either way an event sent after it gets through.
            assert hears(office.daemon, office.fake, 15), "the event socket never recovered"

        inject()
        # Still following calls and learning after all that.
        handle = office.fake.agent_calls_out("1003", "+380671110000", answered=False)
        assert handle.done.wait(10)
        office.settle()
        assert office.binding("+380671110000") == "1003"
        assert office.daemon.listener.stats.handler_errors == 0
    finally:
        office.close()
    assert "Traceback" not in capfd.readouterr().err


# -- faults ------------------------------------------------------------------------------------

def test_a_database_write_lock_held_elsewhere_never_stops_routing(tmp_path):
    """A CLI import holds SQLite's write lock for seconds: calls still ring at once, and the
    calls that ended meanwhile are written once the lock is gone. (SQLite waits for a lock in a
    C call that stopped the whole daemon: found by the soak, soak/run.py.)"""
    import sqlite3

    from fsrouter.config import Config
    from fsrouter.wiring import build_daemon

    office = Office(tmp_path)  # for its store and its fake; its daemon is replaced by one of
    office.daemon.stop()       # `fsrouter run`'s making, with connections of its own
    office.daemon = build_daemon(Config(database=office.url, esl_port=office.fake.esl_address[1], listen_port=0,
                                  drain_timeout=5.0))
    office.daemon.start()
    try:
        assert office.daemon.listener.connected.wait(5)
        for ext in AGENTS:
            office.fake.agent(ext, answers_after=1, talk=12)
        lock = sqlite3.connect(str(tmp_path / "office.db"), isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")
        locked_at = time.perf_counter()
        try:
            handles = []
            for n in range(4):
                started = time.perf_counter()
                handle = office.fake.place_call(caller=f"050123456{n}", router=office.router)
                # Bounds well below SQLite's usual 10 s wait for a lock, yet loose enough for a
                # loaded machine.
                assert wait_until(lambda h=handle: h.bridges, 5), "no bridge while the lock was held"
                assert handle.first_bridge_at - started < 2.5
                assert handle.wait(10)
                handles.append(handle)
            # The writer tries to write the calls that ended, and fails: they wait in memory.
            writer = office.daemon.writer
            assert wait_until(lambda: len(writer.pending) == 4 and writer.failures >= 1, 5), \
                (len(writer.pending), writer.failures)
            # Everything here took a moment: no wait for the lock stopped the process (the fake
            # and this test included) for SQLite's usual 10 s.
            assert time.perf_counter() - locked_at < 9
        finally:
            lock.execute("COMMIT")
            lock.close()
        office.settle(timeout=15)
        assert len(office.store.calls()) == 4
    finally:
        office.close()


def test_every_database_connection_of_the_daemon_waits_for_a_lock_only_briefly(tmp_path):
    """The routing, writing and webhook-outbox connections alike: a longer wait stops the loop."""
    from fsrouter.config import Config
    from fsrouter.wiring import SQLITE_BUSY_TIMEOUT, build_daemon

    office = Office(tmp_path)
    office.daemon.stop()
    daemon = build_daemon(Config(database=office.url, esl_port=office.fake.esl_address[1], listen_port=0,
                                 webhook_urls=("http://127.0.0.1:9/hook",), webhook_secret="s"))
    try:
        stores = [daemon.service.store, daemon.writer.service.store, daemon.sender.outbox.store]
        for store in stores:
            waits = store.db.execute_sql("PRAGMA busy_timeout").fetchone()[0]
            assert waits == round(SQLITE_BUSY_TIMEOUT * 1000), store
    finally:
        for store in {id(s): s for s in stores}.values():
            store.close()
        office.fake.stop()
        office.store.close()
