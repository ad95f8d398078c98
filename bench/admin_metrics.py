"""What the admin server's metrics cost a top-up: nanoseconds of instrumentation per request.

    python -m bench.admin_metrics

Measures, on this machine, with timeit (best of several repeats):
- `RequestMetrics.on_end`, the engine's one call as each answer leaves (the count by channel, kind,
  acquirer, operator and code; the end-to-end histogram; the operator round-trip histogram);
- the two `time.perf_counter()` calls around the operator call that give the round trip;
- the journal's per-batch commit figures (`Buckets.observe` twice a batch), shared by the records of
  a batch (two a top-up);
- for comparison, the same figures kept in prometheus-client metric objects (labels().inc() and two
  labels().observe()), the usual way, which the design avoids on the money path.
Without `[admin]` none of it runs (the engine's hook is None: one attribute test).
"""

from __future__ import annotations

import time
import timeit

from prometheus_client import CollectorRegistry, Counter, Histogram

from switch.admin.metrics import LATENCY_BUCKETS, RequestMetrics
from switch.journal.core import BATCH_BUCKETS, COMMIT_BUCKETS
from switch.stats import Buckets
from switch.app.config import AcquirerConfig
from switch.flow.codes import ResponseCode
from switch.flow.messages import Answer, Kind, Payer, PayerKind, Request

NUMBER = 200_000
REPEAT = 7
BATCH = 50   # records per committed batch at a few thousand top-ups a second (two records a top-up)


def best_ns(statement, number: int = NUMBER) -> float:
    return min(timeit.repeat(statement, number=number, repeat=REPEAT)) / number * 1e9


def main() -> None:
    payer = Payer(kind=PayerKind.ACQUIRER, acquirer=AcquirerConfig(institution_id="603799", name="Melli"))
    request = Request(kind=Kind.TOP_UP, channel="bank87", payer=payer, acquirer_id="603799")
    answer = Answer(response_code=ResponseCode.APPROVED)
    metrics = RequestMetrics()
    on_end = metrics.on_end
    baseline = best_ns(lambda: None)
    end_ns = best_ns(lambda: on_end(request, answer, "MCI", 0.012, 0.004)) - baseline
    clock_ns = best_ns(lambda: (time.perf_counter(), time.perf_counter())) - baseline
    commit_seconds, batch_records = Buckets(COMMIT_BUCKETS), Buckets(BATCH_BUCKETS)
    commit_ns = (best_ns(lambda: (commit_seconds.observe(0.003), batch_records.observe(BATCH))) - baseline) \
        / BATCH * 2

    registry = CollectorRegistry()
    counter = Counter("x_requests", "", ["channel", "kind", "acquirer", "operator", "response_code"],
                      registry=registry)
    duration = Histogram("x_duration_seconds", "", ["channel"], buckets=LATENCY_BUCKETS, registry=registry)
    round_trip = Histogram("x_round_trip_seconds", "", ["operator"], buckets=LATENCY_BUCKETS, registry=registry)

    def client_objects() -> None:
        counter.labels("bank87", "top_up", "603799", "MCI", "00").inc()
        duration.labels("bank87").observe(0.012)
        round_trip.labels("MCI").observe(0.004)
    client_ns = best_ns(client_objects) - baseline

    total = end_ns + clock_ns + commit_ns
    print(f"on_end (one call per answer)            {end_ns:8.0f} ns")
    print(f"perf_counter x2 around the operator call {clock_ns:8.0f} ns")
    print(f"commit figures, per top-up (2 records, batch {BATCH}) {commit_ns:5.0f} ns")
    print(f"total per top-up                        {total:8.0f} ns"
          f"  ({total / 1e3 / (1e6 / 3000) * 100:.3f}% of one core at 3,000 top-ups/s)")
    print(f"for comparison, prometheus-client objects {client_ns:6.0f} ns per top-up")


if __name__ == "__main__":
    main()
