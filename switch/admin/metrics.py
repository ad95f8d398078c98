"""What /metrics shows, in Prometheus' text format, at the least cost to the money path.

Two kinds of figures:

- Per request (`RequestMetrics.on_end`, the engine's one call as an answer leaves): a count by
  channel, kind, acquirer, operator and response code, and two latency histograms. They are
  plain dicts and lists of bucket counts, not prometheus-client metric objects: one dict
  update and one or two `bisect` calls a request (bench/admin_metrics.py measures it). The
  journal keeps its own per-batch commit figures (`commit_seconds`, `batch_records`), read here.
- Everything else is read at scrape time from what the switch already holds (`SwitchCollector`,
  a prometheus-client custom collector): in-flight, links, the journal's queue and spill, the
  dedupe window; and, through one grouped journal read and one balance read per prepaid account
  (`refresh`, awaited by the handler before the text is built), the reversal queue and floats.

Labels are bounded by configuration: acquirers are the configured payers (not field 32 as sent),
operators the configured or routed ones, response codes the 17 of INTERFACES.md 1.6. Never an
MSISDN, a tracking code or a link's peer port.
"""

from __future__ import annotations

import asyncio
import logging
from bisect import bisect_left
from typing import Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from switch.accounts import LedgerError
from switch.clock import utcnow
from switch.stats import Buckets
from switch.journal import JournalError, ReversalQueueRow

log = logging.getLogger("airswitch.admin")

# Seconds. Top-ups take an operator round trip (tens of ms) plus two journal commits; the
# operator timeout (default 10 s) bounds them.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
REFRESH_TIMEOUT = 2.0   # seconds the journal and ledger reads of one scrape may take


class RequestMetrics:
    """The per-request figures: `on_end` is the engine's observer (given to it at construction)."""

    def __init__(self) -> None:
        # (channel, kind, acquirer, operator, response code) -> requests answered
        self.requests: dict[tuple, int] = {}
        self.duration: dict[str, Buckets] = {}     # by channel: received -> answered
        self.round_trip: dict[str, Buckets] = {}   # by operator: sent -> its answer

    def on_end(self, request, answer, operator_id: str | None, seconds: float, operator_seconds: float | None) -> None:
        channel = request.channel
        key = (channel, request.kind, request.payer.acquirer.institution_id, operator_id or "",
               answer.response_code)
        requests = self.requests
        requests[key] = requests.get(key, 0) + 1
        # Buckets.observe written out: this runs for every request, and a call costs as much as the work.
        duration = self.duration.get(channel)
        if duration is None:
            duration = self.duration[channel] = Buckets(LATENCY_BUCKETS)
        duration.counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        duration.sum += seconds
        if operator_seconds is not None:
            round_trip = self.round_trip.get(operator_id)
            if round_trip is None:
                round_trip = self.round_trip[operator_id] = Buckets(LATENCY_BUCKETS)
            round_trip.counts[bisect_left(LATENCY_BUCKETS, operator_seconds)] += 1
            round_trip.sum += operator_seconds


def _histogram(name: str, documentation: str, labels: list[str], series: dict) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, documentation, labels=labels)
    for label_values, buckets in sorted(series.items()):
        family.add_metric(list(label_values), buckets.cumulative(), buckets.sum)
    return family


class SwitchCollector(Collector):
    """Reads a running switch at scrape time (see the module docstring). `switch` is
    switch.app.server.Switch; not imported, so that the app may import this module."""

    def __init__(self, switch, requests: RequestMetrics) -> None:
        self.switch = switch
        self.requests = requests
        self.reversal_queue: list[ReversalQueueRow] = []
        self.journal_readable = False
        self.floats: dict[str, tuple[int, int, int]] = {}   # account -> (balance, held, available)

    async def refresh(self) -> None:
        """The figures that need a read: the reversal queue and the prepaid floats (bounded in time)."""
        switch = self.switch
        try:
            async with asyncio.timeout(REFRESH_TIMEOUT):
                self.reversal_queue = await switch.journal.reversal_queue()
            self.journal_readable = True
        except (JournalError, TimeoutError) as exc:
            log.debug("metrics: journal not readable: %s", exc)
            self.reversal_queue, self.journal_readable = [], False
        ledger = switch.ledger
        if ledger is None:
            return
        accounts = float_accounts(switch.config)
        try:
            async with asyncio.timeout(REFRESH_TIMEOUT):
                found = await asyncio.gather(*(ledger.balance(a) for a in accounts), return_exceptions=True)
        except TimeoutError:
            found = []
        self.floats = {account: (b.balance, b.held, b.available) for account, b in zip(accounts, found)
                       if not isinstance(b, BaseException)}
        for account, b in zip(accounts, found):
            if isinstance(b, BaseException) and not isinstance(b, LedgerError):
                log.warning("metrics: float of %s not read: %r", account, b)

    def collect(self) -> Iterable:
        yield from self._requests()
        yield from self._core()
        yield from self._journal()
        yield from self._operators()
        yield from self._reversals()
        yield from self._floats()

    def _requests(self) -> Iterable:
        m = self.requests
        requests = CounterMetricFamily("airswitch_requests", "Requests answered, by channel, kind, acquirer, "
                                       "operator (empty: none) and response code (field 39)",
                                       labels=["channel", "kind", "acquirer", "operator", "response_code"])
        for key, count in sorted(m.requests.items()):
            requests.add_metric([str(value) for value in key], count)
        yield requests
        yield _histogram("airswitch_request_duration_seconds",
                         "Seconds from a request's arrival at the core to its answer, by channel",
                         ["channel"], {(channel,): b for channel, b in m.duration.items()})
        yield _histogram("airswitch_operator_round_trip_seconds",
                         "Seconds from sending a top-up to an operator to its answer (answered ones only)",
                         ["operator"], {(operator,): b for operator, b in m.round_trip.items()})
        journal = self.switch.journal
        yield _histogram("airswitch_journal_commit_duration_seconds", "Seconds one journal batch took to commit",
                         [], {(): journal.commit_seconds})
        yield _histogram("airswitch_journal_batch_records", "Records per committed journal batch", [],
                         {(): journal.batch_records})

    def _core(self) -> Iterable:
        core, dedupe = self.switch.core, self.switch.dedupe
        yield GaugeMetricFamily("airswitch_in_flight_requests", "Transactions in flight in this process",
                                value=len(core.in_flight))
        yield CounterMetricFamily("airswitch_shed_requests", "Top-ups answered 91 at once for overload "
                                  "(not journaled)", value=core.admission.shed_total)
        yield GaugeMetricFamily("airswitch_journal_commit_queue_delay_seconds",
                                "Standing queue in front of journal commits, as admission measures it",
                                value=core.intakes.delay())
        if dedupe.size is not None:
            yield GaugeMetricFamily("airswitch_dedupe_window_keys", "Dedupe keys held in the in-memory window",
                                    value=dedupe.size)

    def _journal(self) -> Iterable:
        journal = self.switch.journal
        yield CounterMetricFamily("airswitch_journal_batches", "Journal batches committed",
                                  value=journal.batches_committed)
        yield GaugeMetricFamily("airswitch_journal_queued_records", "Records waiting for the journal writer",
                                value=journal.queued)
        yield GaugeMetricFamily("airswitch_journal_spilling", "1 while records go to the spill file",
                                value=int(journal.spilling))
        yield CounterMetricFamily("airswitch_journal_spilled_records", "Records written to the spill file",
                                  value=journal.records_spilled)
        yield GaugeMetricFamily("airswitch_journal_readable", "1 if this scrape's journal read succeeded",
                                value=int(self.journal_readable))

    def _operators(self) -> Iterable:
        up = GaugeMetricFamily("airswitch_operator_up", "1 if the operator has at least one live link",
                               labels=["operator"])
        links = GaugeMetricFamily("airswitch_operator_links", "Operator links by state (up: signed on and taking "
                                  "requests)", labels=["operator", "state"])
        in_flight = GaugeMetricFamily("airswitch_operator_in_flight_requests",
                                      "Requests awaiting an operator's answer", labels=["operator"])
        for operator_id, pool in sorted(self.switch.providers.items()):
            pool_links = pool.links
            live = sum(1 for link in pool_links if link.is_up)
            up.add_metric([operator_id], int(live > 0))
            links.add_metric([operator_id, "up"], live)
            links.add_metric([operator_id, "down"], len(pool_links) - live)
            in_flight.add_metric([operator_id], sum(link.in_flight for link in pool_links))
        yield from (up, links, in_flight)

    def _reversals(self) -> Iterable:
        queued = GaugeMetricFamily("airswitch_reversals_queued", "Stored reversals not settled: pending (being "
                                   "sent) or failed (need a person)", labels=["operator", "state"])
        oldest = GaugeMetricFamily("airswitch_reversal_oldest_age_seconds",
                                   "Age of the oldest unsettled stored reversal", labels=["operator", "state"])
        now = utcnow()
        for row in self.reversal_queue:
            queued.add_metric([row.operator_id, row.state], row.count)
            oldest.add_metric([row.operator_id, row.state], (now - row.oldest_created_at).total_seconds())
        yield from (queued, oldest)

    def _floats(self) -> Iterable:
        if self.switch.ledger is None:
            return
        names = (("airswitch_float_balance", "Prepaid float balance, minor currency units"),
                 ("airswitch_float_held", "Prepaid float held by top-ups in flight, minor currency units"),
                 ("airswitch_float_available", "Prepaid float the next top-up may take, minor currency units"))
        families = [GaugeMetricFamily(name, text, labels=["account"]) for name, text in names]
        for account, values in sorted(self.floats.items()):
            for family, value in zip(families, values):
                family.add_metric([account], value)
        yield from families


def float_accounts(config) -> list[str]:
    """The prepaid accounts the configuration names: prepaid acquirers' and terminals' agents'."""
    accounts = {a.account or a.institution_id for a in config.acquirers if a.prepaid}
    accounts.update(t.account for t in config.terminals if t.account)
    return sorted(accounts)
