"""The agent's screen pop (/agent/EXT) and the office board (/board), on the API's listener.

Each page is a Jinja2 template (templates/, autoescaped) plus a few KB of vanilla JS
(assets/live.js) that fills it with the state the daemon streams as Server-Sent Events
(/agent/EXT/events, /board/events), reading the hub's transitions. No CDN, no build step. The
values are put into the page as text, and the Content-Security-Policy lets the page run only the
script the daemon serves, so a caller ID or a CRM name full of markup shows as text.

Each agent's page opens only with that agent's link token, the board with the board's (links.py),
given as ?token=; the board also takes the API token as a bearer header, for programs.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import falcon
import structlog
from jinja2 import Environment, FileSystemLoader, select_autoescape

from ..core.live import ENDED, MISSED
from .api import ApiError
from .links import Links
from .screens import Screens

log = structlog.get_logger("fsrouter.http.pages")

HERE = Path(__file__).parent
ASSETS = {"live.js": "text/javascript; charset=utf-8", "pages.css": "text/css; charset=utf-8"}
# The page runs the daemon's own script and style only, talks only to the daemon, and is framed by
# nobody; the inline JSON state is data (type application/json), which no CSP rule executes.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
PAGE_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff",
                "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY"}
KEEPALIVE = 15.0  # seconds between two comments on a quiet stream (a closed browser is noticed then)
BOARD_REFRESH = 5.0  # seconds between two reads of today's missed calls and hit rate, at most
# After a call ends, its record reaches the database with the writer's next commit (tens of ms):
# the board reads the day again this long after, so a callback that just ended shows.
AFTER_CALL = 0.5


def _event(state: dict) -> bytes:
    return b"event: state\ndata: " + json.dumps(state, ensure_ascii=False).encode("utf-8") + b"\n\n"


class Pages:
    def __init__(self, screens: Screens, links: Links, api_token_matches: Callable[[str], bool] | None = None,
                 keepalive: float = KEEPALIVE, board_refresh: float = BOARD_REFRESH,
                 clock: Callable[[], float] = time.monotonic):
        self.screens = screens
        self.links = links
        self.api_token_matches = api_token_matches or (lambda _given: False)
        self.keepalive = keepalive
        self.board_refresh = board_refresh
        self.clock = clock
        self.templates = Environment(loader=FileSystemLoader(HERE / "templates"),
                                     autoescape=select_autoescape(default=True, default_for_string=True))

    def mount(self, app: falcon.App) -> None:
        app.add_route("/agent/{ext}", _AgentPage(self))
        app.add_route("/agent/{ext}/events", _AgentEvents(self))
        app.add_route("/board", _BoardPage(self))
        app.add_route("/board/events", _BoardEvents(self))
        app.add_route("/assets/{name}", _Asset())

    # -- access --------------------------------------------------------------------------------
    def check_agent(self, req, ext: str) -> None:
        if not self.links.opens_agent(ext, req.get_param("token") or ""):
            raise ApiError(403, "forbidden", "this link does not open this agent's page: "
                                             "ask for yours (fsrouter agent link EXT)")
        if ext not in self.screens.agents():
            raise ApiError(404, "not_found", f"no agent {ext[:40]}")

    def check_board(self, req) -> None:
        scheme, _, given = req.env.get("HTTP_AUTHORIZATION", "").partition(" ")
        if scheme.lower() == "bearer" and self.api_token_matches(given.strip()):
            return
        if not self.links.opens_board(req.get_param("token") or ""):
            raise ApiError(403, "forbidden", "this link does not open the board (fsrouter board link)")

    # -- rendering -----------------------------------------------------------------------------
    def page(self, resp, template: str, stream_url: str, **context) -> None:
        resp.content_type = falcon.MEDIA_HTML
        resp.set_headers(PAGE_HEADERS)
        resp.text = self.templates.get_template(template).render(stream_url=stream_url, **context)

    def stream(self, resp, events: Iterator[bytes]) -> None:
        resp.content_type = "text/event-stream; charset=utf-8"
        resp.set_headers({"X-Accel-Buffering": "no"})
        resp.stream = events

    def agent_events(self, ext: str) -> Iterator[bytes]:
        mine: set[str] = set()  # the calls shown on this page: their later transitions matter too
        subscription = self.screens.hub.subscribe(
            lambda t: t.agent == ext or t.from_agent == ext or t.call_uuid in mine)
        shown: dict[str, dict] = {}
        try:
            yield b"retry: 2000\n\n"
            while True:
                view = self.screens.agent_view(ext, shown)
                mine.clear()
                mine.update(shown)
                yield _event(view)
                while not subscription.get(self.keepalive):
                    yield b": keepalive\n\n"
        finally:
            subscription.close()

    def board_state(self, day: dict) -> dict:
        return {**self.screens.board_live(), **day}

    def board_events(self) -> Iterator[bytes]:
        subscription = self.screens.hub.subscribe()
        try:
            yield b"retry: 2000\n\n"
            day = self.screens.board_day()
            due = self.clock() + self.board_refresh
            yield _event(self.board_state(day))
            last_sent = self.clock()
            while True:
                transitions = subscription.get(max(0.0, min(due - self.clock(), self.keepalive)))
                if any(t.kind in (MISSED, ENDED) for t in transitions):
                    due = min(due, self.clock() + AFTER_CALL)
                refresh = self.clock() >= due
                if refresh:
                    day = self.screens.board_day()
                    due = self.clock() + self.board_refresh
                if transitions or refresh:
                    yield _event(self.board_state(day))
                    last_sent = self.clock()
                elif self.clock() - last_sent >= self.keepalive:
                    yield b": keepalive\n\n"
                    last_sent = self.clock()
        finally:
            subscription.close()


class _Resource:
    def __init__(self, pages: Pages):
        self.pages = pages


class _AgentPage(_Resource):
    def on_get(self, req, resp, ext: str) -> None:
        self.pages.check_agent(req, ext)
        view = self.pages.screens.agent_view(ext, {})
        self.pages.page(resp, "agent.html", f"/agent/{ext}/events?token={self.pages.links.agent_token(ext)}",
                        ext=ext, name=view["name"], state=view)


class _AgentEvents(_Resource):
    def on_get(self, req, resp, ext: str) -> None:
        self.pages.check_agent(req, ext)
        self.pages.stream(resp, self.pages.agent_events(ext))


class _BoardPage(_Resource):
    def on_get(self, req, resp) -> None:
        self.pages.check_board(req)
        state = self.pages.board_state(self.pages.screens.board_day())
        self.pages.page(resp, "board.html", f"/board/events?token={self.pages.links.board_token()}", state=state)


class _BoardEvents(_Resource):
    def on_get(self, req, resp) -> None:
        self.pages.check_board(req)
        self.pages.stream(resp, self.pages.board_events())


class _Asset:
    def on_get(self, req, resp, name: str) -> None:
        if name not in ASSETS:
            raise ApiError(404, "not_found", f"no such asset: {name[:60]}")
        resp.content_type = ASSETS[name]
        resp.set_headers({"X-Content-Type-Options": "nosniff"})
        resp.data = (HERE / "assets" / name).read_bytes()
