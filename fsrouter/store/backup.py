"""`fsrouter db backup` and `db restore`: SQLite's online backup, safe while the daemon runs.

Backup copies the database with SQLite's backup API in one step: one read transaction, so the
copy is the database as it was at one instant, while the daemon goes on routing and writing (in
WAL mode readers and the writer never wait for each other). The copy is written next to the
target under a temporary name, turned into a single self-contained file (rollback journal, no
-wal/-shm beside it), checked (integrity_check, fsrouter's schema version) and only then renamed
over the target, mode 0600: it holds every client's number.

Restore refuses, unless forced, while the database is open in another process (`fsrouter run`,
or a CLI command in progress): the daemon holds calls in memory that it writes after its next
look at the database, and whoever restores under it should mean to. A restore first saves the
current database beside itself (<name>.before-restore-<UTC time>), then copies the backup in with
the same backup API, in one write transaction, so another process sees either the old database
or the restored one, never half of each. A backup from a newer fsrouter (a schema this one does
not know) is refused; an older one is upgraded the next time fsrouter opens it.

PostgreSQL is backed up with its own tools: pg_dump and pg_restore (docs/reliability.md).
"""
from __future__ import annotations

import fcntl
import os
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from playhouse import db_url

from . import MIGRATIONS, StoreError
from .connection import _redact

_TABLES = {"agents": "agent", "groups": "agent_group", "bindings": "binding", "call_records": "call_record"}
# In WAL mode every open connection holds a shared lock on this byte of the -shm file (SQLite's
# "DMS" slot, UNIX_SHM_BASE + SQLITE_SHM_NLOCK), so the last one to close can clean up.
_SHM_DMS_BYTE = 128


class BackupError(StoreError):
    """A backup or restore that cannot be done; the message is one line saying why."""


@dataclass(frozen=True)
class Summary:
    path: str
    schema_version: int
    size: int  # bytes
    counts: dict[str, int]

    def describe(self) -> str:
        counts = ", ".join(f"{n} {name.replace('_', ' ')}" for name, n in self.counts.items())
        return f"{counts} (schema {self.schema_version}, {self.size / 1_000_000:.1f} MB)"


def sqlite_path(url: str) -> Path:
    """The file of an SQLite database URL; BackupError for PostgreSQL and in-memory databases."""
    scheme = url.split(":", 1)[0].lower()
    if scheme.startswith("postgres"):
        raise BackupError(
            f"the database is PostgreSQL ({_redact(url)}): back it up with pg_dump, e.g. "
            f"pg_dump -Fc -f fsrouter.dump '{_redact(url)}', and restore with pg_restore --clean "
            f"(docs/reliability.md)")
    if not scheme.startswith("sqlite"):
        raise BackupError(f"db backup and restore work on SQLite databases, not {_redact(url)}")
    try:
        database = db_url.parse(url).get("database") or ""
    except (ValueError, RuntimeError) as exc:
        raise BackupError(f"bad database URL {_redact(url)!r}: {exc}") from None
    if not database or database == ":memory:" or database.startswith("file::memory:"):
        raise BackupError(f"{_redact(url)} is not a database file")
    return Path(database)


def in_use(path: Path) -> bool:
    """Is the SQLite database at `path` open in another process right now (WAL mode)?

    Call it with no connection of this process open to the file: closing the descriptor used
    here drops every POSIX lock this process holds on the -shm file.
    """
    shm = Path(f"{path}-shm")
    try:
        fd = os.open(shm, os.O_RDWR)
    except FileNotFoundError:
        return False  # the last connection removed it: nobody has the database open
    except OSError as exc:
        raise BackupError(f"cannot tell whether {path} is in use: {shm}: {exc.strerror}") from None
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, _SHM_DMS_BYTE, os.SEEK_SET)
        except OSError:
            return True
        fcntl.lockf(fd, fcntl.LOCK_UN, 1, _SHM_DMS_BYTE, os.SEEK_SET)
        return False
    finally:
        os.close(fd)


def backup(url: str, target: str | os.PathLike) -> Summary:
    """Copy the database of `url` to the file `target` (replacing it), online."""
    source = sqlite_path(url)
    target = Path(target)
    if not source.exists():
        raise BackupError(f"no database at {source}")
    if target.exists() and target.resolve() == source.resolve():
        raise BackupError(f"{target} is the database itself: back it up to another file")
    if target.is_dir():
        raise BackupError(f"{target} is a directory: name the backup file")
    temporary = target.with_name(f".{target.name}.partial-{os.getpid()}")
    try:
        _create_private(temporary)
        _copy(_open(source), temporary, to_single_file=True)
        summary = _check(temporary, str(target))
        _fsync(temporary)
        os.replace(temporary, target)
        _fsync_dir(target.parent)
        return summary
    except OSError as exc:
        raise BackupError(f"cannot write {target}: {exc.strerror or exc}") from None
    finally:
        temporary.unlink(missing_ok=True)


def restore(url: str, source: str | os.PathLike, force: bool = False, now: datetime | None = None
            ) -> tuple[Summary, Path | None]:
    """Put the backup file `source` in place of the database of `url`.

    Returns what was restored and where the database it replaced was saved (None when there was
    none). BackupError when the backup is not a sound fsrouter database, when it comes from a
    newer fsrouter, or when the database is in use and `force` is not given.
    """
    target = sqlite_path(url)
    source = Path(source)
    if not source.is_file():
        raise BackupError(f"no backup file at {source}")
    if target.exists() and source.resolve() == target.resolve():
        raise BackupError(f"{source} is the database itself")
    _check(source, str(source))  # a sound fsrouter database this fsrouter knows, before anything changes
    if target.exists() and in_use(target) and not force:
        raise BackupError(f"{target} is in use (fsrouter run, or another fsrouter command): stop the daemon "
                          f"first (systemctl stop fsrouter), or restore under it with --force")
    saved = None
    if target.exists():
        stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
        saved = target.with_name(f"{target.name}.before-restore-{stamp}")
        backup(url, saved)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists():
            _create_private(target)
        _copy(_open(source, read_only=True), target, to_single_file=False)
    except OSError as exc:
        raise BackupError(f"cannot write {target}: {exc.strerror or exc}") from None
    return _check(target, str(target)), saved


# -- helpers -----------------------------------------------------------------------------------

def _open(path: Path, read_only: bool = False) -> sqlite3.Connection:
    try:
        if read_only:
            return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        return sqlite3.connect(path, timeout=10)
    except sqlite3.Error as exc:
        raise BackupError(f"cannot open {path}: {exc}") from None


def _copy(source: sqlite3.Connection, target: Path, to_single_file: bool) -> None:
    """Every page of `source` into `target`, in one step (one snapshot, one write transaction)."""
    destination = sqlite3.connect(target, timeout=10, isolation_level=None)
    try:
        source.backup(destination)
        mode = "delete" if to_single_file else "wal"
        destination.execute(f"PRAGMA journal_mode={mode}").fetchone()
    except sqlite3.Error as exc:
        raise BackupError(f"copying into {target} failed: {exc}") from None
    finally:
        destination.close()
        source.close()


def _check(path: Path, name: str) -> Summary:
    """The backup or database at `path` is a sound fsrouter database this fsrouter can open."""
    try:
        with open(path, "rb") as handle:
            if handle.read(16) != b"SQLite format 3\x00":
                raise BackupError(f"{name} is not an SQLite database")
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    except OSError as exc:
        raise BackupError(f"cannot read {name}: {exc.strerror or exc}") from None
    except sqlite3.Error as exc:
        raise BackupError(f"cannot open {name}: {exc}") from None
    try:
        problems = [row[0] for row in conn.execute("PRAGMA integrity_check")]
        if problems != ["ok"]:
            raise BackupError(f"{name} is damaged: {'; '.join(problems)[:200]}")
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "schema_version" not in tables:
            raise BackupError(f"{name} is not an fsrouter database (no schema_version table)")
        version = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] or 0
        latest = MIGRATIONS[-1][0]
        if version > latest:
            raise BackupError(f"{name} has schema version {version}, newer than this fsrouter knows "
                              f"({latest}): restore it with the fsrouter that wrote it")
        counts = {label: conn.execute(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0]
                  for label, table in _TABLES.items() if table in tables}
    except sqlite3.Error as exc:
        raise BackupError(f"cannot read {name}: {exc}") from None
    finally:
        conn.close()
    return Summary(str(path), version, path.stat().st_size, counts)


def _create_private(path: Path) -> None:
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600))
    os.chmod(path, 0o600)  # also when it existed with wider permissions


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    try:
        _fsync(path)
    except OSError:
        pass  # not every file system lets a directory be fsynced
