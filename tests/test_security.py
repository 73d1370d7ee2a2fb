"""The security of a process that holds the keys to a PBX.

- the config file holds the event-socket password: one that others can read is refused, as ssh
  refuses a private key, with one line saying what to do;
- the password is never accepted on the command line, and never written to a log;
- the outbound socket takes calls only from the configured peers (IPv4-mapped IPv6 included);
- `binding export` escapes cells a spreadsheet would run as formulas.
"""
from __future__ import annotations

import os

import pytest
from click.testing import CliRunner

from fsrouter.binding_path import BindingPath
from fsrouter.cli import main
from fsrouter.config import ConfigError, load_config

# -- the config file ---------------------------------------------------------------------------


def config_file(tmp_path, mode: int, text: str = 'esl_password = "s3cret-for-the-pbx"\n') -> str:
    path = tmp_path / "fsrouter.toml"
    path.write_text(text)
    os.chmod(path, mode)
    return str(path)


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o400, 0o660, 0o700])
def test_a_config_only_owner_and_group_can_read_is_read(tmp_path, mode):
    assert load_config(config_file(tmp_path, mode), environ={}).esl_password == "s3cret-for-the-pbx"


@pytest.mark.parametrize("mode", [0o644, 0o604, 0o666, 0o602, 0o777])
def test_a_config_others_can_read_or_write_is_refused_in_one_line(tmp_path, mode):
    path = config_file(tmp_path, mode)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    message = str(caught.value)
    assert "\n" not in message and path in message and f"{mode:04o}" in message
    assert "chmod o-rwx" in message and "s3cret" not in message


def test_the_cli_and_the_daemon_refuse_it_before_doing_anything(tmp_path):
    path = config_file(tmp_path, 0o644, f'database = "sqlite:///{tmp_path}/x.db"\n')
    for command in (["agent", "list"], ["run"]):
        result = CliRunner().invoke(main, ["--config", path, *command])
        assert result.exit_code == 1
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("Error: config file") and "open to others" in lines[0]
    assert not (tmp_path / "x.db").exists()


# -- the event-socket password -----------------------------------------------------------------

PASSWORD = "Zq9-distinctive-ESL-secret-7731"
API_TOKEN = "Tk4-distinctive-api-token-5510"
WEBHOOK_SECRET = "Wh2-distinctive-hmac-secret-8842"


def test_the_password_never_reaches_the_log_even_when_freeswitch_refuses_it(tmp_path):
    """`fsrouter run` at debug level against a FreeSWITCH that refuses the password: the log says
    so, again and again, and never shows the password, nor the API token or the webhook secret."""
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from fsrouter.fakefs import FakeFreeSWITCH

    fake = FakeFreeSWITCH(password="not-the-same").start()
    path = config_file(tmp_path, 0o600, (
        f'database = "sqlite:///{tmp_path}/run.db"\nesl_port = {fake.esl_address[1]}\n'
        f'esl_password = "{PASSWORD}"\nlisten_port = {_free_port()}\nlog_format = "json"\nlog_level = "debug"\n'
        f'api_listen = "127.0.0.1:{_free_port()}"\napi_token = "{API_TOKEN}"\n'
        f'webhook_urls = ["http://127.0.0.1:9/hook"]\nwebhook_secret = "{WEBHOOK_SECRET}"\n'))
    binary = Path(sys.executable).with_name("fsrouter")
    command = [str(binary)] if binary.exists() else [sys.executable, "-m", "fsrouter"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FSROUTER_")}
    proc = subprocess.Popen(command + ["--config", path, "run"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and sum(
                1 for c in fake.inbound.connections for _ in c.commands) + fake.inbound.accepted < 4:
            _sleep(0.1)
        with open(f"/proc/{proc.pid}/cmdline", "rb") as handle:
            assert PASSWORD.encode() not in handle.read()
        _sleep(1.0)
    finally:
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
        fake.stop()
    log = output.decode("utf-8", "replace")
    assert fake.inbound.accepted >= 2, "the daemon never tried the event socket"
    assert '"error": "authentication refused"' in log, log[-2000:]
    assert PASSWORD not in log and PASSWORD[:12] not in log and "Traceback" not in log
    assert API_TOKEN not in log and WEBHOOK_SECRET not in log


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sleep(seconds: float) -> None:
    import gevent

    gevent.sleep(seconds)


SECRET_WORDS = ("password", "passwd", "secret", "token", "apikey", "api_key", "api-key", "credential")


def _all_params(group=main, path=("fsrouter",)):
    import click

    for param in group.params:
        yield path, param
    for name, command in getattr(group, "commands", {}).items():
        if isinstance(command, click.Group):
            yield from _all_params(command, path + (name,))
        else:
            for param in command.params:
                yield path + (name,), param


def test_no_command_takes_a_password_or_token_on_the_command_line():
    """Anything on a command line is visible to every user (ps, /proc/*/cmdline) and lands in
    shell history: secrets come from the config file or the environment only."""
    offenders = []
    for path, param in _all_params():
        names = [param.name or "", *getattr(param, "opts", ()), *getattr(param, "secondary_opts", ())]
        if any(word in name.lower() for name in names for word in SECRET_WORDS):
            offenders.append((" ".join(path), names))
    assert not offenders


def test_the_password_comes_only_from_the_file_or_the_environment(tmp_path):
    assert load_config(None, environ={"FSROUTER_ESL_PASSWORD": PASSWORD}).esl_password == PASSWORD
    assert PASSWORD not in repr(load_config(None, environ={"FSROUTER_ESL_PASSWORD": PASSWORD}))


# -- the outbound socket: configured peers only --------------------------------------------------

class _NoRouter:
    def __init__(self):
        from fsrouter.esl.outbound import OutboundStats

        self.stats = OutboundStats()
        self.calls = 0

    def run(self, session):
        self.calls += 1
        session.send_nowait("connect")  # what a real router says first
        _sleep(1.0)


def _server(allowed, host="::"):
    from fsrouter.esl.outbound import OutboundServer

    router = _NoRouter()
    server = OutboundServer(host, 0, router, allowed_peers=allowed)
    server.start()
    return server, router


@pytest.mark.parametrize("peer, allowed", [
    ("127.0.0.1", True), ("::1", True), ("::ffff:127.0.0.1", True), ("::FFFF:7f00:1", True),
    ("10.0.0.5", False), ("::ffff:10.0.0.5", False), ("::ffff:127.0.0.2", False), ("fe80::1%eth0", False),
    ("0.0.0.0", False), ("::", False), ("", False), ("not an address", False), ("127.0.0.1\n", False),
])
def test_allowed_peers_default_to_loopback_whatever_the_address_family(peer, allowed):
    from fsrouter.esl.outbound import OutboundServer

    server = OutboundServer.__new__(OutboundServer)
    import ipaddress
    server.allowed = [ipaddress.ip_network(p, strict=False) for p in ("127.0.0.1", "::1")]
    assert server._allowed(peer) is allowed


def test_allowed_networks_match_ipv4_mapped_ipv6_peers():
    from fsrouter.esl.outbound import OutboundServer

    server = OutboundServer.__new__(OutboundServer)
    import ipaddress
    server.allowed = [ipaddress.ip_network("10.1.0.0/16")]
    assert server._allowed("::ffff:10.1.2.3") and server._allowed("10.1.200.9")
    assert not server._allowed("::ffff:10.2.0.1") and not server._allowed("10.2.0.1")


def _connect_and_read(address, family_host):
    import time

    from gevent import socket

    sock = socket.create_connection((family_host, address[1]), timeout=3)
    started = time.monotonic()
    try:
        data = sock.recv(100)
    except OSError:  # gevent's socket.timeout
        data = None
    finally:
        sock.close()
    return data, time.monotonic() - started


@pytest.mark.parametrize("allowed, client_host, accepted", [
    (("127.0.0.1",), "127.0.0.1", True),       # an IPv4 client of a dual-stack server is ::ffff:127.0.0.1
    (("127.0.0.1",), "::1", False),
    (("::1",), "127.0.0.1", False),
    (("10.9.9.9",), "127.0.0.1", False),
    (("127.0.0.0/8", "::1"), "::1", True),
])
def test_the_outbound_socket_closes_other_peers_at_once_over_tcp(allowed, client_host, accepted):
    import gevent

    server, router = _server(allowed)
    try:
        result = gevent.spawn(_connect_and_read, server.address, client_host)
        data, seconds = result.get(timeout=5)
        if accepted:
            assert data == b"connect\n\n" and router.calls == 1
        else:
            assert data == b"" and seconds < 0.5, "a refused peer must see the socket closed at once"
            assert router.calls == 0 and server.stats.refused_peers == 1
    finally:
        server.stop(0)


# -- binding export ------------------------------------------------------------------------------

def test_binding_export_escapes_formula_cells_end_to_end(tmp_path):
    """Through the CLI: every cell a spreadsheet would run (= + - @ tab CR at its start) gets a
    leading quote, and `binding import` reads the export back to the same bindings."""
    import csv

    from fsrouter.store import Store

    url = f"sqlite:///{tmp_path}/x.db"
    with Store.open(url) as store:
        store.add_group("sales")
        for ext in ("-2", "1001", "_x", ".9"):
            store.add_agent(ext, f"Agent {ext}", groups=["sales"])
    runner = CliRunner()
    for client, ext in (("0501234567", "-2"), ("+380671112233", "1001"), ("0931234567", "_x")):
        result = runner.invoke(main, ["--db", url, "binding", "set", "--", client, ext])
        assert result.exit_code == 0, result.output
    out = tmp_path / "bindings.csv"
    result = runner.invoke(main, ["--db", url, "binding", "export", "-o", str(out)])
    assert result.exit_code == 0, result.output
    stdout = runner.invoke(main, ["--db", url, "binding", "export"]).stdout
    assert stdout == out.read_text()
    rows = list(csv.reader(out.open(newline="")))
    assert rows[0] == ["client", "agent"] and len(rows) == 4
    for row in rows[1:]:
        for cell in row:
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), row
    assert ["'+380501234567", "'-2"] in rows and ["'+380671112233", "1001"] in rows
    # The export reads back: remove everything, import, and the same bindings route.
    with Store.open(url) as store:
        for client in ("+380501234567", "+380671112233", "+380931234567"):
            BindingPath(store).remove_bindings(client)
    assert runner.invoke(main, ["--db", url, "binding", "import", str(out)]).exit_code == 0
    with Store.open(url) as store:
        assert {b.client: b.agent for b in store.list_bindings()} == {
            "+380501234567": "-2", "+380671112233": "1001", "+380931234567": "_x"}


# -- the systemd unit ----------------------------------------------------------------------------

UNIT = __import__("pathlib").Path(__file__).resolve().parents[1] / "systemd" / "fsrouter.service"


def _unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_the_unit_runs_unprivileged_and_sandboxed():
    s = _unit_settings()
    assert s["User"] == ["fsrouter"] and s["CapabilityBoundingSet"] == [""] and s["NoNewPrivileges"] == ["yes"]
    for key in ("ProtectSystem", "ProtectHome", "PrivateTmp", "PrivateDevices", "PrivateUsers", "PrivateMounts",
                "ProtectKernelTunables", "ProtectKernelModules", "ProtectControlGroups", "RestrictNamespaces",
                "MemoryDenyWriteExecute", "LockPersonality", "RestrictSUIDSGID"):
        assert s.get(key) in (["yes"], ["strict"]), key
    assert s["UMask"] == ["0077"] and s["SystemCallErrorNumber"] == ["EPERM"]
    assert "@system-service" in s["SystemCallFilter"]


def _skip_or_fail(reason: str):
    """Skip where the tool is missing; under CI (this machine has systemd 252) that is a failure."""
    import os

    if os.environ.get("CI"):
        pytest.fail(f"{reason}: CI's machine has it, so the check must run")
    pytest.skip(reason)


def _systemd_analyze(*args):
    import shutil
    import subprocess

    if shutil.which("systemd-analyze") is None:
        _skip_or_fail("systemd-analyze is not installed")
    return subprocess.run(["systemd-analyze", *args], check=False, capture_output=True, text=True, timeout=60)


def test_systemd_analyze_security_rates_the_unit_ok_or_better():
    result = _systemd_analyze("security", "--offline=true", "--no-pager", str(UNIT))
    if "--offline" in result.stderr or "Unknown option" in result.stderr:
        _skip_or_fail("this systemd-analyze cannot check a unit file offline (systemd < 252)")
    line = next(line for line in result.stdout.splitlines() if "Overall exposure level" in line)
    exposure = float(line.split(":")[1].split()[0])
    assert exposure <= 1.9 and (" OK" in line or " SAFE" in line), line


def test_systemd_analyze_verify_finds_nothing_wrong(tmp_path):
    import sys
    from pathlib import Path

    # The unit names the installed binary; check a copy that names this one.
    binary = Path(sys.executable).with_name("fsrouter")
    if not binary.exists():
        _skip_or_fail("no fsrouter console script next to this Python")
    unit = tmp_path / "fsrouter.service"
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/fsrouter", str(binary)))
    result = _systemd_analyze("verify", str(unit))
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
