"""Parses a Prometheus text exposition from stdin with prometheus_client's own parser and
prints it as JSON: {family: {"type": ..., "samples": [[name, labels, value], ...]}}.
Used by tests/metrics.rs so the exposition is checked by a real Prometheus parser."""
import json
import math
import sys

from prometheus_client.parser import text_string_to_metric_families

out = {}
for family in text_string_to_metric_families(sys.stdin.read()):
    out[family.name] = {
        "type": family.type,
        "samples": [
            [s.name, s.labels, None if math.isnan(s.value) else s.value]
            for s in family.samples
        ],
    }
json.dump(out, sys.stdout)
