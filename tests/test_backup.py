"""`fsrouter db backup` / `db restore`: SQLite's online backup, while something keeps writing, and a
restore that will not pull the database from under a running daemon by accident."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from office import accepts, free_port

from fsrouter.binding_path import BindingPath
from fsrouter.cli import main
from fsrouter.core.model import Call
from fsrouter.store import MIGRATIONS, Store, backup

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def db(tmp_path):
    url = f"sqlite:///{tmp_path / 'fsrouter.db'}"
    with Store.open(url) as store:
        store.add_group("sales")
        store.add_agent("1001", "Anna", groups=["sales"])
        store.add_agent("1002", "Bohdan", groups=["sales"])
        BindingPath(store).set_manual_binding("+380501234567", "1001", T0)
        settings = store.settings()
        for n in range(50):
            BindingPath(store).record_call(Call("inbound", f"+38067{n:07d}", "1002", T0 + timedelta(minutes=n),
                                   T0 + timedelta(minutes=n, seconds=40), talk_seconds=30), settings)
    return url


def run(*args):
    result = CliRunner().invoke(main, list(args))
    return result


def one_line_error(result, *fragments):
    assert result.exit_code != 0
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def test_backup_is_one_private_self_contained_file_that_fsrouter_opens(db, tmp_path):
    target = tmp_path / "backups" / "fsrouter-2024-05-01.db"
    target.parent.mkdir()
    result = run("--db", db, "db", "backup", str(target))
    assert result.exit_code == 0, result.output
    assert "2 agents, 1 groups, 51 bindings, 50 call records" in result.stdout
    assert oct(target.stat().st_mode & 0o777) == "0o600"
    assert sorted(p.name for p in target.parent.iterdir()) == [target.name]  # no -wal, -shm, partial
    with Store.open(f"sqlite:///{target}") as copy:
        assert set(copy.agents()) == {"1001", "1002"} and len(copy.calls()) == 50


WRITER = """
import sys, time
from datetime import UTC, datetime, timedelta
from fsrouter.binding_path import BindingPath
from fsrouter.core.model import Call
from fsrouter.store import Store
store = Store.open(sys.argv[1])
settings = store.settings()
t0 = datetime(2024, 6, 1, tzinfo=UTC)
print("writing", flush=True)
n = 0
deadline = time.monotonic() + float(sys.argv[2])
while time.monotonic() < deadline:
    with store.transaction():
        for _ in range(20):
            BindingPath(store).record_call(Call("inbound", f"+38093{n:07d}", "1001", t0 + timedelta(seconds=n),
                                   t0 + timedelta(seconds=n + 30), talk_seconds=20), settings)
            n += 1
print(n, flush=True)
"""


def test_backup_while_another_process_keeps_writing_is_a_consistent_snapshot(db, tmp_path):
    writer = subprocess.Popen([sys.executable, "-c", WRITER, db, "3"], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "writing"
        time.sleep(0.3)
        copies = []
        for i in range(3):
            target = tmp_path / f"copy{i}.db"
            summary = backup.backup(db, target)
            copies.append(summary.counts)
            time.sleep(0.2)
        written = int(writer.stdout.readline())
    finally:
        writer.wait(10)
    assert written > 0
    for counts in copies:
        # Every copy is a state the database was in: each 20-call transaction whole or absent,
        # and every call's learned binding with it.
        extra_calls = counts["call_records"] - 50
        assert extra_calls % 20 == 0 and 0 <= extra_calls <= written
        assert counts["bindings"] == 51 + extra_calls
    assert copies[0]["call_records"] <= copies[-1]["call_records"]


def test_restore_puts_the_backup_in_place_and_keeps_the_replaced_database(db, tmp_path):
    target = tmp_path / "before.db"
    assert run("--db", db, "db", "backup", str(target)).exit_code == 0
    with Store.open(db) as store:
        store.add_agent("1003", "Olena")
        BindingPath(store).remove_bindings("+380501234567")
    result = run("--db", db, "db", "restore", str(target))
    assert result.exit_code == 0, result.output
    saved = Path(result.stdout.split("the database it replaced is in ")[1].split("\n")[0])
    assert saved.name.startswith("fsrouter.db.before-restore-") and oct(saved.stat().st_mode & 0o777) == "0o600"
    with Store.open(db) as store:
        assert set(store.agents()) == {"1001", "1002"}
        assert store.bindings_for("+380501234567")["manual"].agent == "1001"
    with Store.open(f"sqlite:///{saved}") as before:
        assert "1003" in before.agents()
    mode = sqlite3.connect(db.removeprefix("sqlite:///")).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_restore_into_a_new_place(db, tmp_path):
    target = tmp_path / "b.db"
    backup.backup(db, target)
    fresh = f"sqlite:///{tmp_path / 'new' / 'fsrouter.db'}"
    summary, saved = backup.restore(fresh, target)
    assert saved is None and summary.counts["call_records"] == 50
    with Store.open(fresh) as store:
        assert len(store.calls()) == 50


HOLDER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1])
conn.execute("SELECT COUNT(*) FROM agent").fetchone()
print("open", flush=True)
sys.stdin.readline()
print(sorted(r[0] for r in conn.execute("SELECT ext FROM agent")), flush=True)
"""


def test_restore_is_refused_while_another_process_has_the_database_open_unless_forced(db, tmp_path):
    target = tmp_path / "b.db"
    backup.backup(db, target)
    with Store.open(db) as store:
        store.add_agent("1003", "Olena")
    path = db.removeprefix("sqlite:///")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, path], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        one_line_error(run("--db", db, "db", "restore", str(target)), "is in use", "--force")
        with Store.open(db) as store:
            assert "1003" in store.agents(), "a refused restore must change nothing"
        result = run("--db", db, "db", "restore", "--force", str(target))
        assert result.exit_code == 0, result.output
        # The other process, still connected, reads the restored database.
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "['1001', '1002']"
    finally:
        holder.kill()
        holder.wait()


def test_restore_is_refused_under_a_running_daemon(db, tmp_path):
    """The real thing: `fsrouter run` has the database open (FreeSWITCH need not be there)."""
    target = tmp_path / "b.db"
    backup.backup(db, target)
    config = tmp_path / "fsrouter.toml"
    listen_port = free_port()
    config.write_text(f'database = "{db}"\nesl_port = 1\nlisten_port = {listen_port}\nlog_format = "json"\n')
    config.chmod(0o600)
    binary = Path(sys.executable).with_name("fsrouter")
    command = [str(binary)] if binary.exists() else [sys.executable, "-m", "fsrouter"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FSROUTER_")}
    daemon = subprocess.Popen(command + ["--config", str(config), "run"], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, env=env)
    try:
        # Up: the database open, and taking calls, which it does only once SIGTERM stops it
        # cleanly (it opens the database before that: a SIGTERM then would just kill it).
        # Generous: a loaded machine takes seconds to start a Python process.
        deadline = time.monotonic() + 30
        while not (accepts(listen_port) and backup.in_use(Path(db.removeprefix("sqlite:///")))):
            assert daemon.poll() is None, daemon.communicate()[0].decode()[-2000:]
            assert time.monotonic() < deadline, "the daemon never came up"
            time.sleep(0.05)
        one_line_error(run("--db", db, "db", "restore", str(target)), "is in use", "systemctl stop fsrouter")
        # A backup is fine while it runs.
        assert run("--db", db, "db", "backup", str(tmp_path / "online.db")).exit_code == 0
    finally:
        daemon.send_signal(signal.SIGTERM)
        output = daemon.communicate(timeout=30)[0].decode()
    assert daemon.returncode == 0, output[-2000:]
    assert run("--db", db, "db", "restore", str(target)).exit_code == 0


def test_a_backup_that_is_not_a_sound_fsrouter_database_is_refused_and_nothing_changes(db, tmp_path):
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database at all" * 100)
    one_line_error(run("--db", db, "db", "restore", str(garbage)), "not an SQLite database")
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE x (y)").connection.commit()
    one_line_error(run("--db", db, "db", "restore", str(other)), "not an fsrouter database")
    newer = tmp_path / "newer.db"
    backup.backup(db, newer)
    with sqlite3.connect(newer) as conn:
        conn.execute("INSERT INTO schema_version VALUES (?, 'from the future', '2099-01-01')",
                     (MIGRATIONS[-1][0] + 1,))
    one_line_error(run("--db", db, "db", "restore", str(newer)), "newer than this fsrouter knows")
    damaged = tmp_path / "damaged.db"
    backup.backup(db, damaged)
    data = bytearray(damaged.read_bytes())
    for page in range(1, len(data) // 4096):  # every b-tree page's header, scribbled on
        data[4096 * page:4096 * page + 12] = b"\xff" * 12
    damaged.write_bytes(bytes(data))
    line = one_line_error(run("--db", db, "db", "restore", str(damaged)))
    assert "damaged" in line or "malformed" in line
    one_line_error(run("--db", db, "db", "restore", str(tmp_path / "missing.db")), "no backup file")
    with Store.open(db) as store:
        assert len(store.calls()) == 50
    assert not list(tmp_path.glob("*.before-restore-*")), "nothing was replaced, nothing was saved"


def test_backup_refuses_the_database_itself_a_directory_and_a_missing_database(db, tmp_path):
    one_line_error(run("--db", db, "db", "backup", db.removeprefix("sqlite:///")), "the database itself")
    one_line_error(run("--db", db, "db", "backup", str(tmp_path)), "is a directory")
    one_line_error(run("--db", f"sqlite:///{tmp_path}/nope.db", "db", "backup", str(tmp_path / "x.db")),
                   "no database at")


def test_postgresql_points_at_pg_dump_without_showing_the_password():
    line = one_line_error(run("--db", "postgresql://fsrouter:hunter2@db.example.net/fsrouter", "db", "backup",
                              "/tmp/x.db"), "PostgreSQL", "pg_dump", "pg_restore")
    assert "hunter2" not in line
    one_line_error(run("--db", "postgresql://fsrouter@db/fsrouter", "db", "restore", "/tmp/x.db"), "pg_dump")
    one_line_error(run("--db", "sqlite:///:memory:", "db", "backup", "/tmp/x.db"), "not a database file")
