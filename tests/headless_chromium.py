"""Debian's headless Chromium, driven over the DevTools protocol on a pipe, for the report's
browser tests: open a page (with JavaScript on or off), read what it logged, find an element
and its rendered box, and print a page to PDF.

``--remote-debugging-pipe`` makes Chromium read protocol messages on fd 3 and write them on fd
4, each a JSON object ended by a NUL byte; no port is opened. As root, Chromium needs
``--no-sandbox``; the background-networking flags keep it from reaching for the network.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# Debian's package here (stack/install-deps.sh); Google Chrome on a GitHub-hosted runner.
CHROMIUM = shutil.which("chromium") or shutil.which("google-chrome")
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions", "--mute-audio", "--hide-scrollbars",
]
TIMEOUT_S = 60.0


class Browser:
    """One Chromium process and one page in it."""

    def __init__(self, proc: subprocess.Popen[bytes], to_browser: int, from_browser: int) -> None:
        self.proc, self.to_browser, self.from_browser = proc, to_browser, from_browser
        self.buffer = b""
        self.next_id = 0
        self.events: list[dict[str, Any]] = []
        self.session: str | None = None

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self.buffer:
            if time.monotonic() > deadline:
                raise TimeoutError("Chromium sent nothing in time")
            chunk = os.read(self.from_browser, 1 << 16)
            if not chunk:
                raise RuntimeError(f"Chromium closed the pipe (exit {self.proc.poll()})")
            self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\0", 1)
        message: dict[str, Any] = json.loads(raw)
        return message

    def send(self, method: str, params: dict[str, Any] | None = None, *, browser_level: bool = False) -> Any:
        self.next_id += 1
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if self.session is not None and not browser_level:
            message["sessionId"] = self.session
        os.write(self.to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def wait_for(self, method: str, timeout: float = TIMEOUT_S) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        for event in self.events:
            if event["method"] == method:
                return event
        while True:
            event = self._read_message(deadline)
            if "method" in event:
                self.events.append(event)
                if event["method"] == method:
                    return event

    def settle(self, seconds: float = 1.0) -> None:
        """Collect what the page logs for a moment after it loaded."""
        deadline = time.monotonic() + seconds
        os.set_blocking(self.from_browser, False)
        try:
            while time.monotonic() < deadline:
                try:
                    chunk = os.read(self.from_browser, 1 << 16)
                except BlockingIOError:
                    time.sleep(0.05)
                    continue
                self.buffer += chunk
                while b"\0" in self.buffer:
                    raw, self.buffer = self.buffer.split(b"\0", 1)
                    event = json.loads(raw)
                    if "method" in event:
                        self.events.append(event)
        finally:
            os.set_blocking(self.from_browser, True)

    def open(self, url: str, *, javascript: bool = True) -> None:
        target = self.send("Target.createTarget", {"url": "about:blank"}, browser_level=True)["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True},
                                 browser_level=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log", "DOM"):
            self.send(f"{domain}.enable")
        if not javascript:
            self.send("Emulation.setScriptExecutionDisabled", {"value": True})
        self.send("Page.navigate", {"url": url})
        self.wait_for("Page.loadEventFired")
        self.settle()

    def errors(self) -> list[str]:
        """Everything the page logged as an error: console errors, uncaught exceptions,
        refused resources and policy violations."""
        found = []
        for event in self.events:
            method, params = event["method"], event.get("params", {})
            if method == "Runtime.exceptionThrown":
                found.append(json.dumps(params.get("exceptionDetails", {}))[:500])
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                found.append(json.dumps(params.get("args", []))[:500])
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                found.append(str(params["entry"].get("text"))[:500])
        return found

    def box(self, selector: str) -> tuple[float, float] | None:
        """The rendered width and height of the first element matching ``selector``; None when
        it is not in the document or not rendered (``display: none``)."""
        root = self.send("DOM.getDocument", {"depth": 0})["root"]["nodeId"]
        node = self.send("DOM.querySelector", {"nodeId": root, "selector": selector})["nodeId"]
        if not node:
            return None
        try:
            model = self.send("DOM.getBoxModel", {"nodeId": node})["model"]
        except RuntimeError:  # "Could not compute box model": not rendered
            return None
        return float(model["width"]), float(model["height"])

    def outer_html(self, selector: str) -> str:
        root = self.send("DOM.getDocument", {"depth": 0})["root"]["nodeId"]
        node = self.send("DOM.querySelector", {"nodeId": root, "selector": selector})["nodeId"]
        html: str = self.send("DOM.getOuterHTML", {"nodeId": node})["outerHTML"] if node else ""
        return html


@contextmanager
def browser() -> Iterator[Browser]:
    """A fresh Chromium with an empty profile, stopped afterwards."""
    if CHROMIUM is None:
        raise RuntimeError("chromium is not installed; run `bash stack/install-deps.sh`")
    profile = tempfile.mkdtemp(prefix="opsready-chromium-")
    to_child_r, to_child_w = os.pipe()
    from_child_r, from_child_w = os.pipe()

    def wire_pipes() -> None:  # in the child, before exec: the protocol's fds 3 and 4
        os.dup2(to_child_r, 3)
        os.dup2(from_child_w, 4)

    proc = subprocess.Popen(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-pipe", "about:blank"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        preexec_fn=wire_pipes, close_fds=False,
    )
    os.close(to_child_r)
    os.close(from_child_w)
    try:
        yield Browser(proc, to_child_w, from_child_r)
    finally:
        os.close(to_child_w)
        os.close(from_child_r)
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)
        shutil.rmtree(profile, ignore_errors=True)


def print_to_pdf(page: Path, pdf: Path) -> None:
    """Chromium's own ``--print-to-pdf``, without the date and title header it adds."""
    if CHROMIUM is None:
        raise RuntimeError("chromium is not installed; run `bash stack/install-deps.sh`")
    with tempfile.TemporaryDirectory(prefix="opsready-chromium-") as profile:
        proc = subprocess.run(
            [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "--no-pdf-header-footer",
             f"--print-to-pdf={pdf}", page.resolve().as_uri()],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=180, check=False,
        )
    if proc.returncode != 0 or not pdf.is_file():
        raise RuntimeError(f"chromium --print-to-pdf failed (exit {proc.returncode}): {proc.stderr[-2000:]}")


def pdf_text(pdf: Path) -> str:
    return subprocess.run(["pdftotext", "-layout", "-enc", "UTF-8", str(pdf), "-"], capture_output=True, text=True,
                          timeout=60, check=True).stdout
