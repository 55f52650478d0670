"""A worker for tests/standards.rs, built on implementations of the standards nobody here wrote.

Each request reprow sends is checked with PyPI's `standardwebhooks` (Standard Webhooks 1.0) and
`svix` verifiers, once per secret listed in STD_SECRETS (a JSON list of whsec_ secrets), and once
more with its body changed (which must fail); and parsed with the `cloudevents` package's HTTP
binding (auto-detecting binary or structured mode). One JSON line per request goes to the file
named by argv[1]. A job whose X-Reprow-Job-Id is in STD_FAIL_FIRST is answered 500 on its first
attempt (every job with `*`), to see a retry. The listening port is printed on stdout's first line.
"""

import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cloudevents.core.bindings import http as ce_http
from standardwebhooks.webhooks import Webhook as StdWebhook
from svix.webhooks import Webhook as SvixWebhook

SECRETS = json.loads(os.environ.get("STD_SECRETS", "[]"))
FAIL_FIRST = set(filter(None, os.environ.get("STD_FAIL_FIRST", "").split(",")))
OUT = open(sys.argv[1], "a", encoding="utf-8")


def verified(make, secret, body, headers):
    try:
        make(secret).verify(body, headers)
        return True
    except Exception:  # any refusal: a bad signature, a stale timestamp, a missing header
        return False


def std(secret):
    class Raw(StdWebhook):
        def verify(self, data, headers):
            return StdWebhook.verify(self, data, headers, json_parse=False)

    return Raw(secret)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        headers = {k.lower(): v for k, v in self.headers.items()}
        record = {"headers": headers, "body": body.decode("utf-8", "replace")}
        changed = body + b" "
        for name, make in (("std", std), ("svix", SvixWebhook)):
            record[name] = [verified(make, s, body, headers) for s in SECRETS]
            record[name + "_changed_body"] = [
                verified(make, s, changed, headers) for s in SECRETS
            ]
        try:
            event = ce_http.from_http_event(ce_http.HTTPMessage(headers=headers, body=body))
            attrs = event.get_attributes()
            record["ce"] = {
                k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in attrs.items()
            }
            data = event.get_data()
            if isinstance(data, bytes):
                data = data.decode("utf-8", "replace")
            record["ce_data"] = data
        except Exception as e:  # not an event: reported, the test decides
            record["ce_error"] = repr(e)
        OUT.write(json.dumps(record) + "\n")
        OUT.flush()
        first = headers.get("x-reprow-attempt") == "1"
        failing = "*" in FAIL_FIRST or headers.get("x-reprow-job-id") in FAIL_FIRST
        status = 500 if first and failing else 200
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
