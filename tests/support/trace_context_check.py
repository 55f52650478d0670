"""The OpenTelemetry propagator's view of reprow's trace headers (tests/trace_context.rs).

Prints the producer's headers as opentelemetry-api injects them (one JSON line), then reads a
JSON list of the headers each delivery attempt carried and prints what the W3C Trace Context
propagator extracts from each.
"""

import json
import random
import sys

from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

prop = TraceContextTextMapPropagator()
trace_id = random.getrandbits(128) or 1
span_id = random.getrandbits(64) or 1
producer = SpanContext(
    trace_id=trace_id,
    span_id=span_id,
    is_remote=False,
    trace_flags=TraceFlags(TraceFlags.SAMPLED),
    trace_state=TraceState([("rojo", "00f067aa0ba902b7"), ("congo", "t61rcWkgMzE")]),
)
carrier = {}
prop.inject(carrier, context=trace.set_span_in_context(NonRecordingSpan(producer)))
print(
    json.dumps(
        {
            "traceparent": carrier["traceparent"],
            "tracestate": carrier["tracestate"],
            "trace_id": format(trace_id, "032x"),
            "span_id": format(span_id, "016x"),
            "trace_state": carrier["tracestate"],
        }
    ),
    flush=True,
)
attempts = []
for headers in json.loads(sys.stdin.readline()):
    ctx = prop.extract({k: v for k, v in headers.items() if v is not None})
    sc = trace.get_current_span(ctx).get_span_context()
    attempts.append(
        {
            "valid": sc.is_valid,
            "is_remote": sc.is_remote,
            "trace_id": format(sc.trace_id, "032x"),
            "span_id": format(sc.span_id, "016x"),
            "sampled": sc.trace_flags.sampled,
            "trace_state": sc.trace_state.to_header(),
        }
    )
print(json.dumps({"attempts": attempts}), flush=True)
