"""Headless Chromium for the browser tests (Debian's `chromium`; `.ci/run` installs it): where it is, a
skip marker for where it is not, and `Chromium`, a small client of the DevTools protocol that opens a
page, sets a file input as a person picking files would, clicks, and waits for what the page shows."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import urllib.request
from pathlib import Path

import pytest

from waiting import wait_until

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
needs_browser = pytest.mark.skipif(BROWSER is None, reason="needs headless Chromium (apt-get install chromium)")


class Chromium:
    """One headless Chromium with one page, driven over the DevTools protocol (aiohttp's websocket)."""

    def __init__(self, profile: Path):
        profile.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen([BROWSER, "--headless=new", "--no-sandbox", "--disable-gpu",
                                         "--remote-debugging-port=0", f"--user-data-dir={profile}", "about:blank"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = profile / "DevToolsActivePort"
        text = wait_until(lambda: port_file.is_file() and port_file.read_text().strip(), 60, "Chromium's DevTools port")
        with urllib.request.urlopen(f"http://127.0.0.1:{text.splitlines()[0]}/json/list", timeout=10) as answer:
            target = next(t for t in json.load(answer) if t["type"] == "page")
        self.loop, self.calls = asyncio.new_event_loop(), 0
        self.loop.run_until_complete(self._connect(target["webSocketDebuggerUrl"]))

    async def _connect(self, url: str) -> None:
        import aiohttp

        self.http = aiohttp.ClientSession()
        self.ws = await self.http.ws_connect(url, max_msg_size=0)

    async def _call(self, method: str, params: dict) -> dict:
        self.calls += 1
        await self.ws.send_json({"id": self.calls, "method": method, "params": params})
        while True:  # events arrive in between; the answer carries our id
            message = await self.ws.receive_json(timeout=120)
            if message.get("id") == self.calls:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                return message["result"]

    def call(self, method: str, **params) -> dict:
        return self.loop.run_until_complete(self._call(method, params))

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def wait_for(self, expression: str, seconds: float = 60):
        return wait_until(lambda: self.evaluate(expression), seconds, expression)

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete'")

    def choose_files(self, selector: str, paths: list[Path]) -> None:
        root = self.call("DOM.getDocument")["root"]["nodeId"]
        node = self.call("DOM.querySelector", nodeId=root, selector=selector)["nodeId"]
        self.call("DOM.setFileInputFiles", nodeId=node, files=[str(p) for p in paths])

    def close(self) -> None:
        try:
            self.loop.run_until_complete(self.ws.close())
            self.loop.run_until_complete(self.http.close())
            self.loop.close()
        finally:
            self.process.terminate()
            self.process.wait(timeout=30)

    def __enter__(self) -> "Chromium":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
