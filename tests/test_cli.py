"""The `fsrouter` command line (driven through click's CliRunner) and the config it reads."""

import json
import sys
import types
from datetime import UTC, datetime, timedelta

import click
import pytest
from click.testing import CliRunner

from fsrouter import config as config_module
from fsrouter.cli import main
from fsrouter.config import Config, ConfigError, default_database_url, load_config
from fsrouter.store import Store

CLIENT = "+380501234567"


@pytest.fixture(autouse=True)
def cli_isolated_environment(monkeypatch, tmp_path):
    """No /etc/fsrouter/fsrouter.toml and no FSROUTER_* variables of the machine running the tests."""
    monkeypatch.setattr(config_module, "DEFAULT_CONFIG_PATH", str(tmp_path / "absent.toml"))
    for name in list(__import__("os").environ):
        if name.startswith("FSROUTER_") or name == "STATE_DIRECTORY":
            monkeypatch.delenv(name)


@pytest.fixture
def db_url(tmp_path):
    return f"sqlite:///{tmp_path / 'cli.db'}"


@pytest.fixture
def fsrouter(db_url):
    """Run `fsrouter --db <tmp db> ARGS...`; returns click's Result."""
    runner = CliRunner()

    def run(*args, input=None):
        return runner.invoke(main, ["--db", db_url, *args], input=input)

    return run


@pytest.fixture
def office(fsrouter):
    """Group sales with agents 1001 (Anna) and 1002 (Bohdan, priority 2)."""
    assert fsrouter("group", "add", "sales").exit_code == 0
    assert fsrouter("agent", "add", "1001", "--name", "Anna", "--group", "sales").exit_code == 0
    assert (
        fsrouter("agent", "add", "1002", "--name", "Bohdan", "--group", "sales", "--priority", "2").exit_code
        == 0
    )
    return fsrouter


def ok(result) -> str:
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


def fails_in_one_line(result, *fragments, code=None) -> str:
    """The command failed with exactly one line on stderr, `Error: ...`, and no traceback."""
    assert result.exit_code != 0, result.output
    if code is not None:
        assert result.exit_code == code
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    path.chmod(0o600)  # a config file open to others is refused
    return str(path)


def all_commands(group=main, path=()):
    for name, command in group.commands.items():
        yield path + (name,)
        if isinstance(command, click.Group):
            yield from all_commands(command, path + (name,))


# -- every command -----------------------------------------------------------------------------

EXPECTED_COMMANDS = {
    ("agent",),
    ("agent", "add"),
    ("agent", "list"),
    ("agent", "disable"),
    ("agent", "enable"),
    ("agent", "rm"),
    ("group",),
    ("group", "add"),
    ("group", "list"),
    ("group", "rm"),
    ("binding",),
    ("binding", "set"),
    ("binding", "show"),
    ("binding", "rm"),
    ("binding", "list"),
    ("binding", "import"),
    ("binding", "export"),
    ("settings",),
    ("settings", "show"),
    ("settings", "set"),
    ("calls",),
    ("calls", "import"),
    ("calls", "list"),
    ("calls", "missed"),  # issue 4
    ("calls", "gaps"),  # issue 13: loss windows and what the CDR catch-up recovered
    ("report",),  # issue 4
    ("agent", "dnd"),  # issue 4: presence, hours, clients, handover
    ("group", "set"),
    ("client",),
    ("client", "link"),
    ("client", "unlink"),
    ("client", "show"),
    ("number",),
    ("number", "shared"),
    ("binding", "block"),
    ("binding", "unblock"),
    ("binding", "blocks"),
    ("agent", "set"),  # issue 5
    ("outbox",),  # issue 5
    ("outbox", "list"),
    ("outbox", "retry"),
    ("outbox", "purge"),
    ("db",),  # issue 7
    ("db", "backup"),
    ("db", "restore"),
    ("route",),
    ("run",),
    ("demo",),
    ("agent", "link"),  # issue 12: the agent's screen pop and the office board
    ("board",),
    ("board", "link"),
}


def test_the_command_tree_is_exactly_the_one_in_the_issue():
    assert set(all_commands()) == EXPECTED_COMMANDS


@pytest.mark.parametrize("path", sorted(EXPECTED_COMMANDS))
def test_every_command_has_help_with_an_example(path):
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0
    assert "Example:" in result.stdout and "fsrouter " in result.stdout.split("Example:")[1]


# -- agents and groups -------------------------------------------------------------------------


def test_agent_add_and_list_as_json(office):
    agents = json.loads(ok(office("agent", "list", "--json")))
    assert agents == [
        {
            "ext": "1001",
            "name": "Anna",
            "dial_string": "user/1001@${domain_name}",
            "priority": 100,
            "enabled": True,
            "groups": ["sales"],
        },
        {
            "ext": "1002",
            "name": "Bohdan",
            "dial_string": "user/1002@${domain_name}",
            "priority": 2,
            "enabled": True,
            "groups": ["sales"],
        },
    ]
    assert "Anna" in ok(office("agent", "list"))


def test_agent_add_with_a_dial_string(fsrouter):
    ok(fsrouter("agent", "add", "1003", "--name", "Olena", "--dial-string", "sofia/gateway/gw/380441234567"))
    assert (
        json.loads(ok(fsrouter("agent", "list", "--json")))[0]["dial_string"]
        == "sofia/gateway/gw/380441234567"
    )


def agent_row(fsrouter, ext: str) -> dict:
    (row,) = [a for a in json.loads(ok(fsrouter("agent", "list", "--json"))) if a["ext"] == ext]
    return row


def test_agent_set_changes_name_priority_dial_string_and_groups(office):
    ok(office("group", "add", "support"))
    said = ok(office("agent", "set", "1001", "--name", "Anna K.", "--priority", "1", "--dial-string",
                     "sofia/gateway/gw/380441234567", "--group", "support"))
    assert said.strip() == ("agent 1001: name Anna K., priority 1, dial string sofia/gateway/gw/380441234567, "
                            "groups support")
    assert agent_row(office, "1001") == {"ext": "1001", "name": "Anna K.", "dial_string": "sofia/gateway/gw/380441234567",
                                         "priority": 1, "enabled": True, "groups": ["support"]}
    ok(office("agent", "set", "1001", "--add-group", "sales", "--remove-group", "support"))
    assert agent_row(office, "1001")["groups"] == ["sales"]
    ok(office("agent", "set", "1001", "--dial-string", ""))  # back to the default
    assert agent_row(office, "1001")["dial_string"] == "user/1001@${domain_name}"
    assert agent_row(office, "1002")["name"] == "Bohdan"  # nobody else changed


@pytest.mark.parametrize("args, fragment", [
    (("--name", "Anna K.", "--group", "nosuch"), "unknown group 'nosuch'"),
    (("--name", "Anna K.", "--dial-string", "user/1001\nuuid_kill x"), "dial string"),
    (("--name", "Anna K.", "--crm-id", "x" * 200), "CRM id"),
])
def test_agent_set_changes_nothing_when_one_value_is_bad(office, args, fragment):
    before = agent_row(office, "1001")
    fails_in_one_line(office("agent", "set", "1001", *args), fragment)
    assert agent_row(office, "1001") == before


def test_agent_set_of_an_unknown_agent_or_with_nothing_to_change_is_one_line(office):
    fails_in_one_line(office("agent", "set", "1009", "--name", "X"), "1009")
    fails_in_one_line(office("agent", "set", "1001"), "nothing to change", code=2)
    fails_in_one_line(office("agent", "set", "1001", "--group", "sales", "--add-group", "sales"), "not both", code=2)


def test_agent_disable_enable_and_rm(office):
    ok(office("agent", "disable", "1001"))
    assert not json.loads(ok(office("agent", "list", "--json")))[0]["enabled"]
    ok(office("agent", "enable", "1001"))
    assert json.loads(ok(office("agent", "list", "--json")))[0]["enabled"]
    ok(office("agent", "rm", "1001"))
    assert [a["ext"] for a in json.loads(ok(office("agent", "list", "--json")))] == ["1002"]


@pytest.mark.parametrize(
    "args, fragment",
    [
        (("agent", "add", "1001", "--name", "Again"), "already exists"),
        (("agent", "add", "1005", "--name", "X", "--group", "nope"), "unknown group 'nope'"),
        (("agent", "add", "10;05", "--name", "X"), "bad extension"),
        (
            ("agent", "add", "1005", "--name", "X", "--dial-string", "user/1\napi hupall"),
            "control characters",
        ),
        (("agent", "disable", "9999"), "unknown agent '9999'"),
        (("agent", "enable", "9999"), "unknown agent '9999'"),
        (("agent", "rm", "9999"), "unknown agent '9999'"),
        (("group", "add", "sales"), "already exists"),
        (("group", "rm", "nope"), "unknown group 'nope'"),
        (("group", "add", "x", "--ring-timeout", "soon"), "bad duration"),
    ],
)
def test_bad_agent_and_group_input_is_a_one_line_error(office, args, fragment):
    fails_in_one_line(office(*args), fragment, code=1)


def test_usage_errors_are_one_line_too(office):
    fails_in_one_line(office("group", "add", "x", "--strategy", "round-robin"), "--strategy", code=2)
    fails_in_one_line(office("agent", "add", "1005"), "--name", code=2)
    fails_in_one_line(office("nosuchcommand"), "No such command", code=2)
    fails_in_one_line(CliRunner().invoke(main, ["--bogus", "agent", "list"]), "--bogus", code=2)


def test_group_add_list_and_rm(office):
    ok(
        office(
            "group",
            "add",
            "support",
            "--strategy",
            "sequential",
            "--sticky-scope",
            "members",
            "--ring-timeout",
            "15s",
        )
    )
    groups = json.loads(ok(office("group", "list", "--json")))
    assert groups == [
        {
            "name": "sales",
            "strategy": "simultaneous",
            "sticky_scope": "any",
            "ring_timeout": 30.0,
            "members": ["1002", "1001"],
            "supervisors": [],
        },
        {
            "name": "support",
            "strategy": "sequential",
            "sticky_scope": "members",
            "ring_timeout": 15.0,
            "members": [],
            "supervisors": [],
        },
    ]
    ok(office("group", "rm", "support"))
    assert [g["name"] for g in json.loads(ok(office("group", "list", "--json")))] == ["sales"]
    assert "sales" in ok(office("group", "list"))


# -- bindings ----------------------------------------------------------------------------------


def test_binding_set_show_and_rm(office):
    ok(office("binding", "set", "0501234567", "1001", "--expires", "7d"))
    shown = json.loads(ok(office("binding", "show", "380501234567", "--json")))
    assert shown["client"] == CLIENT
    (manual,) = shown["bindings"]
    assert (manual["agent"], manual["source"], manual["why"], manual["state"]) == (
        "1001",
        "manual",
        "set by hand",
        "active",
    )
    expires = datetime.fromisoformat(manual["expires_at"])
    assert timedelta(days=6, hours=23) < expires - datetime.now(UTC) <= timedelta(days=7)
    assert "set by hand" in ok(office("binding", "show", "0501234567"))
    assert "removed 1 binding" in ok(office("binding", "rm", "0501234567"))
    assert json.loads(ok(office("binding", "show", CLIENT, "--json")))["bindings"] == []


def test_binding_set_to_a_disabled_agent_warns_on_stderr(office):
    ok(office("agent", "disable", "1001"))
    result = office("binding", "set", "0501234567", "1001")
    assert result.exit_code == 0 and "bound +380501234567 to 1001" in result.stdout
    assert "binding.agent_disabled" in result.stderr and "warning" in result.stderr
    assert office("binding", "set", "0501234567", "1002").stderr == ""


def test_binding_rm_learned_or_manual_only(office, tmp_path):
    ok(office("binding", "set", CLIENT, "1001"))
    ok(
        office(
            "calls",
            "import",
            write(
                tmp_path,
                "h.csv",
                "started_at,direction,client,agent,talk_seconds\n"
                f"{datetime.now(UTC).isoformat()},inbound,{CLIENT},1002,60\n",
            ),
        )
    )
    ok(office("binding", "rm", CLIENT, "--learned"))
    assert [b["source"] for b in json.loads(ok(office("binding", "show", CLIENT, "--json")))["bindings"]] == [
        "manual"
    ]
    ok(office("binding", "rm", CLIENT, "--manual"))
    assert json.loads(ok(office("binding", "show", CLIENT, "--json")))["bindings"] == []


@pytest.mark.parametrize(
    "args, fragment",
    [
        (("binding", "set", "0501234567", "9999"), "unknown agent '9999'"),
        (("binding", "set", "12", "1001"), "internal extension"),
        (("binding", "set", "hello", "1001"), "not a phone number"),
        (("binding", "set", "0501234567", "1001", "--expires", "fortnight"), "bad duration"),
        (("binding", "set", "0501234567", "1001", "--expires", "0"), "above zero"),
        (("binding", "show", "not-a-number"), "not a phone number"),
        (("binding", "import", "/nonexistent/crm.csv"), "No such file"),
    ],
)
def test_bad_binding_input_is_a_one_line_error(office, args, fragment):
    fails_in_one_line(office(*args), fragment, code=1)


def test_binding_list_by_agent_and_stale(office):
    ok(office("agent", "add", "1003", "--name", "Leaving"))
    ok(office("binding", "set", "0501234567", "1001"))
    ok(office("binding", "set", "0671112233", "1002"))
    ok(office("binding", "set", "0931234567", "1003"))
    ok(office("agent", "rm", "1003"))
    ok(office("agent", "disable", "1002"))
    everything = json.loads(ok(office("binding", "list", "--json")))
    assert [b["client"] for b in everything] == ["+380501234567", "+380671112233", "+380931234567"]
    assert [b["client"] for b in json.loads(ok(office("binding", "list", "--agent", "1001", "--json")))] == [
        CLIENT
    ]
    stale = json.loads(ok(office("binding", "list", "--stale", "--json")))
    assert [(b["agent"], b["state"]) for b in stale] == [
        ("1002", "agent_disabled"),
        ("1003", "agent_unknown"),
    ]
    assert "agent_unknown" in ok(office("binding", "list", "--stale"))


def test_binding_import_then_export(office, tmp_path):
    crm = write(tmp_path, "crm.csv", "\ufeffclient,agent\n0501234567,1001\n'+380671112233,1002\n")
    assert "imported 2 bindings" in ok(office("binding", "import", crm))
    assert ok(office("binding", "export")) == "client,agent\n'+380501234567,1001\n'+380671112233,1002\n"
    out = tmp_path / "out.csv"
    ok(office("binding", "export", "-o", str(out)))
    assert out.read_text().splitlines()[1] == "'+380501234567,1001"


def test_binding_import_with_a_bad_line_names_it_and_imports_nothing(office, tmp_path):
    crm = write(tmp_path, "crm.csv", "client,agent\n0501234567,1001\n0671112233,1002\n0931234567,7777\n")
    fails_in_one_line(office("binding", "import", crm), "line 4", "unknown agent '7777'")
    assert json.loads(ok(office("binding", "list", "--json"))) == []


# -- settings ----------------------------------------------------------------------------------


def test_settings_show_the_defaults_and_set_a_key(fsrouter):
    assert json.loads(ok(fsrouter("settings", "show", "--json"))) == {
        "lookback": "30d",
        "sticky_timeout": "20s",
        "min_talk": "10s",
        "mode": "both",
        "learn_from": "both",
        "outbound_requires_answer": "false",
        "fallback_excludes_sticky": "false",
        "default_region": "UA",
        "sources": "crm,manual,auto",
        "max_sticky_misses": "0",
    }
    assert ok(fsrouter("settings", "set", "sticky_timeout", "25s")).strip() == "sticky_timeout = 25s"
    assert json.loads(ok(fsrouter("settings", "show", "--json")))["sticky_timeout"] == "25s"
    table = ok(fsrouter("settings", "show"))
    assert all(f"\n{key} " in table for key in ("lookback", "sticky_timeout", "default_region"))
    assert "25s" in table


@pytest.mark.parametrize(
    "args, fragment",
    [
        (("settings", "set", "lookback", "a while"), "bad duration"),
        (("settings", "set", "mode", "sometimes"), "bad value"),
        (("settings", "set", "outbound_requires_answer", "maybe"), "bad boolean"),
    ],
)
def test_bad_settings_are_a_one_line_error(fsrouter, args, fragment):
    fails_in_one_line(fsrouter(*args), fragment, code=1)
    assert json.loads(ok(fsrouter("settings", "show", "--json")))["lookback"] == "30d"


def test_an_unknown_setting_is_a_one_line_usage_error(fsrouter):
    fails_in_one_line(fsrouter("settings", "set", "colour", "blue"), "colour", code=2)


# -- calls -------------------------------------------------------------------------------------

HISTORY = (
    "started_at,direction,client,agent,talk_seconds\n"
    "2024-05-01T09:30:00Z,inbound,0501234567,1001,95\n"
    "2024-05-01T10:00:00Z,inbound,0501234567,1002,4\n"
    "2024-05-02T10:00:00Z,outbound,0671112233,1002,0\n"
    "2024-05-02T11:00:00Z,inbound,0931234567,,0\n"
)


def test_calls_import_warms_bindings_that_route(office, tmp_path):
    out = ok(office("calls", "import", write(tmp_path, "history.csv", HISTORY)))
    assert "imported 4 calls, 2 changed a learned binding" in out
    plan = json.loads(
        ok(office("route", "0501234567", "--group", "sales", "--at", "2024-05-10T00:00:00Z", "--json"))
    )
    assert (plan["agent"], plan["source"], plan["reason"]) == ("1001", "auto", "auto")
    outbound = json.loads(
        ok(office("route", "0671112233", "--group", "sales", "--at", "2024-05-10T00:00:00Z", "--json"))
    )
    assert outbound["agent"] == "1002"


def test_calls_import_with_a_bad_line_names_it_and_imports_nothing(office, tmp_path):
    bad = HISTORY + "2024-05-03T10:00:00Z,inbound,0501234567,1001,ninety\n"
    fails_in_one_line(
        office("calls", "import", write(tmp_path, "history.csv", bad)), "line 6", "talk_seconds"
    )
    assert json.loads(ok(office("calls", "list", "--json"))) == []
    assert json.loads(ok(office("binding", "list", "--json"))) == []


def test_calls_list_filters_and_prints_json(office, tmp_path):
    recent = datetime.now(UTC) - timedelta(hours=1)
    ok(
        office(
            "calls",
            "import",
            write(tmp_path, "history.csv", HISTORY + f"{recent.isoformat()},inbound,0501234567,1001,30\n"),
        )
    )
    everything = json.loads(ok(office("calls", "list", "--json")))
    assert len(everything) == 5 and everything[0]["talk_seconds"] == 30.0  # newest first
    assert set(everything[0]) >= {
        "uuid",
        "started_at",
        "direction",
        "client",
        "agent",
        "talk_seconds",
        "outcome",
    }
    assert len(json.loads(ok(office("calls", "list", "--since", "1d", "--json")))) == 1
    assert len(json.loads(ok(office("calls", "list", "--since", "2024-05-02T00:00:00Z", "--json")))) == 3
    mine = json.loads(ok(office("calls", "list", "--client", "0501234567", "--json")))
    assert {c["client"] for c in mine} == {CLIENT} and len(mine) == 3
    assert len(json.loads(ok(office("calls", "list", "--limit", "2", "--json")))) == 2
    assert "+380931234567" in ok(office("calls", "list"))
    fails_in_one_line(office("calls", "list", "--since", "last tuesday"), "--since")


# -- route -------------------------------------------------------------------------------------


def test_route_json_has_the_documented_keys(office):
    ok(office("binding", "set", "0501234567", "1001"))
    plan = json.loads(ok(office("route", "0501234567", "--group", "sales", "--json")))
    assert {"client", "group", "agent", "source", "reason", "timeout", "fallback"} <= set(plan)
    assert (
        plan["client"],
        plan["group"],
        plan["agent"],
        plan["source"],
        plan["reason"],
        plan["timeout"],
    ) == (CLIENT, "sales", "1001", "manual", "manual", 20.0)
    assert [leg["agent"] for leg in plan["fallback"]] == ["1002", "1001"]


def test_route_for_a_person_says_who_rings_and_why(office):
    ok(office("binding", "set", "0501234567", "1001"))
    text = ok(office("route", "0501234567", "--group", "sales"))
    assert "1001 (manual binding), rings 20s" in text
    assert "1002, 1001" in text
    assert "the client has no binding" in ok(office("route", "0671112233", "--group", "sales"))


def test_route_at_shows_the_lookback_window(office, tmp_path):
    ok(
        office(
            "calls",
            "import",
            write(
                tmp_path,
                "h.csv",
                "started_at,direction,client,agent,talk_seconds\n"
                "2024-05-01T09:30:00Z,inbound,0501234567,1002,60\n",
            ),
        )
    )
    inside = json.loads(
        ok(office("route", CLIENT, "--group", "sales", "--at", "2024-05-31T09:31:00Z", "--json"))
    )
    outside = json.loads(
        ok(office("route", CLIENT, "--group", "sales", "--at", "2024-05-31T09:32:00Z", "--json"))
    )
    assert (inside["agent"], outside["agent"], outside["reason"]) == ("1002", None, "expired")
    ok(office("settings", "set", "lookback", "0"))
    forever = json.loads(
        ok(office("route", CLIENT, "--group", "sales", "--at", "2030-01-01T00:00:00Z", "--json"))
    )
    assert forever["agent"] == "1002"


@pytest.mark.parametrize(
    "args, fragment",
    [
        (("route", "0501234567", "--group", "nope"), "unknown group 'nope'"),
        (("route", "05O1234567", "--group", "sales"), "not a phone number"),
        (("route", "0501234567", "--group", "sales", "--at", "noon"), "bad time"),
    ],
)
def test_bad_route_input_is_a_one_line_error(office, args, fragment):
    fails_in_one_line(office(*args), fragment, code=1)


# -- the database and the config ---------------------------------------------------------------


def test_an_unreachable_database_is_a_one_line_error():
    result = CliRunner().invoke(main, ["--db", "postgresql://nobody@127.0.0.1:1/x", "agent", "list"])
    fails_in_one_line(result, "cannot open database")


def test_the_database_comes_from_db_then_environment_then_config_file(tmp_path, monkeypatch):
    urls = {name: f"sqlite:///{tmp_path / (name + '.db')}" for name in ("flag", "env", "file")}
    config_file = write(tmp_path, "fsrouter.toml", f'database = "{urls["file"]}"\n')
    runner = CliRunner()
    ok(runner.invoke(main, ["--config", config_file, "group", "add", "from_file"]))
    monkeypatch.setenv("FSROUTER_DATABASE", urls["env"])
    ok(runner.invoke(main, ["--config", config_file, "group", "add", "from_env"]))
    ok(runner.invoke(main, ["--config", config_file, "--db", urls["flag"], "group", "add", "from_flag"]))
    for name, group in (("file", "from_file"), ("env", "from_env"), ("flag", "from_flag")):
        with Store.open(urls[name]) as store:
            assert list(store.groups()) == [group]


def test_a_bad_config_file_is_a_one_line_error(tmp_path):
    bad = write(tmp_path, "fsrouter.toml", "esl_prot = 8021\n")
    fails_in_one_line(CliRunner().invoke(main, ["--config", bad, "agent", "list"]), "esl_prot")


def test_run_and_demo_hand_over_to_their_modules(monkeypatch, tmp_path, db_url):
    seen = {}
    monkeypatch.setitem(
        sys.modules,
        "fsrouter.daemon",
        types.SimpleNamespace(run_daemon=lambda config, *rest: seen.setdefault("run", config) and 0),
    )
    monkeypatch.setitem(
        sys.modules,
        "fsrouter.demo",
        types.SimpleNamespace(run_demo=lambda speed, **pages: seen.setdefault("demo", speed)),
    )
    ok(CliRunner().invoke(main, ["--db", db_url, "run"]))
    ok(CliRunner().invoke(main, ["demo", "--speed", "4"]))
    assert seen["run"].database == db_url and seen["demo"] == 4.0


def test_load_config_defaults_without_a_file(tmp_path):
    assert load_config(None, environ={}) == Config()


def test_load_config_reads_the_file_and_the_environment_wins(tmp_path):
    path = write(
        tmp_path,
        "fsrouter.toml",
        'esl_port = 9000\nesl_password = "s3cret"\nallowed_peers = ["10.0.0.1"]\n'
        'decision_budget = 0.5\nlog_format = "json"\n',
    )
    config = load_config(
        path,
        environ={
            "FSROUTER_ESL_PORT": "9100",
            "FSROUTER_IGNORE_CHANNELS": "loopback/, sofia/x",
            "FSROUTER_DRAIN_TIMEOUT": "12.5",
            "FSROUTER_DATABASE": "sqlite:///x.db",
        },
    )
    assert (config.esl_port, config.esl_password, config.allowed_peers, config.decision_budget) == (
        9100,
        "s3cret",
        ("10.0.0.1",),
        0.5,
    )
    assert (config.ignore_channels, config.drain_timeout, config.database, config.log_format) == (
        ("loopback/", "sofia/x"),
        12.5,
        "sqlite:///x.db",
        "json",
    )


def test_load_config_reads_the_default_path_when_it_exists(tmp_path, monkeypatch):
    path = write(tmp_path, "etc.toml", "listen_port = 9999\n")
    monkeypatch.setattr(config_module, "DEFAULT_CONFIG_PATH", path)
    assert load_config(None, environ={}).listen_port == 9999


@pytest.mark.parametrize(
    "text, environ, key",
    [
        ("esl_prot = 1\n", {}, "esl_prot"),
        ("esl_port = 70000\n", {}, "esl_port"),
        ('esl_port = "many"\n', {}, "esl_port"),
        ("decision_budget = 0\n", {}, "decision_budget"),
        ("allowed_peers = 1\n", {}, "allowed_peers"),
        ('log_format = "xml"\n', {}, "log_format"),
        ("esl_port = \n", {}, "fsrouter.toml"),
        ("", {"FSROUTER_LISTEN_PORT": "http"}, "FSROUTER_LISTEN_PORT"),
        ("", {"FSROUTER_DRAIN_TIMEOUT": "-1"}, "FSROUTER_DRAIN_TIMEOUT"),
    ],
)
def test_unknown_keys_and_bad_values_are_config_errors_naming_the_key(tmp_path, text, environ, key):
    path = write(tmp_path, "fsrouter.toml", text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ=environ)
    assert key in str(caught.value) and "\n" not in str(caught.value)


def test_a_missing_config_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(str(tmp_path / "nope.toml"), environ={})


def test_the_password_never_shows_in_the_config_repr():
    assert "hunter2" not in repr(Config(esl_password="hunter2"))


def test_the_default_database_is_in_the_systemd_state_directory_or_the_user_data_directory(
    tmp_path, monkeypatch
):
    assert (
        default_database_url({"STATE_DIRECTORY": "/var/lib/fsrouter"})
        == "sqlite:////var/lib/fsrouter/fsrouter.db"
    )
    monkeypatch.setattr(config_module.platformdirs, "user_data_dir", lambda *a, **k: str(tmp_path / "data"))
    assert default_database_url({}) == f"sqlite:///{tmp_path / 'data' / 'fsrouter.db'}"


def test_the_example_config_names_every_key_with_its_default(tmp_path):
    import tomllib
    from pathlib import Path

    example = Path(config_module.__file__).with_name("fsrouter.example.toml")
    text = example.read_text()
    for key in config_module.config_defaults():
        assert f"{key} =" in text, key
    installed = Path(write(tmp_path, "fsrouter.toml", text))  # as `make install` puts it: not 0644
    assert load_config(str(installed), environ={}) == Config()
    assert tomllib.loads(text)  # it parses
