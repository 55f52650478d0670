"""Headless Chromium driven over the DevTools protocol, shared by the browser tests
(dashboard_check.py, cross_site_check.py)."""
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request

import websocket  # Debian: python3-websocket

CHROMIUM = os.environ.get("REPROW_TEST_CHROMIUM") or shutil.which("chromium") or "chromium-browser"
DEADLINE = 30


class Page:
    def __init__(self, ws):
        self.ws = ws
        self.next_id = 0

    def call(self, method, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]

    def eval(self, expr, await_promise=False):
        r = self.call("Runtime.evaluate", expression=expr, returnByValue=True,
                      awaitPromise=await_promise)
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expr}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait(self, what, expr):
        """Waits until `expr` is truthy and returns its value; fails with the page's text."""
        end = time.time() + DEADLINE
        while time.time() < end:
            try:
                value = self.eval(expr)
                if value:
                    print("seen:", what, flush=True)
                    return value
            except RuntimeError:
                pass  # the page is still loading: its elements are not there yet
            time.sleep(0.1)
        text = self.eval("document.body && document.body.innerText")
        raise SystemExit(f"timed out waiting for {what}; the page shows:\n{text}")

    def goto(self, url, ready):
        self.call("Page.navigate", url=url)
        return self.wait(url, ready)


@contextlib.contextmanager
def chromium(url, *flags, page_class=Page):
    """A headless Chromium on a fresh profile, opened at `url`; yields its page."""
    profile = tempfile.mkdtemp(prefix="reprow-chromium-")
    browser = subprocess.Popen(
        [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--disable-dev-shm-usage", "--no-first-run",
         "--remote-debugging-port=0", f"--user-data-dir={profile}", *flags, url],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = os.path.join(profile, "DevToolsActivePort")
        end = time.time() + DEADLINE
        while not os.path.exists(port_file) or not open(port_file).read().strip():
            if time.time() > end or browser.poll() is not None:
                raise SystemExit("Chromium did not open its DevTools port")
            time.sleep(0.1)
        port = open(port_file).read().split()[0]
        targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list").read())
        target = next(t for t in targets if t["type"] == "page")
        yield page_class(websocket.create_connection(target["webSocketDebuggerUrl"], timeout=30))
    finally:
        browser.kill()
        browser.wait()
        shutil.rmtree(profile, ignore_errors=True)
