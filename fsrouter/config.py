"""How the daemon and the CLI find FreeSWITCH and the database: a TOML file plus FSROUTER_* variables.

The routing rules are not here: they live in the database (`fsrouter settings`), so every node
of a cluster routes alike. This file is only about where things are.
"""
from __future__ import annotations

import ipaddress
import json
import math
import os
import re
import stat
import tomllib
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from urllib.parse import urlsplit

import platformdirs


def check_url(url: str) -> str:
    """The URL when it is an absolute http(s) URL with a host; ValueError otherwise (a webhook
    or CRM URL in the config, and every request the HTTP client makes)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises on a bad port)
    except ValueError as exc:
        raise ValueError(f"bad URL {url!r}: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"bad URL {url!r}: use http://host/... or https://host/...")
    if any(ch in url for ch in "\r\n\t "):
        raise ValueError(f"bad URL {url!r}: it must not contain spaces or line breaks")
    return url


DEFAULT_CONFIG_PATH = "/etc/fsrouter/fsrouter.toml"
LOG_FORMATS = ("auto", "json", "console")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class ConfigError(ValueError):
    """A config file or variable that cannot be used; the message is one line naming the key."""


@dataclass(frozen=True)
class CrmLookup:
    """One question to the CRM: GET `url` ({client}: the E.164 number, url-encoded; {digits}: the
    same without '+'), with `headers` (the token), reading the agent from the JSON `field`
    (a dotted path such as data.responsible.ext) as an extension or a CRM user id, and, when
    `name_field` is set, the client's name from the same answer (the agent's screen pop shows it)."""

    name: str
    url: str
    field: str
    # Kept out of repr(): it holds the CRM token.
    headers: dict = field(default_factory=dict, repr=False, hash=False, compare=True)
    name_field: str = ""


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
    # The CRM (docs/crm.md): who is responsible for a client, asked per call within crm_budget.
    crm_lookups: tuple[CrmLookup, ...] = ()
    crm_budget: float = 0.3  # seconds the whole lookup may take before routing goes on without it
    crm_cache_ttl: float = 30.0  # seconds an answer is reused
    crm_breaker_failures: int = 5  # failed lookups in a row that open the circuit breaker
    crm_breaker_reset: float = 30.0  # seconds the breaker stays open before one trial request
    # Events POSTed to each URL, signed with webhook_secret (HMAC-SHA256), through the outbox.
    webhook_urls: tuple[str, ...] = ()
    webhook_secret: str = field(default="", repr=False)
    webhook_timeout: float = 5.0  # seconds one delivery may take
    # The push API and /metrics: on when api_token is set.
    api_listen: str = "127.0.0.1:8085"
    api_token: str = field(default="", repr=False)
    # Where mod_cdr_csv writes fsrouter_in.csv / fsrouter_out.csv (conf/cdr_csv.conf.xml): calls
    # that ended while the listener was not subscribed are recovered from there. "": no catch-up.
    cdr_dir: str = ""
    # This daemon's name in the loss windows and CDR cursors (several nodes share one database);
    # "": the host name.
    node: str = ""
    # The agent's screen pop links to the client's card in the CRM: {client} (E.164) or {digits}.
    crm_card_url: str = ""


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


def _crm_lookups(key, value):
    if isinstance(value, str):  # from the environment: JSON, a list of objects
        try:
            value = json.loads(value)
        except ValueError:
            raise ConfigError(f"{key}: expected a JSON list of lookups, got {value!r}") from None
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{key}: expected a list of lookups ([[crm_lookups]] tables)")
    lookups = []
    for number, item in enumerate(value, start=1):
        where = f"{key}[{number}]"
        if isinstance(item, CrmLookup):
            lookups.append(item)
            continue
        if not isinstance(item, dict):
            raise ConfigError(f"{where}: expected a table with url and field")
        unknown = set(item) - {"name", "url", "field", "headers", "name_field"}
        if unknown:
            raise ConfigError(f"{where}: unknown key {min(unknown)!r}: one of name, url, field, headers, name_field")
        url = _number_url(f"{where}.url", _text(f"{where}.url", item.get("url", "")))
        path = _text(f"{where}.field", item.get("field", "")).strip()
        if not path:
            raise ConfigError(f"{where}.field: name the JSON field that holds the agent")
        headers = item.get("headers", {})
        if not isinstance(headers, dict) or not all(
                isinstance(k, str) and isinstance(v, str) and not _CONTROL.search(k + v) for k, v in headers.items()):
            raise ConfigError(f"{where}.headers: expected a table of text values without line breaks")
        name = _text(f"{where}.name", item.get("name", f"lookup{number}")).strip() or f"lookup{number}"
        name_field = _text(f"{where}.name_field", item.get("name_field", "")).strip()
        lookups.append(CrmLookup(name=name, url=url, field=path, headers=dict(headers), name_field=name_field))
    if len({lookup.name for lookup in lookups}) != len(lookups):
        raise ConfigError(f"{key}: two lookups have the same name")
    return tuple(lookups)


def _urls(key, value):
    urls = _list(key, value)
    for url in urls:
        try:
            check_url(url)
        except ValueError as exc:
            raise ConfigError(f"{key}: {exc}") from None
    return urls


def _card_url(key, value):
    text = _text(key, value).strip()
    return _number_url(key, text) if text else ""


def _number_url(key: str, url: str) -> str:
    """A URL template with {client} or {digits} where the client's number goes (a CRM lookup,
    the card link): a valid URL once they are filled in."""
    try:
        check_url(url.replace("{client}", "x").replace("{digits}", "1"))
    except ValueError as exc:
        raise ConfigError(f"{key}: {exc}") from None
    if "{client}" not in url and "{digits}" not in url:
        raise ConfigError(f"{key}: put {{client}} or {{digits}} where the number goes")
    return url


def _listen(key, value):
    text = _text(key, value).strip()
    host, sep, port = text.rpartition(":")
    if not sep or not host:
        raise ConfigError(f"{key}: expected host:port, e.g. 127.0.0.1:8085, got {value!r}")
    _port(key, port)
    return text


def _count(key, value):
    number = _int(key, value)
    if number < 1:
        raise ConfigError(f"{key}: must be 1 or more, got {value!r}")
    return number


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
    "crm_lookups": _crm_lookups,
    "crm_budget": _positive_seconds,
    "crm_cache_ttl": _seconds,
    "crm_breaker_failures": _count,
    "crm_breaker_reset": _positive_seconds,
    "webhook_urls": _urls,
    "webhook_secret": _text,
    "webhook_timeout": _positive_seconds,
    "api_listen": _listen,
    "api_token": _text,
    "cdr_dir": _text,
    "node": _text,
    "crm_card_url": _card_url,
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
    config = Config(**values)
    if config.webhook_urls and not config.webhook_secret:
        raise ConfigError("webhook_secret: set it when webhook_urls is set (every event is signed with it)")
    return config


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
