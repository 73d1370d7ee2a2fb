"""Child processes of a benchmark run: start them, read their /proc figures, and always stop them.

Every child is registered in CHILDREN and killed by stop_all() (run.py calls it in a finally and
at exit), by its own pid, never by name.
"""
from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PYTHON = sys.executable
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
CHILDREN: list[subprocess.Popen] = []
# The checkout this file is in is what gets measured, whatever fsrouter the venv has installed.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
if str(ROOT) not in sys.path:
    sys.path.insert(1, str(ROOT))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def spawn(args, **kwargs) -> subprocess.Popen:
    proc = subprocess.Popen(args, **kwargs)
    CHILDREN.append(proc)
    return proc


def stop(proc: subprocess.Popen | None, sig=signal.SIGTERM, timeout: float = 15.0) -> int | None:
    if proc is None:
        return None
    if proc.poll() is None:
        try:
            proc.send_signal(sig)
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            try:
                stream.close()
            except OSError:
                pass
    if proc in CHILDREN:
        CHILDREN.remove(proc)
    return proc.returncode


def stop_all() -> None:
    for proc in CHILDREN:
        stop(proc, signal.SIGKILL, timeout=5)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def schedstat(pid: int) -> tuple[float, float]:
    """(seconds on a CPU, seconds runnable but waiting for one) of a process's main thread."""
    on_cpu, waiting, _slices = Path(f"/proc/{pid}/schedstat").read_text().split()
    return int(on_cpu) / 1e9, int(waiting) / 1e9


def rss_bytes(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE


def wait_for(predicate, timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())


class Fake:
    """bench/fake_driver.py as a child process, steered by JSON lines."""

    def __init__(self, router_port: int, esl_port: int, span: int, log: Path):
        self.proc = spawn([PYTHON, str(BENCH / "fake_driver.py"), "--router", f"127.0.0.1:{router_port}",
                           "--esl-port", str(esl_port), "--span", str(span)],
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(log, "ab"), cwd=BENCH)  # noqa: SIM115
        self.ready = self._read(30)
        self.esl_port = self.ready["esl_port"]

    def _read(self, timeout: float) -> dict:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not ready:
            raise TimeoutError("the fake did not answer in time")
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the fake exited (code {self.proc.poll()})")
        return json.loads(line)

    def __call__(self, cmd: str, wait: float = 300.0, **kwargs) -> dict:
        """Send a command (kwargs, `timeout` included, go to the fake); `wait`: for its answer."""
        self.proc.stdin.write((json.dumps({"cmd": cmd, **kwargs}) + "\n").encode())
        self.proc.stdin.flush()
        answer = self._read(wait)
        if "error" in answer:
            raise RuntimeError(f"fake {cmd}: {answer['error']}")
        return answer

    @property
    def pid(self) -> int:
        return self.proc.pid

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(b'{"cmd": "quit"}\n')
                self.proc.stdin.flush()
                self.proc.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                pass
        stop(self.proc, signal.SIGKILL)


class Router:
    """`fsrouter run` (configured by FSROUTER_* variables) or the greenswitch baseline."""

    def __init__(self, kind: str, listen_port: int, esl_port: int, log: Path, database: str | None = None,
                 log_level: str = "info"):
        self.kind, self.log = kind, log
        if kind == "fsrouter":
            empty = log.with_suffix(".toml")
            empty.write_text("")
            empty.chmod(0o600)  # fsrouter refuses a config file others can read
            env = dict(os.environ, FSROUTER_DATABASE=database, FSROUTER_ESL_PORT=str(esl_port),
                       FSROUTER_LISTEN_PORT=str(listen_port), FSROUTER_LOG_FORMAT="json",
                       FSROUTER_LOG_LEVEL=log_level, FSROUTER_DRAIN_TIMEOUT="5")
            args = [PYTHON, "-m", "fsrouter", "--config", str(empty), "run"]
            marker = b"daemon.started"
        else:
            env = dict(os.environ)
            args = [PYTHON, str(BENCH / "baseline_router.py"), "--listen-port", str(listen_port)]
            if esl_port:
                args += ["--esl-port", str(esl_port)]
            marker = b"baseline.started"
        self.proc = spawn(args, env=env, stdout=open(log, "wb"), stderr=subprocess.STDOUT, cwd=ROOT)  # noqa: SIM115
        if not wait_for(lambda: marker in log.read_bytes() or self.proc.poll() is not None, 30):
            raise TimeoutError(f"{kind} did not start (see {log})")
        if self.proc.poll() is not None:
            raise RuntimeError(f"{kind} exited at start (see {log}):\n{log.read_text()[-2000:]}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def rss(self) -> int:
        return rss_bytes(self.pid)

    def close(self) -> int | None:
        return stop(self.proc, signal.SIGTERM, timeout=20)
