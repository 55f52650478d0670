#!/usr/bin/env python3
"""A sample reprow worker using only Python's standard library.

It prints every job it receives and answers mostly 200, sometimes 500 with a Retry-After
header, so you can watch reprow retry. Run it, then start reprow with sample/fifo.yaml:

    python3 sample/worker.py --port 5000 --fail-rate 0.2
"""
import argparse
import random
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Worker(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as reprow's pool expects
    # http.server sends the head and the body in two writes; with Nagle's algorithm on, the
    # body waits for the ACK of the head, which the client may delay ~40 ms. reprow acks at
    # once, but other clients (curl, Python's http.client) do not, so send without delay.
    disable_nagle_algorithm = True
    fail_rate = 0.2
    retry_after = 2
    quiet = False

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        job = self.headers.get("X-Reprow-Job-Id")
        attempt = self.headers.get("X-Reprow-Attempt")
        queue = self.headers.get("X-Reprow-Queue")
        fail = random.random() < self.fail_rate
        if not self.quiet:
            print(
                f"job {job} queue={queue} attempt={attempt} "
                f"-> {'500' if fail else '200'} body={body[:200]!r}",
                flush=True,
            )
        if fail:
            self.send_response(500)
            self.send_header("Retry-After", str(self.retry_after))
            reply = b"simulated failure\n"
        else:
            self.send_response(200)
            reply = b"ok\n"
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass  # the print above is the log


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--fail-rate", type=float, default=0.2, help="share of jobs answered 500")
    p.add_argument("--retry-after", type=int, default=2, help="seconds sent in Retry-After")
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args()
    Worker.fail_rate, Worker.retry_after, Worker.quiet = a.fail_rate, a.retry_after, a.quiet
    server = ThreadingHTTPServer((a.host, a.port), Worker)
    print(f"sample worker on http://{a.host}:{a.port}/ (fail rate {a.fail_rate})", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
