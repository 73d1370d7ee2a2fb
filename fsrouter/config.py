"""How the daemon and the CLI find FreeSWITCH and the database: a TOML file plus FSROUTER_* variables.

The routing rules are not here: they live in the database (`fsrouter settings`), so every node
of a cluster routes alike. This file is only about where things are.
"""
from __future__ import annotations

import ipaddress
import math
import os
import stat
import tomllib
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path

import platformdirs

DEFAULT_CONFIG_PATH = "/etc/fsrouter/fsrouter.toml"
LOG_FORMATS = ("auto", "json", "console")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


class ConfigError(ValueError):
    """A config file or variable that cannot be used; the message is one line naming the key."""


@dataclass(frozen=True)
class Config:
    database: str | None = None  # None: default_database_url()
    esl_host: str = "127.0.0.1"
    esl_port: int = 8021
    # Kept out of repr() so a logged or printed Config never shows it.
    esl_password: str = field(default="ClueCon", repr=False)
    listen_host: str = "127.0.0.1"
    listen_port: int = 8084
    allowed_peers: tuple[str, ...] = ("127.0.0.1", "::1")
    ignore_channels: tuple[str, ...] = ("loopback/",)
    decision_budget: float = 0.25  # seconds a routing decision may take before the group rings
    drain_timeout: float = 30.0  # seconds calls in flight get on shutdown
    log_format: str = "auto"
    log_level: str = "info"


def _text(key, value):
    if not isinstance(value, str):
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    return value


def _port(key, value):
    number = _int(key, value)
    if not 0 < number < 65536:
        raise ConfigError(f"{key}: {number} is not a TCP port (1-65535)")
    return number


def _int(key, value):
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            raise ConfigError(f"{key}: expected a whole number, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key}: expected a whole number, got {value!r}")
    return value


def _seconds(key, value):
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise ConfigError(f"{key}: expected a number of seconds, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key}: expected a number of seconds, got {value!r}")
    if isinstance(value, int) and value.bit_length() > 64:  # TOML allows it; float() would overflow
        raise ConfigError(f"{key}: {str(value)[:20]}... seconds is too large")
    if not math.isfinite(value) or value < 0:
        raise ConfigError(f"{key}: expected a number of seconds >= 0, got {value!r}")
    return float(value)


def _positive_seconds(key, value):
    seconds = _seconds(key, value)
    if seconds <= 0:
        raise ConfigError(f"{key}: must be above zero, got {value!r}")
    return seconds


def _list(key, value):
    if isinstance(value, str):  # from the environment: comma separated
        value = [item.strip() for item in value.split(",") if item.strip()]
    if not isinstance(value, (list, tuple)) or not all(isinstance(item, str) for item in value):
        raise ConfigError(f"{key}: expected a list of strings, got {value!r}")
    return tuple(value)


def _choice(options):
    def parse(key, value):
        text = _text(key, value).strip().lower()
        if text not in options:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(options)}")
        return text
    return parse


def _peers(key, value):
    peers = _list(key, value)
    for peer in peers:
        try:
            ipaddress.ip_network(peer, strict=False)
        except ValueError:
            raise ConfigError(f"{key}: {peer!r} is not an IP address or network (10.0.0.0/8)") from None
    return peers


def _database(key, value):
    text = _text(key, value).strip()
    return text or None


_PARSERS = {
    "database": _database,
    "esl_host": _text,
    "esl_port": _port,
    "esl_password": _text,
    "listen_host": _text,
    "listen_port": _port,
    "allowed_peers": _peers,
    "ignore_channels": _list,
    "decision_budget": _positive_seconds,
    "drain_timeout": _seconds,
    "log_format": _choice(LOG_FORMATS),
    "log_level": _choice(LOG_LEVELS),
}
assert set(_PARSERS) == {f.name for f in fields(Config)}


def _read_file(path: str) -> dict:
    try:
        with open(path, "rb") as handle:
            _refuse_if_open_to_others(path, os.fstat(handle.fileno()).st_mode)
            return tomllib.load(handle)
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path}: not UTF-8 text (byte {exc.start})") from None
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: {exc}".replace("\n", " ")) from None


def _refuse_if_open_to_others(path: str, mode: int) -> None:
    """As ssh does with a private key: the file holds the event-socket password, so a file that
    users other than its owner and group can read (or write) is refused, not read."""
    if mode & 0o006:
        raise ConfigError(f"config file {path} is open to others (mode {stat.S_IMODE(mode):04o}) and holds "
                          f"the event-socket password: chmod o-rwx {path}")


def load_config(path: str | None = None, environ=os.environ) -> Config:
    """The config from `path` (else DEFAULT_CONFIG_PATH when it exists), then FSROUTER_<KEY> variables.

    An unknown key in the file is an error (a typo must not silently fall back to a default);
    FSROUTER_* variables that name no key are left alone, since other tools may set their own.
    """
    if path is None and os.path.exists(DEFAULT_CONFIG_PATH):
        path = DEFAULT_CONFIG_PATH
    raw = _read_file(path) if path else {}
    values = {}
    for key, value in raw.items():
        if key not in _PARSERS:
            raise ConfigError(f"unknown config key {key!r} in {path}: one of {', '.join(_PARSERS)}")
        values[key] = _PARSERS[key](key, value)
    for key, parse in _PARSERS.items():
        variable = f"FSROUTER_{key.upper()}"
        if variable in environ:
            values[key] = parse(variable, environ[variable])
    return Config(**values)


def default_database_url(environ=os.environ) -> str:
    """SQLite in systemd's StateDirectory when run as the service, else in the user's data directory."""
    state = environ.get("STATE_DIRECTORY", "")
    if state:
        # systemd passes one path per StateDirectory= entry, colon separated; ours is the first.
        directory = Path(state.split(":")[0])
    else:
        directory = Path(platformdirs.user_data_dir("fsrouter", appauthor=False, ensure_exists=True))
    return f"sqlite:///{directory / 'fsrouter.db'}"


def config_defaults() -> dict:
    """Every key and its default, for documentation and the example file's test."""
    return {f.name: f.default for f in fields(Config) if f.default is not MISSING}
