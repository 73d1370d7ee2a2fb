"""The pages' link tokens: each agent's screen and the office board open with a token of their own.

A token is an HMAC-SHA256 of the page's name (the agent's extension, or the board) keyed with
the API token, cut to 128 bits: the daemon checks it without storing anything, the CLI prints it
(`fsrouter agent link EXT`, `fsrouter board link`) from the same config, one agent's link opens
no other agent's page, and none of them is the API token, which can change bindings. Changing
api_token revokes every link at once.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import quote

BOARD = "board"


class Links:
    def __init__(self, api_token: str):
        if not api_token:
            raise ValueError("the pages need api_token: their links are signed with it")
        self._key = api_token.encode("utf-8")

    def _token(self, kind: str, name: str) -> str:
        digest = hmac.new(self._key, f"fsrouter page\0{kind}\0{name}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest[:16]).decode("ascii").rstrip("=")

    def agent_token(self, ext: str) -> str:
        return self._token("agent", ext)

    def board_token(self) -> str:
        return self._token(BOARD, "")

    def opens_agent(self, ext: str, given: str) -> bool:
        return hmac.compare_digest(given.encode("utf-8", "replace"), self.agent_token(ext).encode("ascii"))

    def opens_board(self, given: str) -> bool:
        return hmac.compare_digest(given.encode("utf-8", "replace"), self.board_token().encode("ascii"))

    def agent_url(self, base: str, ext: str) -> str:
        return f"{base.rstrip('/')}/agent/{quote(ext, safe='')}?token={self.agent_token(ext)}"

    def board_url(self, base: str) -> str:
        return f"{base.rstrip('/')}/board?token={self.board_token()}"


def base_url(api_listen: str) -> str:
    """http://host:port of the listener (a wildcard address shown as the loopback one)."""
    host, _, port = api_listen.rpartition(":")
    host = host.strip("[]")
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
