"""The float ledger against a real PostgreSQL schema. No mocks.

Plain functions that drive the ledger with asyncio.run(). The concurrency tests race 200
holds against a float that covers exactly 100 of them, from several ledgers (separate
pools) in one process and from several OS processes, then settle them and audit the
ledger row by row.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import random
import uuid

import asyncpg
import pytest

from switch.accounts import (
    Balance,
    FloatLedger,
    InsufficientFloat,
    LedgerError,
    LedgerUnavailable,
    Pricing,
    UnknownAccount,
    UnknownHold,
)
from switch.accounts.schema import MIGRATIONS, SCHEMA_VERSION_TABLE
from switch.journal import PostgresJournal

ACQUIRER = "603799"
AGENT, SUB_AGENT, SUB_SUB_AGENT, OTHER_AGENT = "AGENT0001", "AGENT0001-01", "AGENT0001-01-01", "AGENT0002"
OPS = "ops:test"

# The race: a float that covers exactly half of the holds thrown at it.
RACE_FLOAT = 1_000_000
RACE_HOLD = 10_000
RACE_HOLDS = 200
RACE_LEDGERS = 4
RACE_POOL_SIZE = 5
RACE_REFUNDS = 20
PROCESS_TIMEOUT = 60.0  # seconds, per worker process


# -- helpers ------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def opened(dsn: str, schema: str, **kwargs):
    ledger = FloatLedger(dsn, schema=schema, **kwargs)
    await ledger.start()
    try:
        yield ledger
    finally:
        await ledger.close()


@contextlib.asynccontextmanager
async def raw(dsn: str, schema: str):
    conn = await asyncpg.connect(dsn, server_settings={"search_path": f'"{schema}"'})
    try:
        yield conn
    finally:
        await conn.close()


def txn() -> str:
    return uuid.uuid4().hex


# Every entry, in the order it happened, against the running sums of the entries before
# it: the balance and the available float at every point of the account's history.
AUDIT = """
SELECT count(*) AS entries,
       min(running_balance) AS min_balance,
       min(running_balance - running_held + credit_limit) AS min_available,
       count(*) FILTER (WHERE running_balance <> balance_after OR running_held <> held_after) AS mismatches
  FROM (SELECT e.balance_after, e.held_after, b.credit_limit,
               sum(e.amount) OVER w AS running_balance, sum(e.held_change) OVER w AS running_held
          FROM ledger_entry e JOIN account_balance b USING (account_id)
         WHERE e.account_id = $1
        WINDOW w AS (ORDER BY e.id)) history
"""


async def audit(dsn: str, schema: str, account_id: str) -> dict:
    async with raw(dsn, schema) as conn:
        history = dict(await conn.fetchrow(AUDIT, account_id))
        kinds = await conn.fetch(
            "SELECT kind, count(*), count(DISTINCT txn_id) FROM ledger_entry WHERE account_id = $1 GROUP BY kind",
            account_id,
        )
    history["kinds"] = {kind: (count, distinct) for kind, count, distinct in kinds}
    return history


# -- schema and lifecycle ------------------------------------------------------------------


def test_concurrent_starts_migrate_once_and_share_a_schema_with_the_journal(pg_dsn, pg_schema):
    async def scenario():
        ledgers = [FloatLedger(pg_dsn, schema=pg_schema, pool_size=1) for _ in range(3)]
        journal = PostgresJournal(pg_dsn, schema=pg_schema, pool_size=2)
        await asyncio.gather(*(ledger.start() for ledger in ledgers), journal.start())
        try:
            async with raw(pg_dsn, pg_schema) as conn:
                versions = await conn.fetch(f"SELECT version FROM {SCHEMA_VERSION_TABLE} ORDER BY version")
                journal_versions = await conn.fetchval("SELECT count(*) FROM schema_version")
            assert [row[0] for row in versions] == list(range(1, len(MIGRATIONS) + 1))
            assert journal_versions >= 1
            await ledgers[0].open_account(ACQUIRER)
            assert await ledgers[1].balance(ACQUIRER) == Balance(0, 0, 0)
        finally:
            await asyncio.gather(*(ledger.close() for ledger in ledgers), journal.close())

    asyncio.run(scenario())


def test_a_schema_newer_than_the_code_is_refused(pg_dsn, pg_schema):
    async def scenario():
        async with opened(pg_dsn, pg_schema):
            pass
        async with raw(pg_dsn, pg_schema) as conn:
            await conn.execute(f"INSERT INTO {SCHEMA_VERSION_TABLE} (version) VALUES (99)")
        with pytest.raises(LedgerError, match="newer than this code"):
            await FloatLedger(pg_dsn, schema=pg_schema).start()

    asyncio.run(scenario())


def test_an_unreachable_or_stopped_ledger_raises_unavailable(pg_dsn, pg_schema):
    async def scenario():
        with pytest.raises(LedgerUnavailable):
            await FloatLedger("postgresql://postgres@127.0.0.1:1/test", timeout=2.0).start()
        ledger = FloatLedger(pg_dsn, schema=pg_schema)
        with pytest.raises(LedgerUnavailable):
            await ledger.hold(ACQUIRER, txn(), 1)
        await ledger.start()
        await ledger.close()
        await ledger.close()  # idempotent
        with pytest.raises(LedgerUnavailable):
            await ledger.balance(ACQUIRER)

    asyncio.run(scenario())


# -- accounts, deposits, adjustments, transfers -------------------------------------------


def test_open_account_is_idempotent_and_refuses_a_different_reopen(pg_dsn, pg_schema):
    async def scenario():
        async with opened(pg_dsn, pg_schema) as ledger:
            await ledger.open_account(AGENT, credit_limit=5_000)
            await ledger.open_account(AGENT, credit_limit=5_000)
            await ledger.open_account(SUB_AGENT, parent=AGENT)
            await ledger.open_account(SUB_AGENT, parent=AGENT)
            assert await ledger.balance(AGENT) == Balance(0, 0, 5_000)
            with pytest.raises(LedgerError, match="already exists"):
                await ledger.open_account(AGENT, credit_limit=0)
            with pytest.raises(LedgerError, match="already exists"):
                await ledger.open_account(SUB_AGENT)  # without its parent
            with pytest.raises(UnknownAccount):
                await ledger.open_account("AGENT0404-01", parent="AGENT0404")
            with pytest.raises(LedgerError, match="currency"):
                await ledger.open_account("AGENT0001-USD", parent=AGENT, currency="840")
            with pytest.raises(UnknownAccount):
                await ledger.balance("AGENT0404")
            with pytest.raises(UnknownAccount):
                await ledger.statement("AGENT0404")
            with pytest.raises(ValueError):
                await ledger.open_account(AGENT, credit_limit=-1)

    asyncio.run(scenario())


def test_deposit_and_adjust_move_the_balance_and_appear_on_the_statement(pg_dsn, pg_schema):
    async def scenario():
        async with opened(pg_dsn, pg_schema) as ledger:
            await ledger.open_account(ACQUIRER)
            assert await ledger.deposit(ACQUIRER, 1_000_000, actor=OPS, note="wire 42") == 1_000_000
            assert await ledger.adjust(ACQUIRER, -250_000, actor=OPS, note="chargeback 17") == 750_000
            assert await ledger.adjust(ACQUIRER, 50_000, actor=OPS, note="fee rebate") == 800_000
            with pytest.raises(InsufficientFloat):
                await ledger.adjust(ACQUIRER, -800_001, actor=OPS, note="too much")
            with pytest.raises(ValueError):
                await ledger.adjust(ACQUIRER, -1, actor=OPS, note="")  # a reason is required
            with pytest.raises(ValueError):
                await ledger.deposit(ACQUIRER, 0, actor=OPS)
            with pytest.raises(ValueError):
                await ledger.deposit(ACQUIRER, -5, actor=OPS)
            with pytest.raises(TypeError):
                await ledger.deposit(ACQUIRER, 10.5, actor=OPS)
            with pytest.raises(UnknownAccount):
                await ledger.deposit("404404", 1, actor=OPS)

            entries = await ledger.statement(ACQUIRER)
            assert [(e.kind, e.amount, e.balance_after, e.note, e.actor) for e in entries] == [
                ("adjustment", 50_000, 800_000, "fee rebate", OPS),
                ("adjustment", -250_000, 750_000, "chargeback 17", OPS),
                ("deposit", 1_000_000, 1_000_000, "wire 42", OPS),
            ]
            assert [e.kind for e in await ledger.statement(ACQUIRER, limit=1)] == ["adjustment"]
            assert await ledger.balance(ACQUIRER) == Balance(800_000, 0, 800_000)
            assert await ledger.verify(ACQUIRER)

    asyncio.run(scenario())


def test_transfer_only_between_an_agent_and_its_sub_agent_and_never_below_zero(pg_dsn, pg_schema):
    async def scenario():
        async with opened(pg_dsn, pg_schema) as ledger:
            await ledger.open_account(AGENT)
            await ledger.open_account(SUB_AGENT, parent=AGENT)
            await ledger.open_account(SUB_SUB_AGENT, parent=SUB_AGENT)
            await ledger.open_account(OTHER_AGENT)
            await ledger.deposit(AGENT, 100_000, actor=OPS)
            await ledger.deposit(OTHER_AGENT, 100_000, actor=OPS)

            assert await ledger.transfer(AGENT, SUB_AGENT, 60_000, actor=OPS, note="weekly float") == (40_000, 60_000)
            assert await ledger.transfer(SUB_AGENT, AGENT, 10_000, actor=OPS, note="sweep") == (50_000, 50_000)
            assert await ledger.transfer(SUB_AGENT, SUB_SUB_AGENT, 5_000, actor=OPS) == (45_000, 5_000)

            for source, target in [(AGENT, OTHER_AGENT), (OTHER_AGENT, SUB_AGENT), (AGENT, SUB_SUB_AGENT),
                                   (SUB_SUB_AGENT, AGENT), (AGENT, AGENT)]:
                with pytest.raises(LedgerError, match="not an agent and its sub-agent"):
                    await ledger.transfer(source, target, 1, actor=OPS)
            with pytest.raises(InsufficientFloat):
                await ledger.transfer(SUB_AGENT, AGENT, 45_001, actor=OPS)
            with pytest.raises(InsufficientFloat):
                await ledger.transfer(AGENT, SUB_AGENT, 50_001, actor=OPS)
            with pytest.raises(UnknownAccount):
                await ledger.transfer(AGENT, "AGENT0404", 1, actor=OPS)
            # A hold reduces what can be transferred.
            await ledger.hold(SUB_AGENT, txn(), 40_000)
            with pytest.raises(InsufficientFloat):
                await ledger.transfer(SUB_AGENT, AGENT, 5_001, actor=OPS)

            balances = {a: (await ledger.balance(a)).balance for a in (AGENT, SUB_AGENT, SUB_SUB_AGENT, OTHER_AGENT)}
            assert balances == {AGENT: 50_000, SUB_AGENT: 45_000, SUB_SUB_AGENT: 5_000, OTHER_AGENT: 100_000}
            out, into = (await ledger.statement(AGENT, limit=2))[1], (await ledger.statement(SUB_AGENT))[-1]
            assert (out.kind, out.amount, into.kind, into.amount) == ("transfer_out", -60_000, "transfer_in", 60_000)
            assert out.txn_id == into.txn_id and out.txn_id.startswith("transfer:")
            for account in balances:
                assert await ledger.verify(account)

    asyncio.run(scenario())


# -- hold, capture, release, refund ---------------------------------------------------------


def test_hold_capture_refund_are_idempotent_and_follow_the_state_rules(pg_dsn, pg_schema):
    async def scenario():
        async with opened(pg_dsn, pg_schema) as ledger:
            await ledger.open_account(ACQUIRER)
            await ledger.deposit(ACQUIRER, 100_000, actor=OPS)
            approved = txn()
            assert await ledger.hold(ACQUIRER, approved, 30_000) == 70_000
            assert await ledger.hold(ACQUIRER, approved, 30_000) == 70_000  # a repeat holds nothing more
            assert await ledger.balance(ACQUIRER) == Balance(100_000, 30_000, 70_000)
            with pytest.raises(LedgerError, match="already holds"):
                await ledger.hold(ACQUIRER, approved, 31_000)
            await ledger.capture(approved)
            await ledger.capture(approved)
            assert await ledger.balance(ACQUIRER) == Balance(70_000, 0, 70_000)
            with pytest.raises(LedgerError, match="cannot release"):
                await ledger.release(approved)
            await ledger.refund(approved)
            await ledger.refund(approved)
            await ledger.capture(approved)  # still "already captured": nothing happens
            assert await ledger.balance(ACQUIRER) == Balance(100_000, 0, 100_000)

            declined = txn()
            await ledger.hold(ACQUIRER, declined, 20_000)
            await ledger.release(declined)
            await ledger.release(declined)
            with pytest.raises(LedgerError, match="released"):
                await ledger.capture(declined)
            with pytest.raises(LedgerError, match="never captured"):
                await ledger.refund(declined)
            assert await ledger.balance(ACQUIRER) == Balance(100_000, 0, 100_000)

            still_held = txn()
            await ledger.hold(ACQUIRER, still_held, 5_000)
            with pytest.raises(LedgerError, match="never captured"):
                await ledger.refund(still_held)
            with pytest.raises(UnknownHold):
                await ledger.capture(txn())
            with pytest.raises(UnknownHold):
                await ledger.refund(txn())

            kinds = [e.kind for e in reversed(await ledger.statement(ACQUIRER))]
            assert kinds == ["deposit", "hold", "capture", "refund", "hold", "release", "hold"]
            assert await ledger.balance(ACQUIRER) == Balance(100_000, 5_000, 95_000)
            assert await ledger.verify(ACQUIRER)

    asyncio.run(scenario())


def test_release_of_a_txn_that_holds_nothing_refuses_its_late_hold(pg_dsn, pg_schema):
    async def scenario():
        async with opened(pg_dsn, pg_schema) as ledger:
            await ledger.open_account(ACQUIRER)
            await ledger.deposit(ACQUIRER, 10_000, actor=OPS)
            timed_out = txn()
            await ledger.release(timed_out)  # its hold never committed (or not yet)
            await ledger.release(timed_out)
            with pytest.raises(LedgerError, match="released before its hold"):
                await ledger.hold(ACQUIRER, timed_out, 1_000)
            assert await ledger.balance(ACQUIRER) == Balance(10_000, 0, 10_000)
            assert await ledger.verify(ACQUIRER)

    asyncio.run(scenario())


@pytest.mark.parametrize("hold_commits", [True, False], ids=["hold-commits", "hold-rolls-back"])
def test_release_racing_an_uncommitted_hold_waits_for_it_and_settles_it(pg_dsn, pg_schema, hold_commits):
    async def scenario():
        async with opened(pg_dsn, pg_schema) as ledger:
            await ledger.open_account(ACQUIRER)
            await ledger.deposit(ACQUIRER, 10_000, actor=OPS)
            racing = txn()
            async with raw(pg_dsn, pg_schema) as conn:
                in_flight = conn.transaction()
                await in_flight.start()
                await conn.fetchval("SELECT accounts_hold($1, $2, $3, 'switch')", ACQUIRER, racing, 4_000)
                release = asyncio.create_task(ledger.release(racing))
                await asyncio.sleep(0.2)
                assert not release.done()  # waits on the hold's claim of the txn
                await (in_flight.commit() if hold_commits else in_flight.rollback())
                await release
            assert await ledger.balance(ACQUIRER) == Balance(10_000, 0, 10_000)
            kinds = [e.kind for e in reversed(await ledger.statement(ACQUIRER))]
            assert kinds == (["deposit", "hold", "release"] if hold_commits else ["deposit"])
            with pytest.raises(LedgerError, match="released"):
                await ledger.capture(racing)
            assert await ledger.verify(ACQUIRER)

    asyncio.run(scenario())


def test_insufficient_float_refuses_the_hold_with_51_and_takes_nothing(pg_dsn, pg_schema):
    async def scenario():
        async with opened(pg_dsn, pg_schema) as ledger:
            await ledger.open_account(ACQUIRER)
            await ledger.deposit(ACQUIRER, 50_000, actor=OPS)
            await ledger.hold(ACQUIRER, txn(), 30_000)
            refused = txn()
            with pytest.raises(InsufficientFloat, match="20000 available"):
                await ledger.hold(ACQUIRER, refused, 20_001)
            assert await ledger.hold(ACQUIRER, txn(), 20_000) == 0  # exactly what is left
            with pytest.raises(InsufficientFloat):
                await ledger.hold(ACQUIRER, txn(), 1)
            with pytest.raises(UnknownHold):
                await ledger.capture(refused)  # the refused hold left no trace
            with pytest.raises(UnknownAccount):
                await ledger.hold("404404", txn(), 1)
            assert await ledger.balance(ACQUIRER) == Balance(50_000, 50_000, 0)
            assert await ledger.verify(ACQUIRER)

    asyncio.run(scenario())


def test_credit_limit_lets_the_float_go_negative_down_to_the_limit_only(pg_dsn, pg_schema):
    async def scenario():
        async with opened(pg_dsn, pg_schema) as ledger:
            await ledger.open_account(AGENT, credit_limit=30_000)
            await ledger.deposit(AGENT, 10_000, actor=OPS)
            first = txn()
            assert await ledger.hold(AGENT, first, 25_000) == 15_000
            with pytest.raises(InsufficientFloat):
                await ledger.hold(AGENT, txn(), 15_001)
            await ledger.capture(first)
            assert await ledger.balance(AGENT) == Balance(-15_000, 0, 15_000)
            assert await ledger.hold(AGENT, txn(), 15_000) == 0
            with pytest.raises(InsufficientFloat):
                await ledger.adjust(AGENT, -1, actor=OPS, note="would pass the limit")
            assert await ledger.deposit(AGENT, 40_000, actor=OPS) == 25_000
            assert await ledger.balance(AGENT) == Balance(25_000, 15_000, 40_000)
            assert await ledger.verify(AGENT)

    asyncio.run(scenario())


def test_ledger_entries_and_accounts_cannot_be_rewritten_and_the_float_has_a_floor(pg_dsn, pg_schema):
    async def scenario():
        async with opened(pg_dsn, pg_schema) as ledger:
            await ledger.open_account(ACQUIRER)
            await ledger.deposit(ACQUIRER, 1_000, actor=OPS)
        async with raw(pg_dsn, pg_schema) as conn:
            for statement in ("UPDATE ledger_entry SET amount = 1000000", "DELETE FROM ledger_entry",
                              "TRUNCATE ledger_entry", "UPDATE account SET parent_id = NULL",
                              "DELETE FROM account"):
                with pytest.raises(asyncpg.RaiseError, match="append-only"):
                    await conn.execute(statement)
            # The backstop behind the functions: no write can leave the float below its limit.
            with pytest.raises(asyncpg.CheckViolationError):
                await conn.execute("UPDATE account_balance SET held = balance + 1")

    asyncio.run(scenario())


def test_verify_detects_a_cache_that_disagrees_with_the_entries(pg_dsn, pg_schema):
    async def scenario():
        async with opened(pg_dsn, pg_schema) as ledger:
            await ledger.open_account(ACQUIRER)
            await ledger.deposit(ACQUIRER, 1_000, actor=OPS)
            await ledger.hold(ACQUIRER, txn(), 100)
            assert await ledger.verify(ACQUIRER)
            async with raw(pg_dsn, pg_schema) as conn:
                await conn.execute("UPDATE account_balance SET balance = balance + 1")
            assert not await ledger.verify(ACQUIRER)
            async with raw(pg_dsn, pg_schema) as conn:
                await conn.execute("UPDATE account_balance SET balance = balance - 1, held = 0")
            assert not await ledger.verify(ACQUIRER)
            with pytest.raises(UnknownAccount):
                await ledger.verify("404404")

    asyncio.run(scenario())


# -- pricing ----------------------------------------------------------------------------------


def test_pricing_debits_amount_plus_fee_minus_commission_rounded_for_the_payer():
    assert Pricing().float_debit(100_000) == 100_000
    assert Pricing(fee_fixed=500).float_debit(100_000) == 100_500
    # 1.5 % fee of 12_345 = 185.175 -> 185 (down); 2 % commission = 246.9 -> 247 (up)
    pricing = Pricing(fee_fixed=100, fee_percent_bp=150, commission_bp=200)
    assert (pricing.fee(12_345), pricing.commission(12_345)) == (285, 247)
    assert pricing.float_debit(12_345) == 12_345 + 285 - 247
    # an agent's 3 % commission on a 50_000 top-up
    assert Pricing(commission_bp=300).float_debit(50_000) == 48_500
    # rounding never charges the payer more than the exact figure
    for amount in (1, 7, 333, 9_999, 10_001, 123_457):
        exact = amount + 100 + amount * 150 / 10_000 - amount * 200 / 10_000
        assert exact - 2 < pricing.float_debit(amount) <= exact
    with pytest.raises(ValueError):
        Pricing(commission_bp=10_001)
    with pytest.raises(ValueError):
        Pricing(fee_fixed=-1)
    with pytest.raises(ValueError):
        Pricing(commission_bp=10_000).float_debit(1_000)  # nothing left to debit
    with pytest.raises(ValueError):
        pricing.float_debit(0)


# -- concurrency: the float never goes below zero -----------------------------------------------


async def _hold_all(ledgers: list[FloatLedger], account_id: str, txn_ids: list[str]) -> dict[str, bool]:
    """Every hold at once, spread over the ledgers; txn_id -> held (False: InsufficientFloat)."""

    async def one(ledger: FloatLedger, txn_id: str) -> bool:
        try:
            await ledger.hold(account_id, txn_id, RACE_HOLD)
        except InsufficientFloat:
            return False
        return True

    outcomes = await asyncio.gather(*(one(ledgers[i % len(ledgers)], t) for i, t in enumerate(txn_ids)))
    return dict(zip(txn_ids, outcomes))


async def _prepare_race(dsn: str, schema: str) -> None:
    async with opened(dsn, schema) as ledger:
        await ledger.open_account(ACQUIRER)
        await ledger.deposit(ACQUIRER, RACE_FLOAT, actor=OPS, note="race float")


async def _settle_and_audit(dsn: str, schema: str, held: list[str], seed: int) -> None:
    """Capture a random half, release the rest, refund some; each call sent twice at
    once from two ledgers. Then the books must add up, entry by entry."""
    assert len(held) == RACE_FLOAT // RACE_HOLD
    rng = random.Random(seed)
    captured = rng.sample(held, len(held) // 2)
    released = sorted(set(held) - set(captured))
    refunded = rng.sample(captured, RACE_REFUNDS)
    async with opened(dsn, schema, pool_size=RACE_POOL_SIZE) as one, \
            opened(dsn, schema, pool_size=RACE_POOL_SIZE) as other:
        await asyncio.gather(*(ledger.capture(t) for t in captured for ledger in (one, other)),
                             *(ledger.release(t) for t in released for ledger in (one, other)))
        await asyncio.gather(*(ledger.refund(t) for t in refunded for ledger in (one, other)))
        expected = RACE_FLOAT - RACE_HOLD * len(captured) + RACE_HOLD * len(refunded)
        assert await one.balance(ACQUIRER) == Balance(expected, 0, expected)
        assert await other.verify(ACQUIRER)
    history = await audit(dsn, schema, ACQUIRER)
    assert history["mismatches"] == 0
    assert history["min_balance"] >= 0
    assert history["min_available"] == 0  # went down to zero, never below
    # Exactly once: one entry per txn per kind, however many callers raced.
    assert history["kinds"] == {
        "deposit": (1, 0),
        "hold": (len(held),) * 2,
        "capture": (len(captured),) * 2,
        "release": (len(released),) * 2,
        "refund": (len(refunded),) * 2,
    }


def test_concurrent_holds_from_several_ledgers_never_overdraw_the_float(pg_dsn, pg_schema):
    async def scenario():
        await _prepare_race(pg_dsn, pg_schema)
        ledgers = [FloatLedger(pg_dsn, schema=pg_schema, pool_size=RACE_POOL_SIZE) for _ in range(RACE_LEDGERS)]
        await asyncio.gather(*(ledger.start() for ledger in ledgers))
        samples: list[Balance] = []
        racing = True

        async def watch() -> None:
            while racing:
                samples.append(await ledgers[0].balance(ACQUIRER))

        try:
            watcher = asyncio.create_task(watch())
            outcome = await _hold_all(ledgers, ACQUIRER, [txn() for _ in range(RACE_HOLDS)])
            racing = False
            await watcher
        finally:
            await asyncio.gather(*(ledger.close() for ledger in ledgers))
        held = [t for t, ok in outcome.items() if ok]
        assert len(held) == RACE_FLOAT // RACE_HOLD
        assert samples and all(s.available >= 0 and s.balance == RACE_FLOAT for s in samples)
        await _settle_and_audit(pg_dsn, pg_schema, held, seed=8583)

    asyncio.run(scenario())


def _hold_in_worker_process(dsn, schema, txn_ids, start_together, results) -> None:
    """Runs in a spawned process: its own event loop, its own pool."""

    async def work():
        async with opened(dsn, schema, pool_size=RACE_POOL_SIZE) as ledger:
            start_together.wait(PROCESS_TIMEOUT)  # pools are warm: the holds start at once
            return await _hold_all([ledger], ACQUIRER, txn_ids)

    try:
        results.put(asyncio.run(work()))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which fails the test
        results.put(repr(exc))


def test_concurrent_holds_from_several_processes_never_overdraw_the_float(pg_dsn, pg_schema):
    asyncio.run(_prepare_race(pg_dsn, pg_schema))
    context = multiprocessing.get_context("spawn")
    start_together = context.Barrier(RACE_LEDGERS)
    results = context.Queue()
    txn_ids = [txn() for _ in range(RACE_HOLDS)]
    workers = [
        context.Process(target=_hold_in_worker_process,
                        args=(pg_dsn, pg_schema, txn_ids[i::RACE_LEDGERS], start_together, results))
        for i in range(RACE_LEDGERS)
    ]
    for worker in workers:
        worker.start()
    try:
        outcomes = [results.get(timeout=PROCESS_TIMEOUT) for _ in workers]
    finally:
        for worker in workers:
            worker.join(PROCESS_TIMEOUT)
            if worker.is_alive():
                worker.kill()
    errors = [o for o in outcomes if not isinstance(o, dict)]
    assert not errors
    outcome = {t: ok for part in outcomes for t, ok in part.items()}
    assert len(outcome) == RACE_HOLDS
    held = [t for t, ok in outcome.items() if ok]
    assert len(held) == RACE_FLOAT // RACE_HOLD
    asyncio.run(_settle_and_audit(pg_dsn, pg_schema, held, seed=8584))
