"""Take the README's screenshots of the office board and an agent's screen pop (docs/*.png).

    python docs/screenshots.py          # needs Debian's chromium and playwright (pip install -e '.[test]')

The demo's office day runs against the fake FreeSWITCH (so the board has its missed call, the
callback and the hit rate), then a call in progress is put on the screens: Marta's call, passed
from Olena to Anna, published into the daemon's live hub as the listener publishes transitions.
"""
from __future__ import annotations

import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import gevent

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from browser import Browser

from fsrouter.core.live import ANSWERED, RINGING, TRANSFERRED, Transition
from fsrouter.core.model import INBOUND
from fsrouter.demo import MARTA, Demo


def main() -> None:
    with tempfile.TemporaryDirectory() as workdir:
        demo = Demo(8.0, Path(workdir))
        try:
            demo.run()
            screens = demo.daemon.pages.screens
            screens.crm_card_url = "https://crm.example/clients/{client}"
            screens.crm_name = {"+380501234567": "Marta Koval (Koval & Sons)"}.get
            client = demo.daemon.service.normalize(MARTA)
            now = datetime.now(UTC)
            for seq, (kind, agent, passed_by) in enumerate(
                    [(RINGING, "1003", None), (ANSWERED, "1003", None), (TRANSFERRED, "1001", "1003")], start=1):
                demo.daemon.hub.publish(Transition(kind, "shot-1", now - timedelta(seconds=95 - 30 * seq), INBOUND,
                                                   client, agent=agent, from_agent=passed_by, group="sales",
                                                   route="sticky" if kind == RINGING else None,
                                                   hop=1 if passed_by else 0, seq=seq))
            demo.daemon.hub.publish(Transition(RINGING, "shot-2", now - timedelta(seconds=4), INBOUND,
                                               "+380931112233", agent="1002", group="sales", route="fallback",
                                               seq=1))
            base = "http://{}:{}".format(*demo.daemon.api.address)
            browser = Browser()
            try:
                for name, url, size in (("board", demo.links.board_url(base), (1280, 900)),
                                        ("agent-screen", demo.links.agent_url(base, "1001"), (1000, 720))):
                    page = browser.page(url, *size)
                    gevent.sleep(1.2)
                    browser.run(lambda p=page, n=name: p.screenshot(path=str(HERE / f"{n}.png"), full_page=True))
                    browser.run(page.close)
                    print(f"docs/{name}.png")
            finally:
                browser.close()
        finally:
            demo.close()


if __name__ == "__main__":
    main()
