"""Drives reprow's dashboard in a real headless Chromium over the DevTools protocol.

Usage: dashboard_check.py BASE_URL TOKEN FIXED_FLAG_FILE SCREENSHOT_PNG

The worker behind queue `dash` (run by tests/dashboard.rs) fails jobs whose payload has
"bad" with 422 until FIXED_FLAG_FILE exists, and takes 4 s over jobs with "slow". Every
step waits on what the page shows (it polls the API once a second) and fails with the
page's text when it does not show it in time.
"""
import base64
import json
import sys
import time
import urllib.request

from cdp import Page, chromium

BASE, TOKEN, FIXED, SHOT = sys.argv[1:5]


def api(method, path, body=None):
    req = urllib.request.Request(BASE + path, method=method,
                                 data=None if body is None else json.dumps(body).encode())
    req.add_header("Authorization", "Bearer " + TOKEN)
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read() or b"null")


class DashboardPage(Page):
    def cell(self, queue, cls):
        return (f"(document.querySelector('#queues tr[data-queue=\"{queue}\"] td.{cls}') || "
                f"{{textContent: ''}}).textContent")


def main():
    with chromium(BASE + "/", "--window-size=1400,900", page_class=DashboardPage) as page:
        run(page)


def run(p):
    # The API has a token: the page asks for it.
    p.wait("the token prompt", "getComputedStyle(document.getElementById('auth')).display !== 'none'")
    p.eval(f"document.getElementById('token').value = {json.dumps(TOKEN)};"
           "document.getElementById('token-save').click(); true")
    p.wait("phase running", "document.getElementById('phase').textContent === 'running'")
    p.wait("the dash queue row", f"{p.cell('dash', 'done')} === '0'")
    # The worker's origin has limits (workers:): its row shows them.
    p.wait("the worker limits row",
           "document.querySelectorAll('#limits tr[data-origin]').length === 1 && "
           "document.querySelector('#limits td.rate').textContent === '50 / 50' && "
           "document.querySelector('#limits td.in-flight').textContent === '0 / 4'")

    for k in ["a", "b", "bad", "slow"]:
        api("POST", "/job/dash", {"payload": {"k": k}})
    p.wait("two jobs done", f"{p.cell('dash', 'done')} === '2'")
    p.wait("one failed job listed", "document.querySelectorAll('#failed tr[data-failed]').length === 1")
    p.wait("the failed count", f"{p.cell('dash', 'failed')} === '1'")
    p.wait("the slow job on the scoreboard",
           "[...document.querySelectorAll('#scoreboard tr[data-job]')]"
           ".some(r => r.querySelector('td.worker').textContent.includes('/work'))")
    shot = p.call("Page.captureScreenshot", format="png")
    with open(SHOT, "wb") as f:
        f.write(base64.b64decode(shot["data"]))
    print("screenshot:", SHOT, flush=True)
    p.wait("the slow job done", f"{p.cell('dash', 'done')} === '3'")
    p.wait("an empty scoreboard", "document.querySelectorAll('#scoreboard tr[data-job]').length === 0")

    # Fix the worker, then retry the failed job from the page.
    open(FIXED, "w").close()
    p.eval("document.querySelector('#failed tr[data-queue=\"dash\"] button.retry').click(); true")
    p.wait("the retried job done", f"{p.cell('dash', 'done')} === '4'")
    p.wait("the failed log empty", "document.querySelectorAll('#failed tr[data-failed]').length === 0")

    # Pause from the page: a new job waits; resume: it runs.
    p.eval("document.querySelector('#queues tr[data-queue=\"dash\"] button.toggle').click(); true")
    p.wait("the queue paused", f"{p.cell('dash', 'name')}.includes('(paused)')")
    api("POST", "/job/dash", {"payload": {"k": "later"}})
    p.wait("one job waiting", f"{p.cell('dash', 'waiting')} === '1'")
    time.sleep(1.5)
    if p.eval(p.cell("dash", "done")) != "4":
        raise SystemExit("a job ran while the queue was paused")
    p.eval("document.querySelector('#queues tr[data-queue=\"dash\"] button.toggle').click(); true")
    p.wait("the waiting job done after resume", f"{p.cell('dash', 'done')} === '5'")
    print("dashboard ok", flush=True)


main()
