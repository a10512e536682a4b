"""Open a page in headless Chromium and report what a reader would see: did every image load,
did anything go wrong in the console, which sections are there.

Chromium is driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`: JSON
messages separated by NUL bytes; Chromium reads commands on fd 3 and writes on fd 4), so only
the standard library is needed. The page is loaded untouched; the questions are asked from
outside, by evaluating an expression in it once its load event has fired — after which every
<img> has either decoded (naturalWidth > 0) or failed.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

_INSPECT = """JSON.stringify({
  images: Array.from(document.images).map(i => ({alt: i.alt, complete: i.complete, width: i.naturalWidth})),
  sections: Array.from(document.querySelectorAll('section[id]')).map(s => s.id),
  title: document.title,
  scripts: document.scripts.length
})"""


@dataclass
class PageCheck:
    images: list[dict[str, Any]]  # {alt, complete, width}
    sections: list[str]
    title: str
    scripts: int
    console_errors: list[str]


class _DevTools:
    def __init__(self, process: subprocess.Popen, to_browser: int, from_browser: int):
        self.process, self.to_browser, self.from_browser = process, to_browser, from_browser
        self.buffer = b""
        self.next_id = 0
        self.events: list[dict[str, Any]] = []

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self.buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("Chromium did not answer in time")
            ready, _, _ = select.select([self.from_browser], [], [], remaining)
            if ready:
                chunk = os.read(self.from_browser, 1 << 20)
                if not chunk:
                    raise RuntimeError("Chromium closed the DevTools pipe")
                self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, params: dict | None = None, *, session: str | None = None,
             timeout: float = 30) -> dict[str, Any]:
        self.next_id += 1
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not any(event.get("method") == method for event in self.events):
            self.events.append(self._read_message(deadline))


def _console_errors(events: list[dict[str, Any]]) -> list[str]:
    errors = []
    for event in events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            arguments = params.get("args", [])
            errors.append(" ".join(str(arg.get("value", arg.get("description", ""))) for arg in arguments))
        elif method == "Runtime.exceptionThrown":
            errors.append(params.get("exceptionDetails", {}).get("text", "exception"))
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            errors.append(params["entry"].get("text", ""))
    return errors


def check_page(html: Path, *, timeout: float = 60) -> PageCheck:
    """Load `html` in headless Chromium and inspect it after its load event (plus a short settle)."""
    to_browser_read, to_browser_write = os.pipe()
    from_browser_read, from_browser_write = os.pipe()

    def use_pipes_as_fd_3_and_4() -> None:
        os.dup2(to_browser_read, 3)
        os.dup2(from_browser_write, 4)

    with tempfile.TemporaryDirectory(prefix="cnnlab-chromium-") as profile:
        process = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
             f"--user-data-dir={profile}", "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--disable-extensions", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=use_pipes_as_fd_3_and_4, pass_fds=(3, 4),
        )
        os.close(to_browser_read)
        os.close(from_browser_write)
        devtools = _DevTools(process, to_browser_write, from_browser_read)
        try:
            target = devtools.call("Target.createTarget", {"url": "about:blank"}, timeout=timeout)
            attached = devtools.call("Target.attachToTarget",
                                     {"targetId": target["targetId"], "flatten": True}, timeout=timeout)
            session = attached["sessionId"]
            for domain in ("Runtime", "Log", "Page"):
                devtools.call(f"{domain}.enable", session=session, timeout=timeout)
            devtools.call("Page.navigate", {"url": Path(html).resolve().as_uri()}, session=session,
                          timeout=timeout)
            devtools.wait_for("Page.loadEventFired", timeout=timeout)
            time.sleep(0.5)  # let late console messages arrive
            result = devtools.call("Runtime.evaluate", {"expression": _INSPECT, "returnByValue": True},
                                   session=session, timeout=timeout)
            page = json.loads(result["result"]["value"])
            try:
                devtools.call("Browser.close", timeout=10)
            except (RuntimeError, TimeoutError):
                pass
        finally:
            os.close(to_browser_write)
            os.close(from_browser_read)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    return PageCheck(page["images"], page["sections"], page["title"], page["scripts"],
                     _console_errors(devtools.events))
