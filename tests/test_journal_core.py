"""The journal core (switch/journal/core.py) on an in-memory store: no database.

What the core promises whatever the store: a caller hears back only after its batch is
committed, overload is refused at once, a refused record fails alone, a commit that
takes too long is reported as not stored, and a batch the database cannot take is spilled
and replayed.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import date, datetime, timezone

import pytest

from switch.flow.states import TxnState
from switch.journal import Intake, JournalOverloaded, JournalRejected, JournalUnavailable, Outcome
from switch.journal.core import JournalCore, QueuedWrite
from switch.journal.spill import SpillFile

DAY = date(2026, 5, 9)


class RefusedRecord(Exception):
    """What the fake database raises for a record it refuses (like a constraint violation)."""


class DatabaseDown(Exception):
    """What the fake database raises when it cannot commit at all."""


class MemoryStore:
    """A store that keeps committed rows in lists. `gate` holds every write until set;
    outcomes whose txn_id has no intake are refused, like the foreign key would."""

    record_errors = (RefusedRecord,)
    read_errors = (DatabaseDown,)

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.gate.set()
        self.down = False
        self.intakes: dict[str, Intake] = {}
        self.keys: set[tuple[str, str, date]] = set()
        self.outcomes: list[Outcome] = []
        self.batches: list[int] = []  # size of each committed batch
        self.replayed: list[str] = []

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def write(self, batch: list[QueuedWrite]) -> set[str]:
        await self.gate.wait()
        if self.down:
            raise DatabaseDown("connection refused")
        intakes, keys, outcomes = dict(self.intakes), set(self.keys), list(self.outcomes)
        stored: set[str] = set()
        for item in batch:
            stored |= self._apply(item, intakes, keys, outcomes)  # raises RefusedRecord: nothing committed
        self.intakes, self.keys, self.outcomes = intakes, keys, outcomes  # the commit
        self.batches.append(len(batch))
        return stored

    async def write_each(self, batch: list[QueuedWrite]) -> list[set[str] | BaseException]:
        results: list[set[str] | BaseException] = []
        for item in batch:
            intakes, keys, outcomes = dict(self.intakes), set(self.keys), list(self.outcomes)
            try:
                results.append(self._apply(item, intakes, keys, outcomes))
            except RefusedRecord as exc:
                results.append(exc)
            else:
                self.intakes, self.keys, self.outcomes = intakes, keys, outcomes
        self.batches.append(len(batch))
        return results

    @staticmethod
    def _apply(item: QueuedWrite, intakes: dict, keys: set, outcomes: list) -> set[str]:
        stored: set[str] = set()
        if item.intake is not None:
            intake = item.intake
            key = (intake.acquirer_id, intake.tracking_code, intake.business_day)
            if not (intake.uses_key and key in keys):
                intakes[intake.txn_id] = intake
                stored.add(intake.txn_id)
                if intake.uses_key:
                    keys.add(key)
        if item.outcome is not None:
            if item.outcome.txn_id not in intakes:
                raise RefusedRecord(f"outcome for unknown txn {item.outcome.txn_id}")
            outcomes.append(item.outcome)
        return stored

    async def replay(self, spill: SpillFile) -> None:
        if self.down:
            raise DatabaseDown("still down")
        for write in spill.read():
            if write.intake is not None:
                self.intakes[write.intake.txn_id] = write.intake
            if write.outcome is not None:
                self.outcomes.append(write.outcome)
        self.replayed.append(spill.segment)
        spill.remove()

    async def count_transactions(self) -> int:
        if self.down:
            raise DatabaseDown("connection refused")
        return len(self.intakes)


def intake(tracking_code: str, *, uses_key: bool = True) -> Intake:
    return Intake(txn_id=uuid.uuid4().hex, received_at=datetime.now(timezone.utc), business_day=DAY, mti="0200",
                  acquirer_id="603799", tracking_code=tracking_code, stan="000001", transmitted_at=None,
                  terminal_id=None, merchant_id=None, card_masked=None, msisdn="989121110001", amount=100_000,
                  currency="364", channel=None, uses_key=uses_key)


def outcome(txn_id: str) -> Outcome:
    return Outcome(txn_id=txn_id, ended_at=datetime.now(timezone.utc), state=TxnState.APPROVED, response_code="00",
                   operator_id="MCI", operator_ref="R1", approval_code="123456", operator_code="00", latency_ms=1.0)


def test_group_commit_resolves_callers_only_after_their_batch_is_committed():
    async def scenario():
        store = MemoryStore()
        async with JournalCore(store) as journal:
            store.gate.clear()
            records = [intake(f"{n:012d}") for n in range(50)]
            callers = [asyncio.create_task(journal.record_intake(record)) for record in records]
            await asyncio.sleep(0.05)
            assert not any(caller.done() for caller in callers)  # held in the store: not committed yet
            assert store.intakes == {}

            async def answered_after_commit(caller: asyncio.Task, record: Intake) -> None:
                assert await caller is True
                assert record.txn_id in store.intakes  # committed before its caller heard back

            store.gate.set()
            await asyncio.gather(*(answered_after_commit(c, r) for c, r in zip(callers, records)))
            assert sum(store.batches) == 50 and len(store.batches) <= 2  # grouped, not one commit per record
            assert journal.batches_committed == len(store.batches)

    asyncio.run(scenario())


def test_a_taken_dedupe_key_answers_false_and_stores_nothing():
    async def scenario():
        store = MemoryStore()
        async with JournalCore(store) as journal:
            results = await asyncio.gather(*(journal.record_intake(intake("000000000007")) for _ in range(5)))
            assert sorted(results) == [False, False, False, False, True]
            assert len(store.intakes) == 1

    asyncio.run(scenario())


def test_a_full_queue_raises_overloaded_at_once_and_queues_nothing():
    async def scenario():
        store = MemoryStore()
        async with JournalCore(store, queue_max=3) as journal:
            store.gate.clear()
            in_flight = asyncio.create_task(journal.record_intake(intake("000000000001")))
            await asyncio.sleep(0.01)  # the writer took it and waits in the store
            queued = [asyncio.create_task(journal.record_intake(intake(f"00000000001{n}"))) for n in range(3)]
            await asyncio.sleep(0)
            async with asyncio.timeout(0.5):  # at once: not after a commit or a timeout
                with pytest.raises(JournalOverloaded):
                    await journal.record_intake(intake("000000000099"))
            store.gate.set()
            assert await in_flight is True
            assert await asyncio.gather(*queued) == [True, True, True]
            assert len(store.intakes) == 4

    asyncio.run(scenario())


def test_one_refused_record_is_rejected_alone_and_the_rest_of_its_batch_is_committed():
    async def scenario():
        store = MemoryStore()
        async with JournalCore(store) as journal:
            store.gate.clear()
            good = [intake(f"{n:012d}") for n in range(3)]
            orphan = outcome(uuid.uuid4().hex)  # no intake: the store refuses it
            calls = asyncio.gather(journal.record_intake(good[0]), journal.record_outcome(orphan),
                                   journal.record_intake(good[1]), journal.record_intake(good[2]),
                                   return_exceptions=True)
            await asyncio.sleep(0.01)
            store.gate.set()
            results = await calls
            assert results[0] is True and results[2:] == [True, True]
            assert isinstance(results[1], JournalRejected) and isinstance(results[1].__cause__, RefusedRecord)
            assert set(store.intakes) == {record.txn_id for record in good} and store.outcomes == []

    asyncio.run(scenario())


def test_no_commit_within_the_commit_timeout_raises_unavailable_then_the_journal_recovers():
    async def scenario():
        store = MemoryStore()
        async with JournalCore(store, commit_timeout=0.2) as journal:
            store.gate.clear()  # the database hangs
            with pytest.raises(JournalUnavailable, match="within"):
                await journal.record_intake(intake("000000000001"))
            store.gate.set()
            await asyncio.sleep(0.1)  # the writer's own attempt has given up too
            assert await journal.record_intake(intake("000000000002")) is True

    asyncio.run(scenario())


def test_a_failed_commit_reaches_every_waiter_of_its_batch():
    async def scenario():
        store = MemoryStore()
        async with JournalCore(store) as journal:
            store.down = True
            results = await asyncio.gather(*(journal.record_intake(intake(f"{n:012d}")) for n in range(5)),
                                           return_exceptions=True)
            assert all(type(result) is JournalUnavailable for result in results)
            assert len({id(result) for result in results}) == 5  # one exception object per waiter
            with pytest.raises(JournalUnavailable, match="read failed"):
                await journal.count_transactions()
            store.down = False
            assert await journal.record_intake(intake("000000000001")) is True

    asyncio.run(scenario())


def test_an_intake_whose_caller_gave_up_is_dropped_but_an_outcome_is_written():
    async def scenario():
        store = MemoryStore()
        async with JournalCore(store) as journal:
            held = intake("000000000001")
            assert await journal.record_intake(held)
            store.gate.clear()
            blocking = asyncio.create_task(journal.record_intake(intake("000000000002")))
            await asyncio.sleep(0.01)
            given_up = asyncio.create_task(journal.record_intake(intake("000000000003")))
            ended = asyncio.create_task(journal.record_outcome(outcome(held.txn_id)))
            await asyncio.sleep(0.01)
            given_up.cancel()
            ended.cancel()
            store.gate.set()
            assert await blocking is True
            assert await journal.record_intake(intake("000000000004"))  # the queue is through
            assert {i.tracking_code for i in store.intakes.values()} == {"000000000001", "000000000002",
                                                                          "000000000004"}
            assert [o.txn_id for o in store.outcomes] == [held.txn_id]

    asyncio.run(scenario())


def test_close_flushes_the_queue_and_then_refuses():
    async def scenario():
        store = MemoryStore()
        journal = JournalCore(store)
        await journal.start()
        callers = [asyncio.create_task(journal.record_intake(intake(f"{n:012d}"))) for n in range(20)]
        await asyncio.sleep(0)
        await journal.close()
        assert [await caller for caller in callers] == [True] * 20
        with pytest.raises(JournalUnavailable):
            await journal.record_intake(intake("000000000099"))
        with pytest.raises(JournalUnavailable):
            await journal.count_transactions()

    asyncio.run(scenario())


def test_a_batch_the_database_cannot_take_is_spilled_then_replayed(tmp_path):
    async def scenario():
        store = MemoryStore()
        async with JournalCore(store, spill_dir=tmp_path) as journal:
            store.down = True
            record = intake("000000000001")
            assert await journal.record_intake(record) is True  # durable in the spill file
            await journal.record_outcome(outcome(record.txn_id))
            assert journal.records_spilled == 2 and store.intakes == {}
            with pytest.raises(JournalUnavailable, match="spill"):
                await journal.count_transactions()  # the database lacks what the spill holds
            store.down = False
            await asyncio.sleep(1.2)  # the writer retries the replay once a second, even when idle
            assert store.replayed and not list(tmp_path.glob("spill-*.jsonl"))
            assert await journal.count_transactions() == 1 and len(store.outcomes) == 1

    asyncio.run(scenario())


def test_a_spill_needs_a_store_that_can_replay(tmp_path):
    class NoReplay:
        record_errors = read_errors = ()

    with pytest.raises(ValueError, match="replay"):
        JournalCore(NoReplay(), spill_dir=tmp_path)


# -- the pipeline: two writes in flight -------------------------------------------------------


class TwoLaneStore(MemoryStore):
    """A MemoryStore that takes two writes at once, each held until the test releases it."""

    writers = 2

    def __init__(self) -> None:
        super().__init__()
        self.held: list[asyncio.Event] = []  # one a write, in the order they started
        self.started: list[int] = []         # size of each write, in the order they started
        self.most_at_once = 0
        self._running = 0

    async def write(self, batch: list[QueuedWrite]) -> set[str]:
        release = asyncio.Event()
        self.held.append(release)
        self.started.append(len(batch))
        self._running += 1
        self.most_at_once = max(self.most_at_once, self._running)
        try:
            await release.wait()
            return await super().write(batch)
        finally:
            self._running -= 1


async def until(condition, timeout: float = 1.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.001)


def test_a_second_batch_starts_beside_one_in_flight_only_at_the_minimum_fill():
    async def scenario():
        store = TwoLaneStore()
        async with JournalCore(store, pipeline_min_fill=10) as journal:
            first = asyncio.create_task(journal.record_intake(intake("000000000001")))
            await until(lambda: store.started == [1])  # an idle writer starts at once
            few = [asyncio.create_task(journal.record_intake(intake(f"00000000010{n}"))) for n in range(5)]
            await asyncio.sleep(0.02)
            assert store.started == [1]  # 5 < 10: no commit of its own beside the one in flight
            more = [asyncio.create_task(journal.record_intake(intake(f"00000000020{n}"))) for n in range(5)]
            await until(lambda: store.started == [1, 10])  # filled: the second lane starts
            assert not first.done() and not any(task.done() for task in few + more)
            store.held[1].set()  # the second batch commits first: its callers hear at once
            assert await asyncio.gather(*few, *more) == [True] * 10
            assert not first.done()  # still not committed, so still not answered
            store.held[0].set()
            assert await first is True
            assert store.most_at_once == 2 and journal.batches_committed == 2

    asyncio.run(scenario())


def test_a_record_waits_for_at_most_one_commit_before_its_own_starts():
    async def scenario():
        store = TwoLaneStore()
        async with JournalCore(store, pipeline_min_fill=1000) as journal:
            first = asyncio.create_task(journal.record_intake(intake("000000000001")))
            await until(lambda: len(store.started) == 1)
            queued = [asyncio.create_task(journal.record_intake(intake(f"00000000010{n}"))) for n in range(3)]
            await asyncio.sleep(0.02)
            assert store.started == [1]  # below the fill: they wait for the commit in flight...
            store.held[0].set()
            await until(lambda: store.started == [1, 3])  # ...and start as soon as it ends, not later
            assert await first is True
            store.held[1].set()
            assert await asyncio.gather(*queued) == [True] * 3
            assert journal.commit_waits == {0: 1, 1: 3}

    asyncio.run(scenario())


def test_under_load_no_record_waits_for_two_commits_and_every_outcome_follows_its_intake():
    class JitteryStore(MemoryStore):
        writers = 2

        def __init__(self) -> None:
            super().__init__()
            self.rng = random.Random(8583)

        async def write(self, batch):
            await asyncio.sleep(self.rng.uniform(0, 0.004))  # two writes in flight end in either order
            return await super().write(batch)

    async def caller(journal, n: int) -> None:
        for k in range(5):
            record = intake(f"{n:06d}{k:06d}")
            assert await journal.record_intake(record) is True
            await journal.record_outcome(outcome(record.txn_id))  # refused if its intake were not in

    async def scenario():
        store = JitteryStore()
        async with JournalCore(store, batch_max=500, pipeline_min_fill=20) as journal:
            await asyncio.gather(*(caller(journal, n) for n in range(300)))  # never more than 300 queued
            assert len(store.intakes) == 1500 and len(store.outcomes) == 1500
            assert sum(journal.commit_waits.values()) == 3000
            assert max(journal.commit_waits) <= 1, journal.commit_waits
            assert journal.batches_committed == len(store.batches)

    asyncio.run(scenario())


def test_a_store_without_writers_is_written_one_batch_at_a_time():
    async def scenario():
        store = MemoryStore()
        running = most = 0
        plain_write = store.write

        async def counting_write(batch):
            nonlocal running, most
            running += 1
            most = max(most, running)
            try:
                await asyncio.sleep(0.002)
                return await plain_write(batch)
            finally:
                running -= 1

        store.write = counting_write
        async with JournalCore(store, pipeline_min_fill=1) as journal:
            assert await asyncio.gather(*(journal.record_intake(intake(f"{n:012d}")) for n in range(200))) \
                == [True] * 200
        assert most == 1

    asyncio.run(scenario())
