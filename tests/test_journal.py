"""The transaction journal, against a real PostgreSQL schema and a real SQLite file. No mocks.

Tests are plain functions that drive the journal with asyncio.run(). Behaviour shared by
both backends is parametrised over the ``backend`` fixture.
"""

from __future__ import annotations

import asyncio
import random
import contextlib
import sqlite3
import uuid
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import asyncpg
import pytest
import uvloop

from switch.flow.states import TxnState
from switch.journal import (
    EVENTS,
    Intake,
    Journal,
    JournalError,
    JournalOverloaded,
    JournalRejected,
    JournalUnavailable,
    Outcome,
    PostgresJournal,
    Reversal,
    ReversalUpdate,
    SQLiteJournal,
    TransactionView,
)
from switch.journal.schema import POSTGRES_MIGRATIONS, SQLITE_MIGRATIONS

DAY = date(2026, 5, 9)
ACQUIRER = "100001"


# -- helpers ------------------------------------------------------------------------------


def make_intake(
    tracking_code: str = "000000000001",
    *,
    acquirer_id: str = ACQUIRER,
    business_day: date = DAY,
    uses_key: bool = True,
    **overrides,
) -> Intake:
    fields = dict(
        txn_id=uuid.uuid4().hex,
        received_at=datetime.now(timezone.utc),
        business_day=business_day,
        mti="0200",
        acquirer_id=acquirer_id,
        tracking_code=tracking_code,
        stan="000001",
        transmitted_at="0509120000",
        terminal_id="TERM0001",
        merchant_id="MERCHANT0000001",
        card_masked="627353******1234",
        msisdn="989121234567",
        amount=100_000,
        currency="364",
        channel="USSD",
        uses_key=uses_key,
    )
    fields.update(overrides)
    return Intake(**fields)


def make_outcome(
    intake: Intake, *, state: str = "approved", response_code: str = "00", ended_at: datetime | None = None, **overrides
) -> Outcome:
    ended_at = ended_at or intake.received_at + timedelta(milliseconds=120)
    fields = dict(
        txn_id=intake.txn_id,
        ended_at=ended_at,
        state=state,
        response_code=response_code,
        operator_id="MCI" if state != "refused" else None,
        operator_ref="OP-778812" if state == "approved" else None,
        approval_code="123456" if state == "approved" else None,
        operator_code="0" if state in ("approved", "declined") else None,
    )
    fields.update(overrides)
    if "latency_ms" not in fields:
        fields["latency_ms"] = (ended_at - intake.received_at).total_seconds() * 1000
    return Outcome(**fields)


class PostgresBackend:
    name = "postgres"

    def __init__(self, dsn: str, schema: str) -> None:
        self.dsn, self.schema = dsn, schema
        self.migrations = POSTGRES_MIGRATIONS

    def journal(self, **kwargs) -> PostgresJournal:
        return PostgresJournal(self.dsn, schema=self.schema, **kwargs)

    async def connect(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.dsn, server_settings={"search_path": f'"{self.schema}"'})

    async def fetch(self, sql: str) -> list[tuple]:
        conn = await self.connect()
        try:
            return [tuple(row) for row in await conn.fetch(sql)]
        finally:
            await conn.close()

    async def execute(self, sql: str) -> None:
        conn = await self.connect()
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    @contextlib.asynccontextmanager
    async def write_lock(self):
        """Another session holding a lock that the writer's next batch has to wait for."""
        conn = await self.connect()
        try:
            async with conn.transaction():
                await conn.execute("LOCK TABLE intake IN ACCESS EXCLUSIVE MODE")
                yield conn
        finally:
            await conn.close()

    async def wait_until_writer_blocked(self, journal: PostgresJournal) -> None:
        conn = await self.connect()
        try:
            for _ in range(500):
                query = "SELECT wait_event_type FROM pg_stat_activity WHERE pid = $1"
                if await conn.fetchval(query, journal.writer_pid) == "Lock":
                    return
                await asyncio.sleep(0.01)
            raise AssertionError("the writer never blocked on the lock")
        finally:
            await conn.close()


class SQLiteBackend:
    name = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.migrations = SQLITE_MIGRATIONS

    def journal(self, **kwargs) -> SQLiteJournal:
        return SQLiteJournal(self.path, **kwargs)

    async def fetch(self, sql: str) -> list[tuple]:
        conn = sqlite3.connect(self.path)
        try:
            return conn.execute(sql).fetchall()
        finally:
            conn.close()

    async def execute(self, sql: str) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None)
        try:
            conn.execute(sql)
        finally:
            conn.close()

    @contextlib.asynccontextmanager
    async def write_lock(self):
        """Another connection holding the write lock: the writer's BEGIN IMMEDIATE waits."""
        conn = sqlite3.connect(self.path, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        finally:
            conn.execute("ROLLBACK")
            conn.close()

    async def wait_until_writer_blocked(self, journal: SQLiteJournal) -> None:
        # A thread blocked in sqlite3 cannot be observed from here; it takes its batch
        # within microseconds of the put, so this is ample.
        await asyncio.sleep(0.2)


@pytest.fixture(params=["postgres", "sqlite"])
def backend(request, tmp_path):
    if request.param == "postgres":
        # Looked up lazily, so the SQLite half runs even where PostgreSQL is absent.
        return PostgresBackend(request.getfixturevalue("pg_dsn"), request.getfixturevalue("pg_schema"))
    return SQLiteBackend(tmp_path / "journal.sqlite")


@pytest.fixture
def pg(pg_dsn, pg_schema) -> PostgresBackend:
    return PostgresBackend(pg_dsn, pg_schema)


@pytest.fixture
def lite(tmp_path) -> SQLiteBackend:
    return SQLiteBackend(tmp_path / "journal.sqlite")


# -- records --------------------------------------------------------------------------------


def test_records_refuse_naive_times_and_unknown_states():
    with pytest.raises(ValueError, match="received_at"):
        make_intake(received_at=datetime(2026, 5, 9, 12, 0))
    intake = make_intake()
    with pytest.raises(ValueError, match="ended_at"):
        make_outcome(intake, ended_at=datetime(2026, 5, 9, 12, 0), latency_ms=1.0)
    with pytest.raises(ValueError, match="state"):
        make_outcome(intake, state="maybe")


# What migration 1 allowed when it shipped. Databases created then keep these lists: a
# state or event added since needs a migration that widens the CHECK constraints, and
# then its name here.
MIGRATED_STATES = {"approved", "declined", "unknown", "refused", "reversal_pending", "reversed",
                   "reversal_failed", "resolved", "inquiry"}
MIGRATED_EVENTS = {"end", "late_answer", "acquirer_reversal", "recovered", "reversal_done", "reversal_failed",
                   "manual_resolution", "reversal_reopened"}


def test_every_state_and_event_is_allowed_by_existing_databases():
    assert set(TxnState) == MIGRATED_STATES, "a new transaction state needs a schema migration"
    assert set(EVENTS) == MIGRATED_EVENTS, "a new outcome event needs a schema migration"


def test_both_backends_satisfy_the_protocol(tmp_path):
    assert isinstance(SQLiteJournal(tmp_path / "j.sqlite"), Journal)
    assert isinstance(PostgresJournal("postgresql://nowhere/x"), Journal)


# -- shared behaviour -----------------------------------------------------------------------


def test_intake_then_outcome_appear_in_the_view(backend):
    async def scenario():
        intake = make_intake(received_at=datetime(2026, 5, 9, 8, 30, 0, 123456, tzinfo=timezone.utc))
        async with backend.journal() as journal:
            assert await journal.record_intake(intake) is True
            pending = await journal.find(ACQUIRER, intake.tracking_code, DAY)
            assert pending is not None
            assert pending.txn_id == intake.txn_id
            assert pending.state is None and pending.response_code is None and pending.ended_at is None
            assert await journal.summary() == {"pending": 1}

            outcome = make_outcome(intake)
            assert await journal.record_outcome(outcome) is None
            view = await journal.find(ACQUIRER, intake.tracking_code, DAY)
            assert await journal.count_transactions() == 1
            return intake, outcome, view

    intake, outcome, view = asyncio.run(scenario())
    expected = TransactionView(
        **{f: getattr(intake, f) for f in Intake.__struct_fields__},
        **{f: getattr(outcome, f) for f in Outcome.__struct_fields__ if f not in ("txn_id", "event")},
    )
    assert view == expected  # every field round-trips, times as the same instants


def test_the_latest_outcome_wins(backend):
    async def scenario():
        intake = make_intake()
        async with backend.journal() as journal:
            await journal.record_intake(intake)
            first = make_outcome(intake, state="unknown", response_code="91")
            later = make_outcome(intake, ended_at=first.ended_at + timedelta(seconds=30))
            await journal.record_outcome(later)
            await journal.record_outcome(first)  # written second, but ended earlier
            view = await journal.find(ACQUIRER, intake.tracking_code, DAY)
            assert (view.state, view.response_code) == ("approved", "00")
            assert await journal.count_transactions() == 1

    asyncio.run(scenario())


def test_duplicate_key_is_refused_and_nothing_is_stored(backend):
    async def scenario():
        async with backend.journal() as journal:
            first = make_intake("000000000042")
            again = make_intake("000000000042", mti="0201")
            assert await journal.record_intake(first) is True
            assert await journal.record_intake(again) is False
            assert await journal.count_transactions() == 1
            assert (await journal.find(ACQUIRER, "000000000042", DAY)).txn_id == first.txn_id
        assert await backend.fetch(f"SELECT count(*) FROM intake WHERE txn_id = '{again.txn_id}'") == [(0,)]

    asyncio.run(scenario())


def test_same_key_twice_in_one_batch_exactly_one_wins(backend):
    async def scenario():
        async with backend.journal() as journal:
            contenders = [make_intake("000000000007") for _ in range(20)]
            results = await asyncio.gather(*(journal.record_intake(i) for i in contenders))
            assert results.count(True) == 1
            winner = contenders[results.index(True)]
            assert (await journal.find(ACQUIRER, "000000000007", DAY)).txn_id == winner.txn_id
            assert await journal.count_transactions() == 1

    asyncio.run(scenario())


def test_a_duplicate_does_not_fail_the_rest_of_its_batch(backend):
    async def scenario():
        async with backend.journal() as journal:
            assert await journal.record_intake(make_intake("000000000099"))
            batch = [make_intake(f"{n:012d}") for n in range(1, 11)]
            batch.insert(5, make_intake("000000000099"))
            results = await asyncio.gather(*(journal.record_intake(i) for i in batch))
            assert results == [True] * 5 + [False] + [True] * 5
            assert await journal.count_transactions() == 11

    asyncio.run(scenario())


def test_intakes_without_the_key_never_conflict(backend):
    async def scenario():
        async with backend.journal() as journal:
            keyed = make_intake("000000000005")
            assert await journal.record_intake(keyed)
            assert await journal.record_intake(make_intake("000000000005", uses_key=False))
            assert await journal.record_intake(make_intake("000000000005", uses_key=False))
            assert await journal.count_transactions() == 3
            assert (await journal.find(ACQUIRER, "000000000005", DAY)).txn_id == keyed.txn_id
            # The key is still held by the keyed intake.
            assert await journal.record_intake(make_intake("000000000005")) is False

    asyncio.run(scenario())


def test_the_key_is_per_acquirer_and_business_day(backend):
    async def scenario():
        async with backend.journal() as journal:
            assert await journal.record_intake(make_intake("000000000001"))
            assert await journal.record_intake(make_intake("000000000001", business_day=DAY + timedelta(days=1)))
            assert await journal.record_intake(make_intake("000000000001", acquirer_id="100002"))
            assert await journal.count_transactions() == 3
            assert await journal.find(ACQUIRER, "000000000001", DAY + timedelta(days=2)) is None

    asyncio.run(scenario())


def test_the_key_survives_a_restart(backend):
    async def scenario():
        first = make_intake("000000000123")
        async with backend.journal() as journal:
            assert await journal.record_intake(first)
            await journal.record_outcome(make_outcome(first))
        async with backend.journal() as journal:
            assert await journal.record_intake(make_intake("000000000123")) is False
            view = await journal.find(ACQUIRER, "000000000123", DAY)
            assert (view.txn_id, view.response_code) == (first.txn_id, "00")

    asyncio.run(scenario())


def test_a_refusal_stores_both_rows(backend):
    async def scenario():
        async with backend.journal() as journal:
            original = make_intake("000000000777")
            assert await journal.record_intake(original)
            duplicate = make_intake("000000000777", uses_key=False)
            await journal.record_refusal(duplicate, make_outcome(duplicate, state="refused", response_code="94"))
            assert await journal.count_transactions() == 2
            assert await journal.summary() == {"pending": 1, "94": 1}
            # find() answers with the transaction that holds the key, not the refusal.
            assert (await journal.find(ACQUIRER, "000000000777", DAY)).txn_id == original.txn_id
            with pytest.raises(ValueError):
                await journal.record_refusal(make_intake(), make_outcome(make_intake(), state="refused"))
        rows = await backend.fetch(f"SELECT state, response_code FROM outcome WHERE txn_id = '{duplicate.txn_id}'")
        assert rows == [("refused", "94")]

    asyncio.run(scenario())


def test_summary_counts_by_response_code(backend):
    async def scenario():
        plan = [("approved", "00")] * 3 + [("declined", "05")] * 2 + [("unknown", "91"), ("refused", "30")]
        async with backend.journal() as journal:
            intakes = [make_intake(f"{n:012d}") for n in range(len(plan) + 2)]
            await asyncio.gather(*(journal.record_intake(i) for i in intakes))
            await asyncio.gather(
                *(journal.record_outcome(make_outcome(i, state=s, response_code=rc)) for i, (s, rc) in zip(intakes, plan))
            )
            assert await journal.summary() == {"00": 3, "05": 2, "91": 1, "30": 1, "pending": 2}
            assert await journal.count_transactions() == len(plan) + 2

    asyncio.run(scenario())


def test_migrations_are_idempotent(backend):
    async def scenario():
        journal = backend.journal()
        await journal.start()
        await journal.start()  # no-op while running
        await journal.close()
        async with backend.journal():
            pass
        versions = await backend.fetch("SELECT version FROM schema_version ORDER BY version")
        assert versions == [(v,) for v in range(1, len(backend.migrations) + 1)]

    asyncio.run(scenario())


def test_a_newer_schema_is_refused(backend):
    async def scenario():
        async with backend.journal():
            pass
        await backend.execute("INSERT INTO schema_version (version, applied_at) VALUES (99, '2030-01-01')")
        with pytest.raises(JournalError, match="newer"):
            await backend.journal().start()

    asyncio.run(scenario())


def test_every_state_and_event_can_be_stored(backend):
    # The CHECK constraints are generated from TxnState and EVENTS, and TxnState members
    # (not only their string values) go through both drivers.
    async def scenario():
        async with backend.journal() as journal:
            intake = make_intake()
            await journal.record_intake(intake)
            ended = intake.received_at
            for n, state in enumerate(TxnState):
                await journal.record_outcome(make_outcome(intake, state=state, ended_at=ended + timedelta(seconds=n)))
            for n, event in enumerate(EVENTS, start=len(TxnState)):
                await journal.record_outcome(make_outcome(intake, event=event, ended_at=ended + timedelta(seconds=n)))
        stored = await backend.fetch(f"SELECT state, event FROM outcome WHERE txn_id = '{intake.txn_id}' ORDER BY id")
        assert [state for state, _ in stored[:len(TxnState)]] == [state.value for state in TxnState]
        assert [event for _, event in stored[len(TxnState):]] == list(EVENTS)

    asyncio.run(scenario())


def test_a_stored_reversal_is_found_in_any_state_with_the_operators_last_code(backend):
    async def scenario():
        async with backend.journal() as journal:
            intake = make_intake(routed_operator="MCI", operator_stan="000042",
                                 operator_sent_at=datetime(2026, 5, 9, 8, 0, tzinfo=timezone.utc))
            await journal.record_intake(intake)
            assert await journal.reversal(intake.txn_id) is None
            created = datetime(2026, 5, 9, 8, 1, tzinfo=timezone.utc)
            await journal.record_outcome(make_outcome(intake, state=TxnState.UNKNOWN, response_code="91"),
                                         Reversal(intake.txn_id, "MCI", "unknown_outcome", created))
            pending = await journal.reversal(intake.txn_id)
            assert (pending.state, pending.attempts, pending.operator_code) == ("pending", 0, None)
            assert await journal.reversals() == [pending]
            done = ReversalUpdate(intake.txn_id, "done", 2, created + timedelta(seconds=30), operator_code="00")
            await journal.record_reversal_update(done, make_outcome(intake, state=TxnState.REVERSED,
                                                                    response_code="91", event="reversal_done"))
            settled = await journal.reversal(intake.txn_id)
            assert await journal.reversals() == []
            assert await journal.reversals(("done",)) == [settled]
            return intake, created, settled

    intake, created, settled = asyncio.run(scenario())
    assert (settled.state, settled.attempts, settled.operator_code) == ("done", 2, "00")
    assert (settled.operator_id, settled.reason, settled.created_at) == ("MCI", "unknown_outcome", created)
    assert (settled.acquirer_id, settled.tracking_code, settled.operator_stan, settled.operator_sent_at) == (
        intake.acquirer_id, intake.tracking_code, intake.operator_stan, intake.operator_sent_at)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_group_commit_batches_concurrent_callers(backend, loop):
    async def scenario():
        async with backend.journal() as journal:
            before = journal.batches_committed
            results = await asyncio.gather(*(journal.record_intake(make_intake(f"{n:012d}")) for n in range(200)))
            batches = journal.batches_committed - before
            assert results == [True] * 200
            assert await journal.count_transactions() == 200
            return batches

    batches = (asyncio.run if loop == "asyncio" else uvloop.run)(scenario())
    print(f"{backend.name}/{loop}: 200 concurrent intakes in {batches} transactions")
    assert 1 <= batches <= 20


def test_a_refused_record_does_not_fail_its_batch(backend):
    async def scenario():
        async with backend.journal() as journal:
            orphan = make_outcome(make_intake())  # its intake was never recorded
            good = [make_intake(f"{n:012d}") for n in range(3)]
            results = await asyncio.gather(
                journal.record_intake(good[0]),
                journal.record_outcome(orphan),
                journal.record_intake(good[1]),
                journal.record_intake(good[2]),
                return_exceptions=True,
            )
            assert results[0] is True and results[2:] == [True, True]
            assert isinstance(results[1], JournalRejected)
            assert await journal.count_transactions() == 3

    asyncio.run(scenario())


def test_a_full_queue_raises_overloaded(backend):
    async def scenario():
        async with backend.journal(queue_max=5) as journal:
            intakes = [make_intake(f"{n:012d}") for n in range(300)]
            results = await asyncio.gather(*(journal.record_intake(i) for i in intakes), return_exceptions=True)
            overloaded = sum(isinstance(r, JournalOverloaded) for r in results)
            stored = results.count(True)
            assert overloaded >= 1 and stored >= 5
            assert overloaded + stored == len(intakes)
            assert await journal.count_transactions() == stored

    asyncio.run(scenario())


def test_close_flushes_the_queue_and_then_refuses(backend):
    async def scenario():
        journal = backend.journal()
        await journal.start()
        pending = [asyncio.create_task(journal.record_intake(make_intake(f"{n:012d}"))) for n in range(50)]
        await asyncio.sleep(0)  # let them queue
        await journal.close()
        assert [await task for task in pending] == [True] * 50
        with pytest.raises(JournalUnavailable):
            await journal.record_intake(make_intake())
        await journal.close()  # idempotent
        async with backend.journal() as reopened:
            assert await reopened.count_transactions() == 50

    asyncio.run(scenario())


def test_journal_tables_are_append_only(backend):
    async def scenario():
        intake = make_intake()
        async with backend.journal() as journal:
            await journal.record_intake(intake)
            await journal.record_outcome(make_outcome(intake))
        for sql in (
            "UPDATE intake SET msisdn = '989120000000'",
            "DELETE FROM intake",
            "UPDATE outcome SET response_code = '05'",
            "DELETE FROM outcome",
        ):
            with pytest.raises(Exception, match="append-only"):
                await backend.execute(sql)

    asyncio.run(scenario())


def test_an_intake_whose_caller_gave_up_is_not_written_but_an_outcome_is(backend):
    async def scenario():
        async with backend.journal(commit_timeout=10.0) as journal:
            held = make_intake("000000000001")
            assert await journal.record_intake(held)
            async with backend.write_lock():
                first = asyncio.create_task(journal.record_intake(make_intake("000000000002")))
                await backend.wait_until_writer_blocked(journal)
                # Queued behind the blocked batch, then their callers give up.
                given_up = asyncio.create_task(journal.record_intake(make_intake("000000000003")))
                outcome = asyncio.create_task(journal.record_outcome(make_outcome(held)))
                await asyncio.sleep(0.05)
                given_up.cancel()
                outcome.cancel()
                await asyncio.gather(given_up, outcome, return_exceptions=True)
            assert await first is True
            await journal.record_intake(make_intake("000000000004"))  # a later batch: the queue is through
            assert await journal.find(ACQUIRER, "000000000003", DAY) is None
            assert (await journal.find(ACQUIRER, "000000000001", DAY)).response_code == "00"
            assert await journal.count_transactions() == 3

    asyncio.run(scenario())


# -- PostgreSQL only ------------------------------------------------------------------------


def test_postgres_commit_failure_reaches_the_waiters_and_the_writer_reconnects(pg):
    async def scenario():
        async with pg.journal() as journal:
            assert await journal.record_intake(make_intake("000000000001"))
            writer_pid = journal.writer_pid
            # Hold the writer inside its batch, then kill its backend: a real failure in
            # the middle of a commit, not a refused connection.
            async with pg.write_lock() as locker:
                doomed = asyncio.create_task(journal.record_intake(make_intake("000000000002")))
                await pg.wait_until_writer_blocked(journal)
                assert await locker.fetchval("SELECT pg_terminate_backend($1)", writer_pid)
                with pytest.raises(JournalUnavailable):
                    await doomed
            assert await journal.record_intake(make_intake("000000000003")) is True
            assert journal.writer_pid not in (None, writer_pid)
            assert await journal.find(ACQUIRER, "000000000002", DAY) is None
            assert await journal.count_transactions() == 2

    asyncio.run(scenario())


def test_postgres_commit_timeout_raises_unavailable_then_recovers(pg):
    async def scenario():
        async with pg.journal(commit_timeout=0.5) as journal:
            assert await journal.record_intake(make_intake("000000000001"))
            async with pg.write_lock():
                with pytest.raises(JournalUnavailable, match="within"):
                    await journal.record_intake(make_intake("000000000002"))
            assert await journal.record_intake(make_intake("000000000003")) is True
            assert await journal.count_transactions() == 2

    asyncio.run(scenario())


def test_postgres_creates_its_schema_and_concurrent_starts_do_not_race(pg):
    async def scenario():
        first, second = pg.journal(), pg.journal()
        await asyncio.gather(first.start(), second.start())
        try:
            assert await first.record_intake(make_intake("000000000001"))
            assert await second.record_intake(make_intake("000000000001")) is False
        finally:
            await asyncio.gather(first.close(), second.close())
        tables = await pg.fetch(
            f"SELECT table_name FROM information_schema.tables WHERE table_schema = '{pg.schema}' ORDER BY 1"
        )
        assert tables == [("admin_event",), ("intake",), ("outcome",), ("reversal",), ("schema_version",),
                          ("spill_replayed",), ("transactions",)]
        assert await pg.fetch("SELECT count(*) FROM schema_version") == [(len(POSTGRES_MIGRATIONS),)]

    asyncio.run(scenario())


def test_postgres_pipeline_commits_on_two_connections_and_no_record_waits_for_two_commits(pg):
    async def caller(journal, n: int) -> None:
        rng = random.Random(n)
        for k in range(4):
            intake = make_intake(f"{n:06d}{k:06d}")
            assert await journal.record_intake(intake) is True
            await asyncio.sleep(rng.uniform(0, 0.005))  # the operator's round trip: callers drift apart
            await journal.record_outcome(make_outcome(intake))  # refused if its intake were not committed

    async def scenario():
        async with pg.journal(batch_max=500, pipeline_min_fill=20) as journal:
            await asyncio.gather(*(caller(journal, n) for n in range(300)))  # at most 300 queued < batch_max
            assert all(journal.writer_pids)  # both writer connections were used
            assert max(journal.commit_waits) <= 1, journal.commit_waits
            assert sum(journal.commit_waits.values()) == 2400
            assert await journal.states() == {"approved": 1200}
            assert await pg.fetch("SELECT count(*) FROM outcome") == [(1200,)]

    asyncio.run(scenario())


def test_postgres_batches_in_flight_claiming_the_same_keys_give_one_winner_each_and_never_deadlock(pg):
    async def scenario():
        async with pg.journal(batch_max=50, pipeline_min_fill=1) as journal:
            # The same 100 keys claimed twice, in opposite orders, spread over batches in flight together.
            first = [make_intake(f"{n:012d}") for n in range(100)]
            second = [make_intake(f"{n:012d}") for n in reversed(range(100))]
            async with asyncio.timeout(10):  # a deadlock would fail a batch after deadlock_timeout
                results = await asyncio.gather(*(journal.record_intake(i) for pair in zip(first, second) for i in pair))
            won = dict(zip((i.txn_id for pair in zip(first, second) for i in pair), results))
            for a, b in zip(first, reversed(second)):
                assert won[a.txn_id] != won[b.txn_id]  # exactly one of each key
            assert await journal.count_transactions() == 100

    asyncio.run(scenario())


def test_postgres_an_outcome_without_its_intake_is_refused_by_the_database(pg):
    async def scenario():
        async with pg.journal():
            pass
        conn = await pg.connect()
        try:
            with pytest.raises(asyncpg.ForeignKeyViolationError, match="no intake"):
                await conn.execute("INSERT INTO outcome (txn_id, ended_at, state, response_code, latency_ms)"
                                   " VALUES ('nope', now(), 'approved', '00', 1)")
        finally:
            await conn.close()

    asyncio.run(scenario())


def test_postgres_unreachable_database_raises_unavailable():
    async def scenario():
        journal = PostgresJournal("postgresql://postgres@127.0.0.1:1/test", commit_timeout=1.0)
        with pytest.raises(JournalUnavailable):
            await journal.start()
        with pytest.raises(JournalUnavailable):
            await journal.record_intake(make_intake())

    asyncio.run(scenario())


# -- SQLite only ----------------------------------------------------------------------------


def test_sqlite_commit_failure_reaches_the_waiters_and_the_writer_recovers(lite):
    async def scenario():
        async with lite.journal(commit_timeout=1.0) as journal:
            assert await journal.record_intake(make_intake("000000000001"))
            # Another process holding the write lock: the writer's BEGIN IMMEDIATE fails
            # with "database is locked" after its busy timeout (half of commit_timeout).
            async with lite.write_lock():
                with pytest.raises(JournalUnavailable, match="locked"):
                    await journal.record_intake(make_intake("000000000002"))
            assert await journal.record_intake(make_intake("000000000003")) is True
            assert await journal.find(ACQUIRER, "000000000002", DAY) is None
            assert await journal.count_transactions() == 2

    asyncio.run(scenario())


def test_sqlite_file_is_in_wal_mode_and_closes_cleanly(lite):
    async def scenario():
        async with lite.journal() as journal:
            assert await journal.record_intake(make_intake())
            assert await journal.count_transactions() == 1  # opens the reader connection too

    asyncio.run(scenario())
    # Closed cleanly: the WAL was checkpointed into the file and removed.
    assert not Path(f"{lite.path}-wal").exists()
    conn = sqlite3.connect(lite.path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        conn.close()


def test_sqlite_rejects_memory_databases():
    with pytest.raises(ValueError):
        SQLiteJournal(":memory:")


# -- the admin server's reads (both backends) ------------------------------------------------

def test_search_finds_by_each_field_newest_first_and_pages_with_the_cursor(backend):
    from switch.journal import TransactionQuery

    async def scenario():
        async with backend.journal() as journal:
            start = datetime(2026, 5, 9, 8, 0, tzinfo=timezone.utc)
            intakes = [make_intake(f"T{i:011d}", received_at=start + timedelta(seconds=i),
                                   msisdn="989121234567" if i % 2 else "989351234567",
                                   routed_operator="MCI" if i % 2 else "IRANCELL") for i in range(5)]
            for intake in intakes:
                await journal.record_intake(intake)
            await journal.record_outcome(make_outcome(intakes[1]))
            await journal.record_outcome(make_outcome(intakes[3], state="declined", response_code="05"))
            search = journal.search
            by_msisdn = await search(TransactionQuery(msisdn="989121234567"))
            assert [v.txn_id for v in by_msisdn] == [intakes[3].txn_id, intakes[1].txn_id]
            assert [v.tracking_code for v in await search(TransactionQuery(tracking_code="T00000000002"))] == \
                ["T00000000002"]
            assert [v.txn_id for v in await search(TransactionQuery(state="approved"))] == [intakes[1].txn_id]
            assert {v.txn_id for v in await search(TransactionQuery(state="in_flight"))} == \
                {intakes[i].txn_id for i in (0, 2, 4)}
            assert len(await search(TransactionQuery(operator_id="IRANCELL"))) == 3
            assert len(await search(TransactionQuery(acquirer_id=ACQUIRER, since=start + timedelta(seconds=1),
                                                     until=start + timedelta(seconds=3)))) == 2
            assert await search(TransactionQuery(acquirer_id="999")) == []
            # Pages of two, each continuing where the last ended: every row once, newest first.
            seen, before = [], None
            while True:
                page = await search(TransactionQuery(before=before), limit=2)
                seen += [v.txn_id for v in page]
                if len(page) < 2:
                    break
                before = (page[-1].received_at, page[-1].txn_id)
            assert seen == [intake.txn_id for intake in reversed(intakes)]

    asyncio.run(scenario())


def test_outcome_rows_keep_every_row_in_order_late_answers_included(backend):
    async def scenario():
        async with backend.journal() as journal:
            intake = make_intake(routed_operator="MCI")
            await journal.record_intake(intake)
            first = make_outcome(intake, state=TxnState.UNKNOWN, response_code="91")
            late = make_outcome(intake, state=TxnState.UNKNOWN, response_code="91", event="late_answer",
                                ended_at=first.ended_at + timedelta(seconds=1), operator_code="0")
            await journal.record_outcome(first, Reversal(intake.txn_id, "MCI", "unknown_outcome", first.ended_at))
            await journal.record_outcome(late)
            return first, late, await journal.outcome_rows(intake.txn_id), await journal.reversal_queue()

    first, late, rows, queue = asyncio.run(scenario())
    assert rows == [first, late]
    assert [(r.operator_id, r.state, r.count, r.oldest_created_at) for r in queue] == \
        [("MCI", "pending", 1, first.ended_at)]


def test_ping_answers_while_running_and_refuses_once_closed(backend):
    async def scenario():
        journal = backend.journal()
        await journal.start()
        await journal.ping()
        await journal.close()
        with pytest.raises(JournalUnavailable):
            await journal.ping()

    asyncio.run(scenario())


def test_throughput_counts_each_top_up_end_per_minute_and_operator_late_answers_not_again(backend):
    async def scenario():
        async with backend.journal() as journal:
            start = datetime(2026, 5, 9, 8, 0, 10, tzinfo=timezone.utc)
            # Minute 08:00: MCI approved twice, declined once; IRANCELL unknown once (and a late answer to it).
            # Minute 08:01: MCI approved once. Before `since`: one not counted. A refusal names no operator.
            plan = [(0, "MCI", "approved", "00"), (5, "MCI", "approved", "00"), (9, "MCI", "declined", "05"),
                    (20, "IRANCELL", "unknown", "91"), (65, "MCI", "approved", "00"),
                    (-120, "MCI", "approved", "00"), (30, None, "refused", "30")]
            for i, (seconds, operator, state, code) in enumerate(plan):
                intake = make_intake(f"T{i:011d}", received_at=start + timedelta(seconds=seconds))
                await journal.record_intake(intake)
                outcome = make_outcome(intake, state=state, response_code=code, operator_id=operator)
                await journal.record_outcome(outcome)
                if state == "unknown":
                    await journal.record_outcome(make_outcome(
                        intake, state="unknown", response_code="91", operator_id=operator, event="late_answer",
                        ended_at=outcome.ended_at + timedelta(seconds=1), operator_code="0"))
            return await journal.throughput(start - timedelta(seconds=10))

    rows = asyncio.run(scenario())
    minute = datetime(2026, 5, 9, 8, 0, tzinfo=timezone.utc)
    assert [(r.minute, r.operator_id, r.answered, r.approved) for r in rows] == [
        (minute, "IRANCELL", 1, 0), (minute, "MCI", 3, 2), (minute + timedelta(minutes=1), "MCI", 1, 1)]


def test_admin_events_are_journaled_newest_first_and_append_only(backend):
    async def scenario():
        async with backend.journal() as journal:
            await journal.record_admin_event("ops-anna", "resolve", "txn abc at MCI: ticket 4711")
            await journal.record_admin_event("ops-bob", "reload", None)
            events = await journal.admin_events()
            assert [(e.actor, e.action, e.detail) for e in events] == [
                ("ops-bob", "reload", None), ("ops-anna", "resolve", "txn abc at MCI: ticket 4711")]
            assert events[0].at.tzinfo is not None and events[0].at >= events[1].at
            assert len(await journal.admin_events(limit=1)) == 1
    asyncio.run(scenario())
