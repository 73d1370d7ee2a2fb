"""Take the README's screenshots of the office board and an agent's screen pop (docs/*.png).

    python docs/screenshots.py          # needs Debian's chromium and playwright (pip install -e '.[test]')

The demo's office day runs against the fake FreeSWITCH (so the board has its missed call and the
hit rate), then Marta calls once more: Bohdan answers and passes her on to Anna, whose screen pop
shows the card while they talk (the CRM's name and card link are set for the picture).
"""
from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import gevent

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from browser import Browser

from fsrouter.demo import AGENTS, MARTA, Demo
from fsrouter.fakefs.transfers import BLIND, Transfer


def main() -> None:
    with tempfile.TemporaryDirectory() as workdir:
        demo = Demo(8.0, Path(workdir))
        try:
            demo.run()
            screens = demo.daemon.pages.screens
            screens.crm_card_url = "https://crm.example/clients/{client}"
            screens.crm_name = {"+380501234567": "Marta Koval (Koval & Sons)"}.get
            # Marta calls again: Bohdan, her agent by the end of the day, answers and passes her on
            # to Anna (a blind transfer), who talks long enough for the pictures.
            for ext in AGENTS:
                demo.fake.agent(ext, never_answers=True)
            demo.fake.agent("1002", answers_after=3, talk=30, transfer=Transfer(BLIND, "1001"))
            demo.fake.agent("1001", answers_after=2, talk=60_000)
            demo.fake.place_call(caller=MARTA, router=demo.daemon.outbound.address)
            with gevent.Timeout(20, False):
                while not any(c.concerns("1001") and c.from_agent for c in screens.calls()):
                    gevent.sleep(0.05)
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
