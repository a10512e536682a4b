"""The page at / in a real headless Chromium (Debian's, driven over the DevTools pipe): a real
Fashion-MNIST test image is uploaded through the page's file input, and the page shows the class
the model predicts, its top-k bars, the image as the model sees it and the Grad-CAM overlay."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

from tests.report.chromium import CHROMIUM, _console_errors, _DevTools

requires_chromium = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                       reason="Chromium not installed: apt-get install chromium")

_SHOWN = """JSON.stringify({
  state: document.body.dataset.state,
  label: document.getElementById('answer').dataset.label,
  answer: document.getElementById('answer').textContent,
  error: document.getElementById('error').textContent,
  bars: Array.from(document.querySelectorAll('#bars .bar')).map(bar => bar.children[0].textContent),
  seen: document.getElementById('seen').naturalWidth,
  cam: document.getElementById('cam').naturalWidth,
  model: document.getElementById('model').textContent
})"""


class _Page:
    """One tab of a headless Chromium on the DevTools pipe."""

    def __init__(self, devtools: _DevTools, session: str):
        self.devtools, self.session = devtools, session

    def call(self, method: str, params: dict | None = None) -> dict[str, Any]:
        return self.devtools.call(method, params, session=self.session, timeout=60)

    def shown(self) -> dict[str, Any]:
        result = self.call("Runtime.evaluate", {"expression": _SHOWN, "returnByValue": True})
        if "exceptionDetails" in result:  # the page is not there yet
            return {}
        return json.loads(result["result"]["value"])

    def wait_until(self, state: str, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while (shown := self.shown()).get("state") != state:
            assert time.monotonic() < deadline, f"the page never reached {state}: {shown}"
            time.sleep(0.1)
        return shown


def _open_page(url: str, profile: str) -> tuple[subprocess.Popen, _Page]:
    to_browser_read, to_browser_write = os.pipe()
    from_browser_read, from_browser_write = os.pipe()

    def use_pipes_as_fd_3_and_4() -> None:
        os.dup2(to_browser_read, 3)
        os.dup2(from_browser_write, 4)

    process = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
         f"--user-data-dir={profile}", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-extensions", "about:blank"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        preexec_fn=use_pipes_as_fd_3_and_4, pass_fds=(3, 4))
    os.close(to_browser_read)
    os.close(from_browser_write)
    devtools = _DevTools(process, to_browser_write, from_browser_read)
    target = devtools.call("Target.createTarget", {"url": "about:blank"}, timeout=60)
    session = devtools.call("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True},
                            timeout=60)["sessionId"]
    page = _Page(devtools, session)
    for domain in ("Runtime", "Log", "Page", "DOM"):
        page.call(f"{domain}.enable")
    page.call("Page.navigate", {"url": url})
    return process, page


def _close(process: subprocess.Popen, page: _Page) -> None:
    try:
        page.devtools.call("Browser.close", timeout=10)
    except (RuntimeError, TimeoutError):
        pass
    os.close(page.devtools.to_browser)
    os.close(page.devtools.from_browser)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@requires_chromium
def test_the_page_shows_the_class_of_an_uploaded_image(server, confident_image):
    path, truth = confident_image
    with tempfile.TemporaryDirectory(prefix="cnnlab-chromium-") as profile:
        process, page = _open_page(f"{server}/", profile)
        try:
            ready = page.wait_until("ready")
            assert ready["model"].startswith("guide-cnn: classification, 10 classes; it takes 28×28 grey images")
            document = page.call("DOM.getDocument")["root"]["nodeId"]
            file_input = page.call("DOM.querySelector", {"nodeId": document, "selector": "#file"})["nodeId"]
            page.call("DOM.setFileInputFiles", {"files": [str(path)], "nodeId": file_input})
            shown = page.wait_until("done")
            errors = _console_errors(page.devtools.events)
        finally:
            _close(process, page)
    assert shown["error"] == "" and shown["label"] == truth
    assert shown["answer"].startswith(f"{truth} ") and shown["answer"].endswith("%")
    assert len(shown["bars"]) == 5 and shown["bars"][0] == truth  # the top-5 classes, the answer first
    assert shown["seen"] == 224 and shown["cam"] == 224  # the model's 28×28 input and Grad-CAM, enlarged
    assert errors == []
