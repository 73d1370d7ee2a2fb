"""The CDR catch-up (esl/catchup.py) on the CDR bytes of a real FreeSWITCH (../shared/cdr-captures):
the calls and bindings the live listener learns from the same calls, nothing recorded twice,
resumed where it stopped."""
from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import gevent
import pytest
import structlog
from cdr_lines import AGENTS, SITUATIONS, listener_calls, shipped_lines
from structlog.testing import capture_logs

from fsrouter.binding_path import BindingPath
from fsrouter.core.loss import DISCONNECT
from fsrouter.esl.catchup import CdrCatchup
from fsrouter.service import Service
from fsrouter.store import Store

NODE = "node-a"
CLIENT = "+380671112233"
# Pass 2 ran from 08:46 to 08:50 UTC (README "Passes"); the catch-up looks at it from 09:00.
PASS2_FROM = datetime(2026, 12, 3, 8, 46, tzinfo=UTC)
PASS2_TO = datetime(2026, 12, 3, 8, 51, tzinfo=UTC)
LATER = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)


def rig(tmp_path, name: str = "rig") -> Service:
    """A store set up as the rig's daemon was (README "Passes"): group sales, agents 1001-1004,
    1003 bound to the client by hand."""
    store = Store.open(f"sqlite:///{tmp_path}/{name}.db")
    store.add_group("sales")
    for ext in AGENTS:
        store.add_agent(ext, f"Agent {ext}", dial_string=f"user/{ext}@127.0.0.1", groups=["sales"])
    BindingPath(store).set_manual_binding(CLIENT, "1003", now=datetime(2026, 12, 3, 8, 46, 22, tzinfo=UTC))
    return Service(store, cache_ttl=0.0)


def write_cdrs(folder, names=("fsrouter_in.csv", "fsrouter_out.csv"), append=False) -> None:
    folder.mkdir(exist_ok=True)
    for name in names:
        with open(folder / name, "ab" if append else "wb") as file:
            file.writelines(shipped_lines(name))


def catchup(service: Service, folder, now=LATER, **kwargs) -> CdrCatchup:
    return CdrCatchup(folder, service, NODE, clock=lambda: now, **kwargs)


def window(service: Service, opened=PASS2_FROM, closed=PASS2_TO, node=NODE):
    service.store.start_loss_window(node, opened, DISCONNECT, "test")
    return service.store.close_loss_window(node, closed) if closed else service.store.open_loss_window(node)


def bindings(service: Service) -> dict:
    found = {}
    for client in (CLIENT, "+380672223344", "+380672223355"):
        for source, b in service.store.bindings_for(client).items():
            found[client, source] = (b.agent, b.at, b.call_uuid)
    return found


def test_the_catch_up_learns_from_the_cdrs_the_bindings_the_listener_learns(tmp_path):
    # The same calls through the listener (today's, on the captured events) and through the CDRs.
    live = rig(tmp_path, "live")
    for call in sorted(listener_calls().values(), key=lambda c: c.ended_at):
        if call.uuid in SITUATIONS.values():
            live.record_call(call)
    caught = rig(tmp_path, "caught")
    window(caught)
    write_cdrs(tmp_path / "cdr")
    assert catchup(caught, tmp_path / "cdr").poll() == len(SITUATIONS)
    assert bindings(caught) == bindings(live)
    # att_xfer's call (g), which the rig's daemon (1f5ed78) lost, is the client's latest: 1001,
    # dated by when it really ended (the old import dated it 08:49:23, start + talk).
    assert bindings(caught)[CLIENT, "auto"] == ("1001", datetime(2026, 12, 3, 8, 49, 28, 223201, tzinfo=UTC),
                                                SITUATIONS["g"])
    recovered = {c.uuid: (c.direction, c.client, c.agent, c.started_at, c.ended_at) for c in caught.store.calls()}
    recorded = {c.uuid: (c.direction, c.client, c.agent, c.started_at, c.ended_at) for c in live.store.calls()}
    assert recovered == recorded and len(recovered) == len(SITUATIONS)


def test_calls_the_listener_recorded_are_not_recorded_again(tmp_path):
    # As README's "Importing into a copy of live2.db": the daemon had every call but att_xfer's.
    service = rig(tmp_path)
    live = listener_calls()
    for situation, uuid in SITUATIONS.items():
        if situation != "g":
            service.record_call(live[uuid])
    window(service)
    write_cdrs(tmp_path / "cdr")
    job = catchup(service, tmp_path / "cdr")
    assert job.poll() == 1
    assert (job.stats.known, job.stats.recovered, job.stats.learned) == (len(SITUATIONS) - 1, 1, 1)
    assert len(service.store.calls()) == len(SITUATIONS)
    assert service.store.loss_windows(NODE)[0].recovered == 1
    # A second pass, and a pass over the same bytes written again: nothing new.
    assert job.poll() == 0
    write_cdrs(tmp_path / "cdr", append=True)
    assert job.poll() == 0 and len(service.store.calls()) == len(SITUATIONS)


def test_a_call_that_touched_no_window_is_left_to_the_listener(tmp_path):
    service = rig(tmp_path)
    # A window that ends before (a) ended, and one that opens after (d again) ended.
    window(service, PASS2_FROM - timedelta(minutes=5), PASS2_FROM - timedelta(minutes=1))
    window(service, datetime(2026, 12, 3, 8, 55, tzinfo=UTC), datetime(2026, 12, 3, 8, 56, tzinfo=UTC))
    write_cdrs(tmp_path / "cdr")
    job = catchup(service, tmp_path / "cdr")
    assert job.poll() == 0 and job.stats.lines == len(SITUATIONS)
    assert service.store.calls() == []


def test_a_window_takes_the_calls_that_ended_in_it_and_those_it_cut_through(tmp_path):
    service = rig(tmp_path)
    # 08:47:30 - 08:47:45: (c) started before it (08:47:19) and ended after it (08:47:51);
    # (b) ended before it (08:47:10), (d) started after it (08:48:04).
    window(service, datetime(2026, 12, 3, 8, 47, 30, tzinfo=UTC), datetime(2026, 12, 3, 8, 47, 45, tzinfo=UTC))
    write_cdrs(tmp_path / "cdr")
    catchup(service, tmp_path / "cdr").poll()
    assert [c.uuid for c in service.store.calls()] == [SITUATIONS["c"]]


def test_an_open_window_takes_every_call_since_it_opened(tmp_path):
    service = rig(tmp_path)
    window(service, datetime(2026, 12, 3, 8, 49, tzinfo=UTC), closed=None)
    write_cdrs(tmp_path / "cdr")
    catchup(service, tmp_path / "cdr").poll()
    assert {c.uuid for c in service.store.calls()} == {SITUATIONS["f2"], SITUATIONS["g"], SITUATIONS["d_receiver_down"]}


def test_a_line_waits_until_its_call_ended_a_minute_ago(tmp_path):
    service = rig(tmp_path)
    window(service)
    write_cdrs(tmp_path / "cdr", names=("fsrouter_out.csv",))
    # 08:49:00: (d) ended 08:48:08, (e) 08:48:21, (d again) 08:49:56: only (d) is old enough.
    job = catchup(service, tmp_path / "cdr", now=datetime(2026, 12, 3, 8, 49, 15, tzinfo=UTC))
    assert job.poll() == 1
    job.clock = lambda: LATER
    assert job.poll() == 2
    assert len(service.store.calls()) == 3


def test_the_catch_up_resumes_where_it_stopped_after_a_restart(tmp_path):
    service = rig(tmp_path)
    window(service)
    folder = tmp_path / "cdr"
    folder.mkdir()
    lines = shipped_lines("fsrouter_in.csv")
    (folder / "fsrouter_in.csv").write_bytes(b"".join(lines[:3]))
    assert catchup(service, folder).poll() == 3
    # The daemon restarts (a new CdrCatchup, a new Store on the same database); FreeSWITCH wrote on.
    with open(folder / "fsrouter_in.csv", "ab") as file:
        file.writelines(lines[3:])
    again = Service(Store.open(f"sqlite:///{tmp_path}/rig.db"), cache_ttl=0.0)
    job = catchup(again, folder)
    assert job.poll() == len(lines) - 3
    assert (job.stats.lines, job.stats.known) == (len(lines) - 3, 0)


def test_a_half_written_line_is_read_once_it_is_whole(tmp_path):
    service = rig(tmp_path)
    window(service)
    folder = tmp_path / "cdr"
    folder.mkdir()
    line = shipped_lines("fsrouter_in.csv")[0]
    (folder / "fsrouter_in.csv").write_bytes(line[:40])
    job = catchup(service, folder)
    assert job.poll() == 0 and job.stats.bad == 0
    (folder / "fsrouter_in.csv").write_bytes(line)
    assert job.poll() == 1


def test_a_rotated_file_is_read_to_its_end_and_its_successor_from_the_start(tmp_path):
    service = rig(tmp_path)
    window(service)
    folder = tmp_path / "cdr"
    folder.mkdir()
    lines = shipped_lines("fsrouter_in.csv")
    (folder / "fsrouter_in.csv").write_bytes(b"".join(lines[:2]))
    job = catchup(service, folder)
    assert job.poll() == 2
    # FreeSWITCH writes two more lines, then rotate-on-hup renames the file and starts a new one.
    with open(folder / "fsrouter_in.csv", "ab") as file:
        file.writelines(lines[2:4])
    os.rename(folder / "fsrouter_in.csv", folder / "fsrouter_in.csv.2026-12-03-08-48-30")
    (folder / "fsrouter_in.csv").write_bytes(b"".join(lines[4:]))
    assert job.poll() == len(lines) - 2
    assert job.stats.known == 0
    # The rotated file deleted: its cursor goes too.
    os.remove(folder / "fsrouter_in.csv.2026-12-03-08-48-30")
    job.poll()
    assert len(service.store.cdr_cursors(NODE)) == 1


def test_lines_that_are_not_fsrouters_are_skipped_with_one_warning(tmp_path):
    service = rig(tmp_path)
    window(service)
    folder = tmp_path / "cdr"
    folder.mkdir()
    doc_line = b'"2026-12-03T08:37:31Z","inbound","+380671112233","1003","12","dca9a7ef-741a-494d-900f-606d6d523b34"\n'
    forged = (b'"2026-12-03T08:46:38Z","inbound","+380671112233","1001","99","9540196b","x"' + b',"1"' * 6 + b"\n")
    (folder / "fsrouter_in.csv").write_bytes(doc_line + forged + b"\xff\xfe garbage\n" + shipped_lines("fsrouter_in.csv")[0])
    structlog.reset_defaults()
    with capture_logs() as logs:
        job = catchup(service, folder)
        assert job.poll() == 1
    assert job.stats.bad == 3
    warnings = [e for e in logs if e["event"] == "cdr.bad_lines"]
    assert len(warnings) == 1 and warnings[0]["lines"] == 3 and "6 cells" in warnings[0]["first"]


def test_a_missing_cdr_folder_is_one_line_not_a_traceback(tmp_path):
    service = rig(tmp_path)
    with pytest.raises(OSError, match="cannot read the CDR folder .*nowhere"):
        catchup(service, tmp_path / "nowhere").poll()


def test_calls_still_in_the_listeners_writer_are_not_recorded_again(tmp_path):
    service = rig(tmp_path)
    window(service)
    write_cdrs(tmp_path / "cdr", names=("fsrouter_out.csv",))
    waiting = [listener_calls()[SITUATIONS["e"]]]
    job = catchup(service, tmp_path / "cdr", pending=lambda: waiting)
    assert job.poll() == 2
    assert SITUATIONS["e"] not in {c.uuid for c in service.store.calls()}


def test_a_failing_catch_up_warns_once_until_it_works_again(tmp_path):
    service = rig(tmp_path)
    job = catchup(service, tmp_path / "cdr")  # the folder is not there yet
    structlog.reset_defaults()
    with capture_logs() as logs:
        runner = gevent.spawn(job.run, 0.01)
        gevent.sleep(0.1)
        write_cdrs(tmp_path / "cdr")
        gevent.sleep(0.1)
        runner.kill()
    assert job.stats.errors >= 3
    assert [e["event"] for e in logs if e["event"].startswith("cdr.catchup")] == ["cdr.catchup_failed",
                                                                                 "cdr.catchup_resumed"]
