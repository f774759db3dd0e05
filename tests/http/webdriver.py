"""A tiny W3C WebDriver client for a real headless Chromium (Debian's packages).

Why not selenium: its client is synchronous, and the server under test runs
in the test's own event loop, so every selenium call would need a thread;
the handful of WebDriver commands the browser test needs (open a URL, run a
script, take a screenshot, read the console) are plain HTTP, made here
with aiohttp, which the project already depends on. No browser or driver is
ever downloaded: the Debian packages are installed with apt-get on first use
(as root), as ``scripts/bootstrap.sh`` does, and the test fails, never
skips, with the reason when that is not possible.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

PACKAGES = ("chromium", "chromium-driver")
# Chromium as root in a container: no sandbox, no GPU, nothing phoning home.
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,830",
)


class BrowserError(AssertionError):
    """Chromium could not be installed, started or driven; the message says why."""


def find_chromium() -> tuple[str, str]:
    """Paths of ``chromium`` and ``chromedriver``, installing the Debian packages if missing.

    Raises:
        BrowserError: when they are missing and cannot be installed.
    """
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if browser and driver:
        return browser, driver
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise BrowserError(
            "Chromium is not installed and this is not root with apt-get: run "
            f"`apt-get install {' '.join(PACKAGES)}` (scripts/bootstrap.sh does)"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES],
    ):
        proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
            raise BrowserError(f"{' '.join(command)} failed: " + " | ".join(tail))
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (browser and driver):
        raise BrowserError(f"installed {' '.join(PACKAGES)} but chromium/chromedriver not on PATH")
    return browser, driver


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Browser:
    """One WebDriver session of a headless Chromium."""

    def __init__(self, http: aiohttp.ClientSession, base: str) -> None:
        self._http = http
        self._base = base  # http://127.0.0.1:PORT/session/ID

    @classmethod
    @contextlib.asynccontextmanager
    async def launch(cls, workdir: Path) -> AsyncIterator[Browser]:
        """Start chromedriver and a Chromium session; stop both afterwards.

        Raises:
            BrowserError: naming what failed, with the driver's log tail.
        """
        chromium, chromedriver = find_chromium()
        port = _free_port()
        log_path = workdir / "chromedriver.log"
        profile = workdir / "chromium-profile"
        profile.mkdir()
        driver = await asyncio.create_subprocess_exec(
            chromedriver,
            f"--port={port}",
            f"--log-path={log_path}",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )

        def failure(what: str) -> BrowserError:
            tail = (
                log_path.read_text(errors="replace").splitlines()[-8:] if log_path.exists() else []
            )
            return BrowserError(f"{what}; chromedriver log: " + " | ".join(tail))

        root = f"http://127.0.0.1:{port}"
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
                for _ in range(200):
                    if driver.returncode is not None:
                        raise failure(f"chromedriver exited with {driver.returncode}")
                    with contextlib.suppress(aiohttp.ClientError):
                        async with http.get(f"{root}/status") as resp:
                            if (await resp.json())["value"]["ready"]:
                                break
                    await asyncio.sleep(0.05)
                else:
                    raise failure("chromedriver did not answer within 10 s")
                capabilities = {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "binary": chromium,
                        "args": [*CHROMIUM_ARGS, f"--user-data-dir={profile}"],
                    },
                    "goog:loggingPrefs": {"browser": "ALL"},
                }
                async with http.post(
                    f"{root}/session", json={"capabilities": {"alwaysMatch": capabilities}}
                ) as resp:
                    body = await resp.json()
                if resp.status != 200:
                    raise failure(f"Chromium did not start: {body['value'].get('message', body)}")
                browser = cls(http, f"{root}/session/{body['value']['sessionId']}")
                try:
                    yield browser
                finally:
                    with contextlib.suppress(aiohttp.ClientError):
                        await http.delete(browser._base)
        finally:
            if driver.returncode is None:
                driver.terminate()
                try:
                    await asyncio.wait_for(driver.wait(), 10)
                except TimeoutError:
                    driver.kill()
                    await driver.wait()

    async def _command(self, method: str, path: str, payload: Any = None) -> Any:
        async with self._http.request(method, self._base + path, json=payload) as resp:
            body = await resp.json()
        if resp.status != 200:
            value = body.get("value", {})
            raise BrowserError(f"WebDriver {path}: {value.get('error')}: {value.get('message')}")
        return body["value"]

    async def open(self, url: str) -> None:
        """Load ``url`` and wait for the page to load."""
        await self._command("POST", "/url", {"url": url})

    async def run(self, script: str, *args: Any) -> Any:
        """Run ``script`` (a function body; ``arguments`` holds ``args``) and return its result."""
        return await self._command("POST", "/execute/sync", {"script": script, "args": list(args)})

    async def wait_for(self, script: str, *args: Any, timeout: float = 10.0, what: str = "") -> Any:
        """Run ``script`` until it returns something truthy; return that.

        Raises:
            BrowserError: after ``timeout`` seconds, naming ``what`` and the last result.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            value = await self.run(script, *args)
            if value:
                return value
            if loop.time() > deadline:
                raise BrowserError(f"timed out waiting for {what or script} (last: {value!r})")
            await asyncio.sleep(0.05)

    async def screenshot(self) -> bytes:
        """The visible page as PNG."""
        return base64.b64decode(await self._command("GET", "/screenshot"))

    async def console(self) -> list[dict[str, Any]]:
        """Console messages since the last call (chromedriver's log extension)."""
        entries: list[dict[str, Any]] = await self._command("POST", "/se/log", {"type": "browser"})
        return entries
