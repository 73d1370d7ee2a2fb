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
