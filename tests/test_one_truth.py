"""One truth: the same office situations through every surface that says who owns a client.

Each row of SITUATIONS is set up in a fresh database and then asked of: the routing decision
(the push API's /v1/route, i.e. the daemon's Service with presence, and `fsrouter route`),
`binding show --group`, `binding list --stale`, the push API's binding, `calls missed`, the
report, and the webhook of a missed call. Every surface must give the row's answer, so they
agree with each other. They agree because each asks core/ownership.decide: the last test breaks
that one function and the same table fails on every surface at once.

What a surface cannot know it does not claim (and says so in its help): the CLI sees no
presence (an offline or busy phone shows `active` there); `binding list` is without a group
(a reason tied to one group or to the hour is not a stale binding).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from io import BytesIO

import pytest
from click.testing import CliRunner
from http_fakes import FakeCrm

from fsrouter.binding_path import BindingPath
from fsrouter.cli import main
from fsrouter.config import load_config
from fsrouter.core import live, ownership
from fsrouter.core.model import INBOUND, OUTBOUND, SCOPE_MEMBERS, Call
from fsrouter.core.ownership import BUSY, OFFLINE
from fsrouter.http.api import Api, RateLimit
from fsrouter.http.crm import CrmClient
from fsrouter.http.outbox import LiveEvents, Outbox
from fsrouter.service import Service
from fsrouter.store import Store

CLIENT = "+380501234567"
LINKED = "+380671112233"  # another number of the same client (number link)
TOKEN = "t0k"


def _hours_excluding_now() -> str:
    """Sticky hours that are not now: a one-hour window twelve hours away."""
    start = (datetime.now(UTC) + timedelta(hours=12)).hour
    return f"{start:02d}:00-{(start + 1) % 24 or 24:02d}:00"


class Office:
    """A fresh database with groups sales (sticky scope `members`: 1001-1003) and support
    (2001), the daemon's Service, the push API over it (presence injected, as the daemon does), and the CLI."""

    def __init__(self, tmp_path, crm: FakeCrm | None = None):
        self.url = f"sqlite:///{tmp_path / 'truth.db'}"
        self.store = Store.open(self.url)
        self.store.webhook_urls = ("http://127.0.0.1:9/hook",)
        self.store.add_group("sales", sticky_scope=SCOPE_MEMBERS)
        self.store.add_group("support")
        for ext in ("1001", "1002", "1003"):
            self.store.add_agent(ext, f"Agent {ext}", groups=["sales"])
        self.store.add_agent("2001", "Support", groups=["support"])
        self.availability: dict[str, str] = {}
        self.service = Service(self.store, cache_ttl=0.0)
        self.config_path = tmp_path / "fsrouter.toml"
        lookup = (f'[[crm_lookups]]\nname = "lead"\nurl = "{crm.lookup_url("lead")}"\n'
                  f'field = "responsible.ext"\n') if crm else ""
        self.config_path.write_text(f'database = "{self.url}"\n{lookup}')
        self.config_path.chmod(0o600)
        self.crm = CrmClient.from_config(load_config(str(self.config_path)))
        self.api = Api(self.service, TOKEN, crm=self.crm, rate_limit=RateLimit(rate=1e6, burst=1e6),
                       presence=lambda agents, wait_for: dict(self.availability))
        self.runner = CliRunner()

    def cli(self, *args) -> str:
        result = self.runner.invoke(main, ["--config", str(self.config_path), *args])
        assert result.exit_code == 0, (args, result.output)
        return result.stdout

    def get(self, path: str, query: str = "", method: str = "GET", body: dict | None = None) -> tuple[int, dict | None]:
        status = []
        raw = json.dumps(body).encode() if body is not None else b""
        environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query,
                   "HTTP_AUTHORIZATION": f"Bearer {TOKEN}", "REMOTE_ADDR": "127.0.0.1",
                   "CONTENT_TYPE": "application/json", "CONTENT_LENGTH": str(len(raw)),
                   "wsgi.input": BytesIO(raw)}
        body = b"".join(self.api(environ, lambda s, h: status.append(int(s.split()[0]))))
        return status[0], json.loads(body) if body else None

    def close(self) -> None:
        self.store.close()


@dataclass(frozen=True)
class Situation:
    name: str
    setup: callable  # (office) -> None
    route: tuple[str | None, str]  # (sticky agent, reason) of a call now, as the daemon decides
    show: str  # binding show --group's STATE of the binding (the CLI sees no presence)
    listed: str | None  # binding list's STATE, None when the client has no stored binding
    stale: bool  # listed by binding list --stale
    owner: str | None  # whose missed call it is: calls missed, the report, the webhook
    source: str = "manual"
    number: str = CLIENT
    group: str = "sales"
    cli_route: tuple[str | None, str] | None = None  # `fsrouter route` when it differs (no presence)
    answers: dict = field(default_factory=dict)  # the CRM's


def manual(ext, **kw):
    def setup(office):
        BindingPath(office.store).set_manual_binding(CLIENT, ext, kw.get("at", datetime.now(UTC)),
                                        expires_at=kw.get("expires_at"))
    return setup


def then(*steps):
    def setup(office):
        for step in steps:
            step(office)
    return setup


def learned(ext):
    def setup(office):
        now = datetime.now(UTC)
        office.service.record_call(Call(INBOUND, CLIENT, ext, now - timedelta(minutes=30),
                                        now - timedelta(minutes=28), talk_seconds=120, answered=True,
                                        group="sales", uuid="learned-call"))
    return setup


long_ago = datetime.now(UTC) - timedelta(days=3)

SITUATIONS = [
    Situation("manual_binding_routes", manual("1001"), ("1001", "manual"), "active", "active", False, "1001"),
    Situation("learned_binding_routes", learned("1002"), ("1002", "auto"), "active", "active", False, "1002",
              source="auto"),
    Situation("expired", manual("1001", at=long_ago, expires_at=long_ago + timedelta(days=1)),
              (None, "expired"), "expired", "expired", True, None),
    Situation("agent_disabled", then(manual("1001"), lambda o: o.store.set_agent_enabled("1001", False)),
              (None, "agent_disabled"), "agent_disabled", "agent_disabled", True, None),
    Situation("agent_unknown", then(manual("1001"), lambda o: o.store.remove_agent("1001")),
              (None, "agent_unknown"), "agent_unknown", "agent_unknown", True, None),
    Situation("agent_blocked", then(manual("1001"), lambda o: BindingPath(o.store).block(CLIENT, "1001")),
              (None, "agent_blocked"), "agent_blocked", "agent_blocked", True, None),
    Situation("shared_number", then(manual("1001"), lambda o: o.store.set_shared(CLIENT, True)),
              (None, "shared_number"), "shared_number", "shared_number", True, None),
    Situation("mode", then(learned("1002"), lambda o: o.store.set_setting("mode", "manual")),
              (None, "mode"), "mode", "mode", True, None, source="auto"),
    # 2001 is no member of sales (scope `members`) but routes for support: not stale.
    Situation("outside_scope", manual("2001"), (None, "outside_scope"), "outside_scope", "active", False,
              None),
    Situation("outside_hours",
              then(manual("1001"), lambda o: o.store.set_group_options("sales", sticky_hours=_hours_excluding_now())),
              (None, "outside_hours"), "outside_hours", "active", False, "1001"),
    Situation("agent_dnd", then(manual("1001"), lambda o: o.store.set_agent_dnd("1001", True)),
              (None, "agent_dnd"), "agent_dnd", "agent_dnd", False, "1001"),
    Situation("agent_offline", then(manual("1001"), lambda o: o.availability.update({"1001": OFFLINE})),
              (None, "agent_offline"), "active", "active", False, "1001", cli_route=("1001", "manual")),
    Situation("agent_busy", then(manual("1001"), lambda o: o.availability.update({"1001": BUSY})),
              (None, "agent_busy"), "active", "active", False, "1001", cli_route=("1001", "manual")),
    # The manual binding fails for good; the learned one routes: the client is 1002's.
    Situation("manual_fails_learned_routes",
              then(manual("1001"), learned("1002"), lambda o: o.store.set_agent_enabled("1001", False)),
              ("1002", "auto"), "agent_disabled", "agent_disabled", True, "1002"),
    # A call from a number linked to the client: the client's binding, the client's agent.
    Situation("linked_number", then(manual("1001"), lambda o: BindingPath(o.store).link_numbers(CLIENT, LINKED)),
              ("1001", "manual"), "active", "active", False, "1001", number=LINKED),
    Situation("linked_number_blocked",
              then(manual("1001"), lambda o: BindingPath(o.store).link_numbers(CLIENT, LINKED),
                   lambda o: BindingPath(o.store).block(LINKED, "1001")),
              (None, "agent_blocked"), "agent_blocked", "agent_blocked", True, None, number=LINKED),
    # The CRM names the responsible agent: asked per call, never stored (binding list has no row).
    Situation("crm", lambda o: None, ("1003", "crm"), "active", None, False, "1003", source="crm",
              answers={("lead", CLIENT): "1003"}),
    Situation("crm_names_a_disabled_agent_manual_routes",
              then(manual("1001"), lambda o: o.store.set_agent_enabled("1003", False)),
              ("1001", "manual"), "active", "active", False, "1001",
              answers={("lead", CLIENT): "1003"}),
]


def observe(office: Office, s: Situation) -> dict:
    """What every surface says of the situation: the same keys as `expected`."""
    seen = {}
    status, plan = office.get("/v1/route", f"client={s.number}&group={s.group}")
    assert status == 200, plan
    seen["route"] = (plan["agent"], plan["reason"])
    cli_plan = json.loads(office.cli("route", s.number, "--group", s.group, "--json"))
    seen["cli_route"] = (cli_plan["agent"], cli_plan["reason"])
    shown = json.loads(office.cli("binding", "show", s.number, "--group", s.group, "--json"))
    states = {row["source"]: row["state"] for row in shown["bindings"]}
    seen["show"] = states.get(s.source)
    seen["show_rings_first"] = shown["groups"][s.group]["agent"]
    listed = {(row["client"], row["source"]): row["state"] for row in json.loads(office.cli("binding", "list", "--json"))}
    seen["listed"] = listed.get((CLIENT, s.source))
    stale = {(row["client"], row["source"]) for row in json.loads(office.cli("binding", "list", "--stale", "--json"))}
    seen["stale"] = (CLIENT, s.source) in stale
    if s.source == "manual":
        status, body = office.get(f"/v1/clients/{s.number}/binding")
        seen["api_state"] = body["state"] if status == 200 else None

    # A call from the number that nobody answered: the sticky leg (if any) rang as the daemon
    # decided; then who owns the missed call.
    now = datetime.now(UTC)
    missed_call = Call(INBOUND, s.number, None, now - timedelta(minutes=5), now - timedelta(minutes=4),
                       group=s.group, uuid=f"missed-{s.name}", sticky_agent=plan["agent"],
                       rung=tuple(filter(None, [plan["agent"]])), route="sticky" if plan["agent"] else "fallback",
                       outcome="missed")
    office.service.record_call(missed_call)
    # The call's webhooks are the listener's live story: its end, through the daemon's LiveEvents.
    told = LiveEvents(office.service)
    told.put(live.Transition(live.MISSED, missed_call.uuid, missed_call.ended_at, INBOUND, s.number,
                             group=s.group, seq=1, call=missed_call))
    assert told.flush()
    (row,) = [r for r in json.loads(office.cli("calls", "missed", "--json")) if r["uuid"] == f"missed-{s.name}"]
    seen["missed_owner"] = row["owner"]
    report = json.loads(office.cli("report", "--json"))
    seen["report_owner"] = next((f["agent"] for f in report["agents"] if f["missed"]), None)
    (event,) = [json.loads(e.body)["data"] for e in Outbox(office.store).entries()
                if e.event_type == "call.missed" and json.loads(e.body)["data"]["call_uuid"] == f"missed-{s.name}"]
    seen["webhook_bound_agent"] = event["bound_agent"]
    return seen


def expected(s: Situation) -> dict:
    answer = {"route": s.route, "cli_route": s.cli_route or s.route, "show": s.show,
              "show_rings_first": (s.cli_route or s.route)[0], "listed": s.listed, "stale": s.stale,
              "missed_owner": s.owner, "report_owner": s.owner, "webhook_bound_agent": s.owner}
    if s.source == "manual":
        answer["api_state"] = s.listed
    return answer


@pytest.fixture
def office_for(tmp_path):
    opened = []

    def make(s: Situation) -> Office:
        crm = FakeCrm(s.answers) if s.answers else None
        (tmp_path / s.name).mkdir()
        office = Office(tmp_path / s.name, crm)
        opened.append((office, crm))
        s.setup(office)
        return office

    yield make
    for office, crm in opened:
        office.close()
        if crm:
            crm.stop()


@pytest.mark.parametrize("situation", SITUATIONS, ids=[s.name for s in SITUATIONS])
def test_every_surface_tells_the_same_owner(office_for, situation):
    assert observe(office_for(situation), situation) == expected(situation)


def test_a_callback_to_any_of_the_clients_numbers_closes_their_missed_call(office_for):
    """Clients are people: the missed call of a linked number is closed by a callback to the
    client's first number, ten minutes later, in `calls missed`, the report and callback.done."""
    s = replace(SITUATIONS[0], name="callback", number=LINKED,
                setup=then(manual("1001"), lambda o: BindingPath(o.store).link_numbers(CLIENT, LINKED)))
    office = office_for(s)
    now = datetime.now(UTC)
    office.service.record_call(Call(INBOUND, LINKED, None, now - timedelta(minutes=30),
                                    now - timedelta(minutes=29), group="sales", uuid="missed", outcome="missed"))
    office.service.record_call(Call(OUTBOUND, CLIENT, "1001", now - timedelta(minutes=19),
                                    now - timedelta(minutes=17), talk_seconds=100, answered=True, uuid="back"))
    (row,) = json.loads(office.cli("calls", "missed", "--json"))
    assert (row["client"], row["bound_agent"], row["open"], row["callback_uuid"]) == (LINKED, "1001", False, "back")
    assert row["callback_after_seconds"] == 600
    assert json.loads(office.cli("calls", "missed", "--open", "--json")) == []
    total = json.loads(office.cli("report", "--json"))["total"]
    assert (total["missed"], total["called_back"], total["callback_median_s"]) == (1, 1, 600)
    done = [json.loads(e.body)["data"] for e in Outbox(office.store).entries() if e.event_type == "callback.done"]
    assert [(d["missed_call_uuid"], d["call_uuid"], d["client"]) for d in done] == [("missed", "back", LINKED)]


def test_a_binding_the_rule_bars_for_good_is_refused_by_the_cli_and_the_push_api(office_for):
    """binding set / PUT on a shared number or to a blocked agent: a one-line error (422), and
    nothing stored (ownership.barred decides, binding_changes.refusal words it)."""
    s = replace(SITUATIONS[0], name="refused", setup=lambda o: (o.store.set_shared(LINKED, True),
                                                               o.cli("binding", "block", CLIENT, "1002")))
    office = office_for(s)
    for number, ext, said in ((LINKED, "1001", "is a shared number"), (CLIENT, "1002", "kept away from agent 1002")):
        result = office.runner.invoke(main, ["--config", str(office.config_path), "binding", "set", number, ext])
        assert result.exit_code == 1 and said in result.output and result.output.strip().count("\n") == 0
        status, body = office.get(f"/v1/clients/{number}/binding", method="PUT", body={"agent": ext})
        assert (status, body["error"]) == (422, "rejected") and said in body["message"]
    assert office.store.list_bindings() == []


def test_breaking_the_one_function_breaks_every_surface_at_once(office_for, monkeypatch):
    """ownership.decide made to say the opposite (the binding that routes does not, and a
    failing one does): the table fails, on each surface, because none decides by itself."""
    honest = ownership.decide

    def opposite(*args, **kwargs):
        owned = honest(*args, **kwargs)
        flipped = tuple(ownership.Verdict(v.binding, "agent_blocked" if v.routes else None) for v in owned.verdicts)
        owner = next((v for v in flipped if v.routes), None)
        return replace(owned, verdicts=flipped, owner=owner,
                       reason=owner.source if owner else ("agent_blocked" if flipped else owned.reason))

    monkeypatch.setattr(ownership, "decide", opposite)
    for s in (SITUATIONS[0], SITUATIONS[5]):  # a manual binding that routes; one to a blocked agent
        seen, want = observe(office_for(s), s), expected(s)
        assert {surface for surface in want if seen[surface] != want[surface]} == set(want), (s.name, seen)
