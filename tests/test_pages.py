"""The agent's screen pop (/agent/EXT) and the office board (/board): what they show, who may open
them, and, in headless Chromium against the real daemon and the fake FreeSWITCH, that they update
by themselves and show whatever a caller ID or the CRM says as text."""
from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from browser import Browser
from http_fakes import FakeCrm
from office import Office

from fsrouter.binding_path import BindingPath
from fsrouter.config import ConfigError, CrmLookup, load_config
from fsrouter.core.calls_now import OVER, RINGING_NOW, TALKING, call_now
from fsrouter.core.live import ANSWERED, ENDED, MISSED, RINGING, TRANSFERRED, Transition
from fsrouter.core.model import INBOUND, OUTBOUND, Call
from fsrouter.core.settings import Settings
from fsrouter.fakefs.transfers import ATT_XFER, ATTENDED, BLIND, Transfer
from fsrouter.http.client import request
from fsrouter.http.links import Links
from fsrouter.http.pages import CSP
from fsrouter.http.screens import card_url

TOKEN = "page-t0ken"
LINKS = Links(TOKEN)
MARTA = "+380501234567"
MARTA_MOBILE = "+380671234567"
HOSTILE = '<img src=x onerror="window.pwned=1"><b>Marta</b><script>window.pwned=2</script>'
T0 = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)


def story(uuid, *steps, client=MARTA, at=None):
    """Transitions of one inbound call: steps are (kind, agent) or (kind, agent, from_agent)."""
    at = at or datetime.now(UTC)
    out = []
    for seq, (kind, agent, *rest) in enumerate(steps, start=1):
        out.append(Transition(kind, uuid, at + timedelta(seconds=seq), INBOUND, client, agent=agent,
                              from_agent=rest[0] if rest else None, route="sticky" if kind == RINGING else None,
                              group="sales", hop=1 if kind == TRANSFERRED else 0, seq=seq))
    return out


# -- where a call stands (core.calls_now) ---------------------------------------------------------

def test_a_call_rings_then_talks_then_is_passed_on_then_is_over():
    steps = story("c1", (RINGING, "1001"), (RINGING, "1002"), (ANSWERED, "1002"), (TRANSFERRED, "1003", "1002"),
                  (ENDED, "1003"), at=T0)
    assert call_now(steps[:2]).ringing == ("1001", "1002") and call_now(steps[:2]).state == RINGING_NOW
    answered = call_now(steps[:3])
    assert (answered.state, answered.agent, answered.ringing) == (TALKING, "1002", ())
    assert answered.concerns("1002") and not answered.concerns("1001")
    passed = call_now(steps[:4])
    assert (passed.agent, passed.from_agent, passed.state_since) == ("1003", "1002", T0 + timedelta(seconds=4))
    assert passed.concerns("1003") and not passed.concerns("1002")
    over = call_now(steps)
    assert (over.state, over.agent, over.missed, over.since) == (OVER, "1003", False, T0 + timedelta(seconds=1))


def test_a_missed_call_is_over_and_missed_and_a_consultation_answer_does_not_take_the_client():
    assert call_now(story("c1", (RINGING, "1001"), (MISSED, "1001"))).missed
    # att_xfer: 1002 talks to the client and rings 1003 to consult; 1003's answer is not the client's.
    consult = call_now(story("c1", (RINGING, "1002"), (ANSWERED, "1002"), (RINGING, "1003"), (ANSWERED, "1003")))
    assert (consult.state, consult.agent) == (TALKING, "1002")


def test_the_route_is_the_answered_legs_when_the_ring_did_not_say_it():
    """The listener may learn how fsrouter rang a leg only at its answer (capture 12)."""
    ring = Transition(RINGING, "c1", T0, INBOUND, MARTA, agent="1001", seq=1)
    answer = Transition(ANSWERED, "c1", T0 + timedelta(seconds=3), INBOUND, MARTA, agent="1001", route="sticky", seq=2)
    assert call_now([ring]).route is None
    assert call_now([ring, answer]).route == "sticky"


# -- links and access ------------------------------------------------------------------------------

def test_each_agent_has_a_link_of_their_own_and_none_is_the_api_token():
    tokens = {LINKS.agent_token(ext) for ext in ("1001", "1002", "1003")} | {LINKS.board_token()}
    assert len(tokens) == 4 and TOKEN not in tokens
    assert LINKS.opens_agent("1001", LINKS.agent_token("1001"))
    assert not LINKS.opens_agent("1002", LINKS.agent_token("1001"))
    assert not LINKS.opens_board(LINKS.agent_token("1001"))
    assert Links("another").agent_token("1001") != LINKS.agent_token("1001")


def test_the_card_url_template_puts_the_number_in_encoded():
    assert card_url("https://crm.example/clients/{client}", MARTA) == "https://crm.example/clients/%2B380501234567"
    assert card_url("https://crm.example/c?phone={digits}", MARTA) == "https://crm.example/c?phone=380501234567"
    assert card_url("", MARTA) is None


@pytest.mark.parametrize("value, error", [("javascript:alert(1)//{client}", "bad URL"),
                                          ("https://crm.example/clients", "{client}")])
def test_a_crm_card_url_that_is_no_http_url_with_the_number_is_refused(value, error):
    with pytest.raises(ConfigError, match="CRM_CARD_URL") as refused:
        load_config(None, environ={"FSROUTER_CRM_CARD_URL": value})
    assert error in str(refused.value)


@pytest.fixture(scope="module")
def crm():
    server = FakeCrm(answers={MARTA: "1001"}, names={MARTA: HOSTILE})
    yield server
    server.stop()


@pytest.fixture(scope="module")
def office(tmp_path_factory, crm):
    office = Office(tmp_path_factory.mktemp("pages"), api_token=TOKEN, api_listen="127.0.0.1:0",
                    crm_card_url="https://crm.example/clients/{client}",
                    crm_lookups=(CrmLookup("lead", crm.lookup_url("lead"), "responsible.ext",
                                           name_field="client.name"),))
    office.daemon.pages.board_refresh = 0.3
    # The fake's clock runs at 1/200 of FreeSWITCH's: a group whose phones ring for 10 of its
    # minutes (3 s) lets a browser see a call ring.
    office.store.add_group("desk", ring_timeout=timedelta(seconds=600))
    for ext in ("1001", "1002", "1003", "1004"):
        office.store.add_member("desk", ext)
    host, port = office.daemon.api.address
    office.base = f"http://{host}:{port}"
    yield office
    office.close()


@pytest.fixture(scope="module")
def browser():
    browser = Browser()
    yield browser
    browser.close()


def get(office, path, **headers):
    return request("GET", office.base + path, headers=headers, timeout=5)


def test_an_agent_page_opens_with_its_own_link_only(office):
    assert get(office, LINKS.agent_url("", "1001")).status == 200
    assert get(office, "/agent/1001?token=" + LINKS.agent_token("1002")).status == 403
    assert get(office, "/agent/1001").status == 403
    assert get(office, "/agent/1001?token=" + TOKEN).status == 403, "the API token opens no agent's page"
    assert get(office, "/agent/1001/events?token=" + LINKS.board_token()).status == 403
    refused = get(office, "/agent/1002?token=" + LINKS.agent_token("1001"))
    assert refused.headers["content-type"].startswith("application/json") and b"forbidden" in refused.body


def test_the_board_opens_with_its_link_or_the_api_token_as_a_bearer(office):
    assert get(office, LINKS.board_url("")).status == 200
    assert get(office, "/board", Authorization=f"Bearer {TOKEN}").status == 200
    assert get(office, "/board").status == 403
    assert get(office, "/board?token=" + LINKS.agent_token("1001")).status == 403


def test_pages_allow_only_the_daemons_own_script_and_style(office):
    page = get(office, LINKS.board_url(""))
    assert page.headers["content-security-policy"] == CSP
    assert "script-src 'self'" in CSP and "unsafe-inline" not in CSP and "default-src 'none'" in CSP
    assert page.headers["x-frame-options"] == "DENY" and page.headers["referrer-policy"] == "no-referrer"
    assert b"<script src=\"/assets/live.js\"" in page.body and b"http" not in page.body.split(b"<body>")[0]
    script = get(office, "/assets/live.js")
    assert script.status == 200 and script.headers["content-type"].startswith("text/javascript")
    assert b"innerHTML" not in script.body and b"textContent" in script.body
    assert get(office, "/assets/..%2Fpages.py").status == 404


# -- what the card says (Screens, over the store) -----------------------------------------------------

def test_the_card_says_whose_client_since_when_their_other_numbers_last_calls_and_open_missed_calls(office):
    store = office.store
    bindings = BindingPath(store)  # every binding change goes this one way
    bindings.link_numbers(MARTA, MARTA_MOBILE)
    bound_at = datetime.now(UTC) - timedelta(days=3)
    bindings.set_manual_binding(MARTA, "1002", bound_at, why="CRM: responsible")
    earlier = datetime.now(UTC) - timedelta(hours=2)
    bindings.record_call(Call(INBOUND, MARTA_MOBILE, None, earlier, earlier + timedelta(seconds=20), uuid="m-1",
                           group="sales", outcome="missed"), Settings())
    bindings.record_call(Call(OUTBOUND, "+380931112233", "1002", earlier, earlier + timedelta(seconds=9),
                           talk_seconds=9, answered=True, uuid="other"), Settings())
    try:
        screens = office.daemon.pages.screens
        card = screens.card(call_now(story("c-card", (RINGING, "1001"))), "1001")
        assert (card["client"], card["state"], card["route"]) == (MARTA, RINGING_NOW, "sticky")
        assert card["crm_url"] == "https://crm.example/clients/%2B380501234567"
        bound = card["bound"]
        assert (bound["agent"], bound["to_me"], bound["source"], bound["why"]) == ("1002", False, "manual",
                                                                                  "CRM: responsible")
        assert bound["since"].startswith(bound_at.isoformat()[:16]) and bound["state"].startswith("rings first")
        assert card["numbers"] == [MARTA_MOBILE]
        assert [c["number"] for c in card["last_calls"]] == [MARTA_MOBILE]
        assert [(m["number"], m["owner"]) for m in card["open_missed"]] == [(MARTA_MOBILE, "1002")]
        assert screens.card(call_now(story("c-card", (RINGING, "1002"))), "1002")["bound"]["to_me"]
    finally:
        bindings.remove_bindings(MARTA)
        store.unlink_number(MARTA_MOBILE)
        office.store.m.Call.delete().execute()


# -- in the browser ------------------------------------------------------------------------------------

def publish(office, transitions):
    for transition in transitions:
        office.daemon.hub.publish(transition)


def text_of(browser, page, selector):
    return browser.run(lambda: page.inner_text(selector))


def wait_for_text(browser, page, selector, text, timeout=5.0):
    def check():
        page.wait_for_function("([s, t]) => { const n = document.querySelector(s); return n && !n.hidden && "
                               "n.offsetParent !== null && n.textContent.includes(t); }",
                               arg=[selector, text], timeout=timeout * 1000)
    browser.run(check)


def test_the_ringing_agents_page_shows_the_client_within_a_second_published_to_the_hub(office, browser):
    """Lower level: the transitions straight into the hub (the end-to-end test plays a call)."""
    page = browser.page(office.base + LINKS.agent_url("", "1001"))
    try:
        started = time.monotonic()
        publish(office, story("c-ring", (RINGING, "1001"))[:1])
        wait_for_text(browser, page, ".card .number", MARTA, timeout=1.0)
        assert time.monotonic() - started < 1.0
        assert "ringing" in text_of(browser, page, ".card .badge").lower()
        publish(office, story("c-ring", (RINGING, "1001"), (MISSED, None))[1:])
        wait_for_text(browser, page, ".card .badge", "over")
    finally:
        browser.run(page.close)


def test_after_a_transfer_the_card_is_on_the_new_agents_page_saying_who_passed_it_published_to_the_hub(
        office, browser):
    """Lower level: the transitions straight into the hub (the end-to-end test plays the three
    transfers on the fake FreeSWITCH)."""
    old = browser.page(office.base + LINKS.agent_url("", "1002"))
    new = browser.page(office.base + LINKS.agent_url("", "1003"))
    try:
        steps = story("c-xfer", (RINGING, "1002"), (ANSWERED, "1002"), (TRANSFERRED, "1003", "1002"), (ENDED, "1003"))
        publish(office, steps[:2])
        wait_for_text(browser, old, ".card .badge", "talking")
        publish(office, steps[2:3])
        wait_for_text(browser, new, ".card .passed", "Agent 1002")
        assert MARTA in text_of(browser, new, ".card .number")
        wait_for_text(browser, old, ".card .badge", "over")
        publish(office, steps[3:])
    finally:
        browser.run(old.close)
        browser.run(new.close)


def test_a_caller_id_or_crm_name_full_of_markup_shows_as_text(office, browser):
    assert office.service.crm_answer(MARTA, office.daemon.crm) is not None  # what routing asks, per call
    assert office.daemon.crm.name(MARTA) == HOSTILE
    page = browser.page(office.base + LINKS.agent_url("", "1004"))
    try:
        publish(office, story("c-markup", (RINGING, "1004")))
        wait_for_text(browser, page, ".card .name", "<b>Marta</b>")
        assert text_of(browser, page, ".card .name") == HOSTILE
        hostile_id = '<svg onload="window.pwned=3">'
        publish(office, story("c-markup-2", (RINGING, "1004"), client=hostile_id))
        wait_for_text(browser, page, "#cards", hostile_id)
        found = browser.run(lambda: page.evaluate(
            "() => [window.pwned, document.querySelectorAll('#cards .name *, #cards .number *, #cards img, "
            "#cards script, #cards svg').length]"))
        assert found == [None, 0], found
        assert browser.run(lambda: page.errors) == []
    finally:
        publish(office, story("c-markup", (RINGING, "1004"), (MISSED, None))[1:])
        publish(office, story("c-markup-2", (RINGING, "1004"), (MISSED, None), client=hostile_id)[1:])
        browser.run(page.close)


def test_a_missed_call_appears_on_the_board_and_shows_called_back_when_an_agent_calls_the_client(
        office, browser):
    board = browser.page(office.base + LINKS.board_url(""), height=1000)
    try:
        for ext in ("1001", "1002", "1003", "1004"):
            office.fake.agent(ext, never_answers=True)
        office.call("0931112244")
        wait_for_text(browser, board, "#missed tbody", "+380931112244")
        assert "waiting for a call back" in text_of(browser, board, "#missed tbody")
        handle = office.fake.agent_calls_out("1003", "+380931112244", answered=True)
        assert handle.done.wait(15)
        office.settle()
        wait_for_text(browser, board, "#missed tbody", "called back by 1003")
        assert browser.run(lambda: board.errors) == []
    finally:
        browser.run(board.close)


def test_the_board_shows_calls_in_progress_and_every_agents_presence(office, browser):
    office.store.set_agent_dnd("1004", True)
    office.service.invalidate()
    board = browser.page(office.base + LINKS.board_url(""))
    try:
        publish(office, story("c-board", (RINGING, "1001"), (ANSWERED, "1001")))
        wait_for_text(browser, board, "#calls tbody", "talking")
        row = text_of(browser, board, "#calls tbody")
        assert MARTA in row and "1001" in row and "sticky" in row
        agents = text_of(browser, board, "#agents tbody")
        assert all(f"Agent {ext}" in agents for ext in ("1001", "1002", "1003", "1004")) and "DND" in agents
        publish(office, story("c-board", (RINGING, "1001"), (ANSWERED, "1001"), (ENDED, "1001"))[2:])
        wait_for_text(browser, board, "#calls + p, section.wide p.muted", "No call right now")
    finally:
        office.store.set_agent_dnd("1004", False)
        browser.run(board.close)


MDWE_SCRIPT = r'''
import ctypes, sys
if ctypes.CDLL(None, use_errno=True).prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE: no W+X memory from now on
    sys.exit(77)
from fsrouter.hub import Hub
from fsrouter.http.api import Api, ApiServer
from fsrouter.http.client import request
from fsrouter.http.links import Links
from fsrouter.http.pages import Pages
from fsrouter.http.screens import Screens
from fsrouter.service import Service
from fsrouter.store import Store
service = Service(Store.open("sqlite:///:memory:"))
service.store.add_agent("1001", "Anna")
api = Api(service, "t")
Pages(Screens(service, Hub(), lock=__import__("contextlib").nullcontext()), Links("t")).mount(api.app)
server = ApiServer("127.0.0.1:0", api)
server.start()
base = "http://%s:%d" % server.address
print(request("GET", Links("t").board_url(base)).status, request("GET", Links("t").agent_url(base, "1001")).status,
      request("GET", base + "/health").status)
'''


def test_the_pages_run_where_memory_may_not_be_writable_and_executable():
    """The systemd unit's MemoryDenyWriteExecute=yes, as the kernel's PR_SET_MDWE (Linux 6.3+):
    Falcon, Jinja2's compiled templates and gevent's server need no W+X memory."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", MDWE_SCRIPT], capture_output=True, text=True, timeout=60, check=False)
    if done.returncode == 77:
        pytest.skip("this kernel has no PR_SET_MDWE")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["200", "200", "200"]


# -- end to end: calls played on the fake FreeSWITCH, the listener publishing their story ---------

def script(office, **agents):
    """Every agent's phone for the next call: the ones named answer as told, the others ring on."""
    for ext in ("1001", "1002", "1003", "1004"):
        if ext in agents:
            office.fake.agent(ext, **agents[ext])
        else:
            office.fake.agent(ext, never_answers=True)


def test_the_ringing_agents_page_shows_the_client_within_a_second(office, browser):
    # The fake's clock runs at 1/200: 1002 answers after 2 s and talks for 1 s.
    page = browser.page(office.base + LINKS.agent_url("", "1002"))
    try:
        script(office, **{"1002": {"answers_after": 400, "talk": 200}})
        started = time.monotonic()
        handle = office.fake.place_call(caller="0931112255", group="desk", router=office.router)
        wait_for_text(browser, page, ".card .number", "+380931112255", timeout=1.0)
        assert time.monotonic() - started < 1.0
        assert "ringing" in text_of(browser, page, ".card .badge").lower()
        wait_for_text(browser, page, ".card .badge", "talking", timeout=5.0)
        assert handle.wait(15)
        wait_for_text(browser, page, ".card .badge", "over", timeout=5.0)
    finally:
        browser.run(page.close)


@pytest.mark.parametrize("kind", [BLIND, ATTENDED, ATT_XFER])
def test_after_a_transfer_the_card_is_on_the_new_agents_page_saying_who_passed_it(office, browser, kind):
    old = browser.page(office.base + LINKS.agent_url("", "1002"))
    new = browser.page(office.base + LINKS.agent_url("", "1004"))
    try:
        script(office, **{"1002": {"answers_after": 40, "talk": 300, "transfer": Transfer(kind, "1004", consult=100)},
                          "1004": {"answers_after": 40, "talk": 400}})
        handle = office.fake.place_call(caller="0931112266", group="desk", router=office.router)
        wait_for_text(browser, old, ".card .badge", "talking", timeout=5.0)
        wait_for_text(browser, new, ".card .passed", "Agent 1002", timeout=10.0)
        assert "+380931112266" in text_of(browser, new, ".card .number")
        assert "talking" in text_of(browser, new, ".card .badge").lower()
        wait_for_text(browser, old, ".card .badge", "over", timeout=5.0)
        assert handle.wait(15)
        office.settle()
    finally:
        browser.run(old.close)
        browser.run(new.close)


def test_a_crm_name_full_of_markup_shows_as_text_on_the_ringing_agents_page(office, browser):
    office.daemon.crm.forget()
    page = browser.page(office.base + LINKS.agent_url("", "1001"))
    try:
        # The CRM names 1001: the sticky leg rings 1001 (20 s of the fake's time), who answers on it.
        script(office, **{"1001": {"answers_after": 10, "talk": 300}})
        handle = office.fake.place_call(caller="0501234567", group="desk", router=office.router)
        wait_for_text(browser, page, ".card .name", "<b>Marta</b>", timeout=5.0)
        assert text_of(browser, page, ".card .name") == HOSTILE
        wait_for_text(browser, page, ".card .state-line", "sticky", timeout=5.0)  # 1001 answered its leg
        found = browser.run(lambda: page.evaluate(
            "() => [window.pwned, document.querySelectorAll('#cards .name *, #cards img, #cards script').length]"))
        assert found == [None, 0], found
        assert handle.wait(15)
        office.settle()
        assert browser.run(lambda: page.errors) == []
    finally:
        browser.run(page.close)
