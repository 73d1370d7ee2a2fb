"""Headless Chromium for the tests: Debian's chromium, found as the report test finds it, driven by
playwright (it cannot download a browser of its own here: executable_path points at Debian's).

The daemon and the fake FreeSWITCH run on this thread's gevent loop, and playwright's sync API
blocks the thread it runs on; so the browser lives on a thread of its own (one worker, so every
call reaches the playwright objects on the thread that made them), and the test waits for each
call cooperatively, the daemon serving the page meanwhile.
"""
from __future__ import annotations

import os
import shutil

import pytest
from gevent.threadpool import ThreadPool


def chromium_path() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail("chromium is not installed: .ci/run installs it (apt-get install -y chromium)")
    pytest.skip("chromium is not installed (apt-get install -y chromium); CI runs this test")


class Browser:
    def __init__(self):
        executable = chromium_path()
        try:
            from playwright.sync_api import sync_playwright
        except ImportError:
            if os.environ.get("CI"):
                pytest.fail("playwright is not installed: pip install -e '.[test]'")
            pytest.skip("playwright is not installed (pip install -e '.[test]')")
        self.pool = ThreadPool(1)

        def start():
            self._playwright = sync_playwright().start()
            self._browser = self._playwright.chromium.launch(
                executable_path=executable, args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"])

        self.pool.apply(start)

    def run(self, fn, *args):
        """fn(*args) on the browser's thread; the gevent loop goes on meanwhile."""
        return self.pool.apply(fn, args)

    def page(self, url: str, width: int = 1280, height: int = 800):
        """A new tab showing `url`, once its event stream is live."""
        def open_page():
            page = self._browser.new_page(viewport={"width": width, "height": height})
            page.errors = []
            page.on("pageerror", lambda error: page.errors.append(str(error)))
            page.on("dialog", lambda dialog: (page.errors.append(f"dialog: {dialog.message}"), dialog.dismiss()))
            page.goto(url)
            page.wait_for_selector("#stream-status.live", timeout=10_000)
            return page
        return self.run(open_page)

    def close(self) -> None:
        def stop():
            self._browser.close()
            self._playwright.stop()
        self.pool.apply(stop)
        self.pool.kill()
