"""Micro-benchmarks of the pieces every top-up goes through, with pytest-benchmark.

    python -m pytest bench/test_micro.py --benchmark-only

Not part of the normal test run (that one only looks in tests/). Each benchmark prints, after
pytest-benchmark's table, one line "target vs measured" (see bench/conftest.py).

The targets are the performance issue's where it names one (route lookup and dedupe claim at most
5 us at the sizes below, journal writes at least 50,000 rows a second); the codec target is a plan:
four codec operations a top-up (the acquirer's request decoded and its answer encoded, the
operator's request encoded and its answer decoded) within a tenth of a 2,500-top-ups-a-second
process's CPU budget each.
"""

from __future__ import annotations

import asyncio
import gc
import random
import uuid
from datetime import date, datetime, timezone
from pathlib import Path

import pytest

from routing import AmountRule, Router
from simulators.operator_dialects import Outcome as OperatorOutcome
from simulators.operator_dialects import host_dialect
from switch.flow.participants.dedupe import DedupeWindow, dedupe_key
from switch.journal import Intake, Outcome, PostgresJournal
from switch.providers.base import TopUp
from switch.providers.adapters import adapter_for
from switch.wire import load_dialect

TARGET_TPS = 2_500                         # top-ups a second one switch process should carry (2 processes: 5,000)
BUDGET_US = 1_000_000 / TARGET_TPS         # CPU microseconds per top-up (400 at 2,500/s)
CODEC_TARGET_US = BUDGET_US * 0.10         # each of the four codec operations: a tenth of the budget
ROUTE_TARGET_US = 5.0                      # the target
DEDUPE_TARGET_US = 5.0                     # the target
DEDUPE_BYTES_PER_KEY_TARGET = 200          # 1,000,000 live keys in 200 MB at most
JOURNAL_ROWS_TARGET = 50_000               # the target

PREFIX_COUNT = 100_000
PORTED_COUNT = 1_000_000
ROUTE_BATCH = 1_000                        # lookups per benchmark call
DEDUPE_LIVE_KEYS = 1_000_000
DEDUPE_BATCH = 1_000                       # claims per benchmark round
DEDUPE_ROUNDS = 20
JOURNAL_CALLERS = 1_000                    # concurrent callers, like requests in flight in the switch
JOURNAL_TXNS_PER_CALLER = 10               # each: an intake then its outcome, awaited in turn
JOURNAL_ROUNDS = 3
JOURNAL_BATCH_MAX = 500                    # the switch's default group-commit batch
OPERATORS = ("MCI", "IRANCELL", "RIGHTEL")
SEED = 8583


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _median(benchmark) -> float | None:
    """Seconds per call, or None when benchmarks are disabled (--benchmark-disable)."""
    stats = getattr(benchmark, "stats", None)
    return stats.stats.median if stats is not None else None


@pytest.fixture(scope="module")
def loop():
    """One event loop for the async pieces, uvloop like the switch where it is installed."""
    try:
        import uvloop
        event_loop = uvloop.new_event_loop()
    except ImportError:
        event_loop = asyncio.new_event_loop()
    yield event_loop
    event_loop.close()


# -- codecs ------------------------------------------------------------------------------------
def _messages(dialect_name: str) -> tuple[dict, dict]:
    """(what the switch encodes, what it decodes) in that dialect, as on the money path."""
    now = datetime.now(timezone.utc)
    if dialect_name == "bank87":
        request = {"t": "0200", "2": "6037991234567890", "3": "000000", "4": "000000050000",
                   "7": now.strftime("%m%d%H%M%S"), "11": "004217", "12": now.strftime("%H%M%S"),
                   "13": now.strftime("%m%d"), "32": "603799", "37": "ABCD00000042", "41": "BENCH001",
                   "42": "AIRSWITCHBENCH1", "48": "CH003WEB", "49": "364", "103": "09121234567"}
        echo = load_dialect("bank87").rules["echo"]["financial"]
        answer = {**{key: request[key] for key in echo if key in request}, "t": "0210", "38": "123456",
                  "39": "00", "44": "MCI", "48": "OR013MCI0000000001"}
        return answer, request
    topup = TopUp(txn_id=uuid.uuid4().hex, acquirer_id="603799", tracking_code="ABCD00000042",
                  msisdn="989121234567", amount=50_000, currency="364", stan="004217", sent_at=now)
    adapter = adapter_for(dialect_name, "MCI", "99001", "AIRSW001", secret="bench")
    request = adapter.top_up(topup)
    host = host_dialect(dialect_name, "MCI", "99001", "bench")
    wire = load_dialect(dialect_name)
    reaction = host.react(wire.decode(wire.encode(request)), True)
    answer = host.answer_top_up(reaction, OperatorOutcome.APPROVED, "123456", "MCI0000000001")
    return request, answer


@pytest.mark.parametrize("dialect_name", ["bank87", "opa87", "opb93", "opcjson"])
def test_encode(benchmark, targets, dialect_name):
    dialect = load_dialect(dialect_name)
    outgoing, _ = _messages(dialect_name)
    benchmark(dialect.encode, outgoing)
    median = _median(benchmark)
    if median is not None:
        targets.record(f"encode {dialect_name} ({outgoing.get('t') or outgoing.get('type')})", median * 1e6,
                       CODEC_TARGET_US, "us/msg")


@pytest.mark.parametrize("dialect_name", ["bank87", "opa87", "opb93", "opcjson"])
def test_decode(benchmark, targets, dialect_name):
    dialect = load_dialect(dialect_name)
    _, incoming = _messages(dialect_name)
    payload = dialect.encode(incoming)
    benchmark(dialect.decode, payload)
    median = _median(benchmark)
    if median is not None:
        targets.record(f"decode {dialect_name} ({incoming.get('t') or incoming.get('type')})", median * 1e6,
                       CODEC_TARGET_US, "us/msg")


# -- routing -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def big_router():
    """100,000 prefixes of three lengths and 1,000,000 ported numbers; the RSS it took."""
    rng = random.Random(SEED)
    before = _rss_bytes()
    prefixes: dict[str, str] = {}
    # Three prefix lengths, so a lookup that misses the ported numbers tries three slices.
    for length, share in ((6, 0.1), (7, 0.4), (8, 0.5)):
        for value in rng.sample(range(10 ** (length - 2)), int(PREFIX_COUNT * share)):
            prefixes[f"98{value:0{length - 2}d}"] = OPERATORS[value % len(OPERATORS)]
    ported = {f"989{value:09d}": OPERATORS[value % len(OPERATORS)]
              for value in rng.sample(range(10 ** 9), PORTED_COUNT)}
    rules = {operator: AmountRule(currency="364", minimum=10_000, maximum=2_000_000, step=10_000)
             for operator in OPERATORS}
    router = Router(prefixes, ported, rules, carrier_names=None)
    size = _rss_bytes() - before
    # Half the lookups are ported numbers, half are not (and go to the prefixes).
    ported_sample = rng.sample(list(ported), ROUTE_BATCH // 2)
    other = [f"989{rng.randrange(10 ** 9):09d}" for _ in range(ROUTE_BATCH // 2)]
    numbers = [number for pair in zip(ported_sample, other) for number in pair]
    del prefixes, ported
    gc.collect()
    return router, numbers, size


def test_route_lookup(benchmark, targets, big_router):
    router, numbers, size = big_router
    route = router.route

    def lookups() -> int:
        found = 0
        for number in numbers:
            if route(number) is not None:
                found += 1
        return found

    found = benchmark(lookups)
    assert found >= len(numbers) // 2   # every ported number routes
    median = _median(benchmark)
    if median is not None:
        targets.record(f"route lookup ({PREFIX_COUNT:,} prefixes, {PORTED_COUNT:,} ported)",
                       median / len(numbers) * 1e6, ROUTE_TARGET_US, "us/lookup",
                       detail=f"table RSS {size / 2**20:.0f} MiB")


# -- dedupe ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def full_dedupe_window(loop):
    """A memory DedupeWindow holding 1,000,000 live keys, filled through claim(); bytes per key by RSS."""
    window = DedupeWindow(DEDUPE_LIVE_KEYS, "memory")
    day = date.today()
    gc.collect()
    before = _rss_bytes()

    async def fill() -> None:
        # Each key is made as the switch makes it, per request: the window alone keeps it alive,
        # so the key strings are part of what the RSS delta counts.
        for n in range(DEDUPE_LIVE_KEYS):
            await window.claim(dedupe_key("603799", f"F{n:011d}", day))

    loop.run_until_complete(fill())
    gc.collect()
    bytes_per_key = (_rss_bytes() - before) / DEDUPE_LIVE_KEYS
    # The newest keys: still live after the eviction the new-key benchmark causes.
    sample = [dedupe_key("603799", f"F{n:011d}", day) for n in range(DEDUPE_LIVE_KEYS - DEDUPE_BATCH,
                                                                          DEDUPE_LIVE_KEYS)]
    yield window, day, sample, bytes_per_key
    loop.run_until_complete(window.close())


def test_dedupe_claim_new_key_in_a_full_window(benchmark, targets, loop, full_dedupe_window):
    window, day, _, bytes_per_key = full_dedupe_window
    counter = iter(range(10 ** 9))

    def batch() -> tuple[list[str]]:
        return ([dedupe_key("603799", f"N{next(counter):011d}", day) for _ in range(DEDUPE_BATCH)],), {}

    async def claim_all(keys: list[str]) -> None:
        for key in keys:
            if not await window.claim(key):
                raise AssertionError(f"{key} was new but the window said duplicate")

    benchmark.pedantic(lambda keys: loop.run_until_complete(claim_all(keys)), setup=batch,
                       rounds=DEDUPE_ROUNDS, iterations=1)
    median = _median(benchmark)
    if median is not None:
        targets.record(f"dedupe claim, new key ({DEDUPE_LIVE_KEYS:,} live, evicting)",
                       median / DEDUPE_BATCH * 1e6, DEDUPE_TARGET_US, "us/claim")
    targets.record(f"dedupe memory ({DEDUPE_LIVE_KEYS:,} live keys, RSS delta)", bytes_per_key,
                   DEDUPE_BYTES_PER_KEY_TARGET, "bytes/key")


def test_dedupe_claim_duplicate_in_a_full_window(benchmark, targets, loop, full_dedupe_window):
    window, _, sample, _ = full_dedupe_window
    live = sample

    async def claim_all() -> None:
        for key in live:
            if await window.claim(key):
                raise AssertionError(f"{key} was live but the window took it as new")

    benchmark.pedantic(lambda: loop.run_until_complete(claim_all()), rounds=DEDUPE_ROUNDS, iterations=1)
    median = _median(benchmark)
    if median is not None:
        targets.record(f"dedupe claim, duplicate ({DEDUPE_LIVE_KEYS:,} live)", median / len(live) * 1e6,
                       DEDUPE_TARGET_US, "us/claim")


# -- journal -----------------------------------------------------------------------------------
def _records(run: str, callers: int, per_caller: int) -> list[list[tuple[Intake, Outcome]]]:
    now = datetime.now(timezone.utc)
    day = now.date()
    work = []
    for caller in range(callers):
        pairs = []
        for n in range(per_caller):
            txn_id = uuid.uuid4().hex
            intake = Intake(txn_id=txn_id, received_at=now, business_day=day, mti="0200", acquirer_id="603799",
                            tracking_code=f"{run}{caller:04d}{n:04d}"[:12], stan=f"{n % 999_999 + 1:06d}",
                            transmitted_at=now.strftime("%m%d%H%M%S"), terminal_id="BENCH001",
                            merchant_id="AIRSWITCHBENCH1", card_masked="603799******7890", msisdn="989121234567",
                            amount=50_000, currency="364", channel="WEB", uses_key=True)
            outcome = Outcome(txn_id=txn_id, ended_at=now, state="approved", response_code="00", operator_id="MCI",
                              operator_ref="MCI0000000001", approval_code="123456", operator_code="00",
                              latency_ms=1.0)
            pairs.append((intake, outcome))
        work.append(pairs)
    return work


def test_journal_group_commit(benchmark, targets, loop, pg_dsn, pg_schema):
    journal = PostgresJournal(pg_dsn, schema=pg_schema, batch_max=JOURNAL_BATCH_MAX)
    loop.run_until_complete(journal.start())
    rounds = iter(range(10 ** 6))

    def setup():
        run = f"J{next(rounds):03d}"
        return (_records(run, JOURNAL_CALLERS, JOURNAL_TXNS_PER_CALLER),), {}

    async def caller(pairs: list[tuple[Intake, Outcome]]) -> None:
        for intake, outcome in pairs:
            if not await journal.record_intake(intake):
                raise AssertionError(f"intake {intake.tracking_code} refused as a duplicate")
            await journal.record_outcome(outcome)

    async def everyone(work) -> None:
        await asyncio.gather(*(caller(pairs) for pairs in work))

    try:
        benchmark.pedantic(lambda work: loop.run_until_complete(everyone(work)), setup=setup,
                           rounds=JOURNAL_ROUNDS, iterations=1)
        batches = journal.batches_committed
        # Records by the commits that ended between their queueing and the start of their own.
        waits = dict(sorted(getattr(journal, "commit_waits", {}).items()))
    finally:
        loop.run_until_complete(journal.close())
    median = _median(benchmark)
    if median is not None:
        rows = 2 * JOURNAL_CALLERS * JOURNAL_TXNS_PER_CALLER
        targets.record(f"journal rows ({JOURNAL_CALLERS:,} concurrent callers)", rows / median, JOURNAL_ROWS_TARGET,
                       "rows/s", higher_is_better=True,
                       detail=f"{batches} commits for {JOURNAL_ROUNDS * rows:,} rows; records by commits waited: {waits}")
