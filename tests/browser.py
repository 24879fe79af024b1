"""A real headless Chromium driven over the Chrome DevTools Protocol (its websocket; aiohttp's client),
for the dashboard tests: open a file, collect console errors and uncaught exceptions, evaluate
JavaScript in the page (clicks included), take a screenshot. No browser automation package needed."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import time
from pathlib import Path

import aiohttp


class Chromium:
    """``with Chromium(binary, profile_dir) as page: page.open(url); page.js("...")``."""

    def __init__(self, binary: str, profile: Path, width: int = 1280, height: int = 2400):
        self.binary, self.profile, self.size = binary, profile, (width, height)
        self.errors: list[str] = []  # console.error calls, uncaught exceptions, failed loads
        self.requests: list[str] = []  # every URL the page asked for (a self-contained page: its own file only)
        self._loop = asyncio.new_event_loop()
        self._id = 0
        self._pending: dict[int, asyncio.Future] = {}
        self._loaded: asyncio.Event | None = None

    def __enter__(self):
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                f"--user-data-dir={self.profile}",
                f"--window-size={self.size[0]},{self.size[1]}",
                "--remote-debugging-port=0",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        port_file = self.profile / "DevToolsActivePort"  # Chromium writes its chosen port here
        deadline = time.time() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"chromium did not start: {self.proc.stderr.read()[-2000:]}")
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        self._loop.run_until_complete(self._connect(port))
        return self

    def __exit__(self, *exc):
        self._loop.run_until_complete(self._close())
        self._loop.close()
        self.proc.terminate()
        self.proc.wait(timeout=30)

    async def _connect(self, port: int) -> None:
        self._http = aiohttp.ClientSession()
        async with self._http.get(f"http://127.0.0.1:{port}/json/list") as reply:
            target = next(t for t in await reply.json() if t["type"] == "page")
        self._ws = await self._http.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0)
        self._reader = asyncio.ensure_future(self._read())
        for domain in ("Page", "Runtime", "Log", "Network"):
            await self._send(f"{domain}.enable")
        # the viewport itself at the asked size (--window-size includes the headless window's frame)
        await self._send(
            "Emulation.setDeviceMetricsOverride",
            width=self.size[0],
            height=self.size[1],
            deviceScaleFactor=1,
            mobile=False,
        )

    async def _close(self) -> None:
        self._reader.cancel()
        await self._ws.close()
        await self._http.close()

    async def _read(self) -> None:
        async for message in self._ws:
            event = json.loads(message.data)
            if "id" in event:
                self._pending.pop(event["id"]).set_result(event)
            elif event["method"] == "Runtime.consoleAPICalled" and event["params"]["type"] == "error":
                self.errors.append(" ".join(str(a.get("value", a.get("description"))) for a in event["params"]["args"]))
            elif event["method"] == "Runtime.exceptionThrown":
                details = event["params"]["exceptionDetails"]
                self.errors.append((details.get("exception") or {}).get("description") or details["text"])
            elif event["method"] == "Log.entryAdded" and event["params"]["entry"]["level"] == "error":
                self.errors.append(event["params"]["entry"]["text"])
            elif event["method"] == "Network.requestWillBeSent":
                self.requests.append(event["params"]["request"]["url"])
            elif event["method"] == "Page.loadEventFired" and self._loaded is not None:
                self._loaded.set()

    async def _send(self, method: str, **params) -> dict:
        self._id += 1
        future = self._loop.create_future()
        self._pending[self._id] = future
        await self._ws.send_str(json.dumps({"id": self._id, "method": method, "params": params}))
        reply = await asyncio.wait_for(future, 120)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]

    def open(self, url: str) -> None:
        async def go():
            self._loaded = asyncio.Event()
            await self._send("Page.navigate", url=url)
            await asyncio.wait_for(self._loaded.wait(), 120)

        self._loop.run_until_complete(go())

    def js(self, expression: str):
        """The value of a JavaScript expression in the page (JSON-serialisable); a thrown error is raised."""
        result = self._loop.run_until_complete(
            self._send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:80]}...: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, path: Path, full_page: bool = False) -> None:
        params = {"format": "png"}
        if full_page:
            params["captureBeyondViewport"] = True
        data = self._loop.run_until_complete(self._send("Page.captureScreenshot", **params))["data"]
        path.write_bytes(base64.b64decode(data))
