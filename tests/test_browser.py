"""A Korean HTML report opened in a real browser (headless Chromium, driven over the DevTools protocol).

Chromium talks DevTools over a pipe (--remote-debugging-pipe: JSON messages on fds 3/4, each ended by NUL), so the
test needs no websocket client and no port. `.ci/run` installs Debian's chromium; without it the test skips, unless
NPUYOLO_REQUIRE_BROWSER is set (CI sets it), then it fails.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from npuyolo.registry.db import Registry
from npuyolo.report import webfont
from npuyolo.report.render import render_run
from tests.helpers import new_run

HOSTILE_NAME = """<img src=x onerror="document.title='PWNED'">"""
HOSTILE_CLASS = "<script>document.title='PWNED'</script>"


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        if os.environ.get("NPUYOLO_REQUIRE_BROWSER"):
            pytest.fail("chromium is not installed (.ci/run installs it: apt-get install chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return exe


class DevTools:
    """Just enough of the Chrome DevTools protocol: one page, commands in order, events kept for waiting."""

    def __init__(self, exe: str, profile: Path, timeout: float = 20.0):
        self.timeout = timeout
        to_chrome_r, self._w = os.pipe()
        self._r, from_chrome_w = os.pipe()
        # the browser reads fd 3 and writes fd 4: move its ends above 9 first, so the dup2 below cannot clobber them
        child_r, child_w = (fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (to_chrome_r, from_chrome_w))
        for fd in (to_chrome_r, from_chrome_w):
            os.close(fd)

        def pipe_fds():  # runs in the child, before exec; dup2 leaves 3 and 4 open across exec
            os.dup2(child_r, 3)
            os.dup2(child_w, 4)

        args = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--no-default-browser-check", "--mute-audio", "--hide-scrollbars", "--remote-debugging-pipe",
                f"--user-data-dir={profile}", "about:blank"]
        self.proc = subprocess.Popen([exe, *args], preexec_fn=pipe_fds, close_fds=False, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(child_r)
        os.close(child_w)
        self._buf, self._next_id, self.events, self.session = b"", 0, [], None
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._r], [], [], left)[0]:
                raise TimeoutError("no answer from chromium")
            chunk = os.read(self._r, 1 << 20)
            if not chunk:
                raise RuntimeError(f"chromium closed the DevTools pipe (exit code {self.proc.poll()})")
            self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method: str, **params):
        self._next_id += 1
        msg = {"id": self._next_id, "method": method, "params": params}
        if self.session:
            msg["sessionId"] = self.session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            answer = self._read_message(deadline)
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer["result"]
            self.events.append(answer)

    def wait_event(self, method: str) -> dict:
        deadline = time.monotonic() + self.timeout
        while True:
            for i, event in enumerate(self.events):
                if event.get("method") == method:
                    return self.events.pop(i)
            self.events.append(self._read_message(deadline))

    def open(self, path: Path) -> None:
        self.call("Page.enable")
        self.events.clear()
        self.call("Page.navigate", url=path.resolve().as_uri())
        self.wait_event("Page.loadEventFired")
        self.js("document.fonts.ready.then(() => true)")

    def js(self, expression: str):
        result = self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    def close(self) -> None:
        try:
            self.session = None
            self.call("Browser.close")
        except Exception:
            pass
        for fd in (self._r, self._w):
            os.close(fd)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chrome = DevTools(_chromium(), tmp_path_factory.mktemp("chromium-profile"))
    yield chrome
    chrome.close()


@pytest.fixture(scope="module")
def korean_report(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("report")
    reg = Registry(tmp / "r.db")
    rid = new_run(reg, name=HOSTILE_NAME, class_names=[HOSTILE_CLASS, "정지"])
    for e in (1, 2, 3):
        reg.record_epoch(rid, e, map50=0.2 * e, map50_95=0.1 * e, precision=0.3 * e, recall=0.25 * e, box_loss=2.0 / e,
                         cls_loss=2.5 / e, dfl_loss=1.5 / e, lr=0.003, epoch_time_s=5.0)
    reg.set_status(rid, "finished")
    return render_run(reg, rid, tmp / "out", lang="ko", fmt="html")


def test_the_control_page_would_catch_a_script(browser, tmp_path):
    """The same browser setup runs inline handlers: the PWNED checks below can fail."""
    page = tmp_path / "control.html"
    page.write_text(f"<!doctype html><title>ok</title>{HOSTILE_NAME}")
    browser.open(page)
    for _ in range(50):
        if browser.js("document.title") == "PWNED":
            break
        time.sleep(0.05)
    assert browser.js("document.title") == "PWNED"


def test_korean_report_in_a_browser(browser, korean_report):
    browser.open(korean_report)
    # no script ran and none exists: hostile names stayed text
    assert browser.js("document.title") == HOSTILE_NAME
    assert browser.js("document.querySelectorAll('script').length") == 0
    assert browser.js("[...document.querySelectorAll('*')].filter(e => [...e.attributes].some(a => a.name.startsWith('on'))).length") == 0
    body = browser.js("document.body.innerText")
    assert HOSTILE_NAME in body and HOSTILE_CLASS in body and "학습 보고서" in body
    # every image is an embedded PNG that decoded
    images = browser.js("[...document.images].map(i => [i.src.split(',')[0], i.complete, i.naturalWidth, i.naturalHeight])")
    assert len(images) >= 2
    for src, complete, width, height in images:
        assert src in ("data:image/png;base64", "data:image/jpeg;base64") and complete and width > 0 and height > 0
    # the embedded font loaded, and Hangul is laid out with it, not with a fallback
    assert browser.js(f"[...document.fonts].filter(f => f.family.replace(/[\"']/g, '') === '{webfont.FAMILY}')"
                      ".map(f => f.status)") == ["loaded"]
    browser.call("DOM.enable")
    browser.call("CSS.enable")
    browser.call("DOM.getDocument", depth=0)
    checked = 0
    for selector in ("h1", "td", "h2"):
        found = browser.call("Runtime.evaluate", expression=(
            f"[...document.querySelectorAll('{selector}')].find(e => /[\\uAC00-\\uD7A3]/.test(e.textContent))"))
        node = browser.call("DOM.requestNode", objectId=found["result"]["objectId"])["nodeId"]
        text = browser.js(f"[...document.querySelectorAll('{selector}')].find(e => /[\\uAC00-\\uD7A3]/.test(e.textContent)).textContent")
        fonts = browser.call("CSS.getPlatformFontsForNode", nodeId=node)["fonts"]
        hangul = sum(1 for c in text if "\uac00" <= c <= "\ud7a3")
        ours = [f for f in fonts if f["familyName"] == webfont.FAMILY]
        assert ours and ours[0]["isCustomFont"], (selector, text, fonts)
        assert ours[0]["glyphCount"] >= hangul, (selector, text, fonts)
        others = sum(f["glyphCount"] for f in fonts if f["familyName"] != webfont.FAMILY)
        assert others <= len(text) - hangul, (selector, text, fonts)  # no Hangul glyph came from another font
        checked += 1
    assert checked == 3
