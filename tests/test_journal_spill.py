"""Journal durability when Postgres is unreachable: records go to a local fsync'd spill
file, are acknowledged only once on disk, and are replayed into Postgres exactly once."""

from __future__ import annotations

import asyncio
import uuid
from datetime import date, datetime, timezone

import asyncpg

from faultproxy import FaultProxy
from switch.journal import Intake, JournalUnavailable, Outcome, PostgresJournal


def intake(rrn: str) -> Intake:
    now = datetime.now(timezone.utc)
    return Intake(txn_id=uuid.uuid4().hex, received_at=now, business_day=date.today(), mti="0200",
                  acquirer_id="603799", tracking_code=rrn, stan="000001", transmitted_at=None, terminal_id=None,
                  merchant_id=None, card_masked=None, msisdn="989121110001", amount=100_000, currency="364",
                  channel=None, uses_key=True)


def outcome(txn_id: str) -> Outcome:
    return Outcome(txn_id=txn_id, ended_at=datetime.now(timezone.utc), state="approved", response_code="00",
                   operator_id="MCI", operator_ref="R1", approval_code="123456", operator_code="00", latency_ms=1.0)


def proxied(dsn: str, port: int) -> str:
    return dsn.replace("127.0.0.1:5432", f"127.0.0.1:{port}")


async def rows(dsn: str, schema: str) -> tuple[int, int]:
    conn = await asyncpg.connect(dsn)
    try:
        return (await conn.fetchval(f'SELECT count(*) FROM "{schema}".intake'),
                await conn.fetchval(f'SELECT count(*) FROM "{schema}".outcome'))
    finally:
        await conn.close()


async def write_transactions(journal: PostgresJournal, count: int) -> None:
    async def one(i: int) -> None:
        record = intake(uuid.uuid4().hex[:12])
        assert await journal.record_intake(record)
        await journal.record_outcome(outcome(record.txn_id))
    await asyncio.gather(*(one(i) for i in range(count)))


def test_records_are_spilled_while_postgres_is_unreachable_and_replayed_exactly_once(pg_dsn, pg_schema, tmp_path):
    async def scenario():
        proxy = FaultProxy("127.0.0.1", 5432)
        journal = PostgresJournal(proxied(pg_dsn, await proxy.start()), schema=pg_schema, spill_dir=tmp_path,
                                  commit_timeout=4.0)
        await journal.start()
        await write_transactions(journal, 50)
        proxy.cut()                                  # Postgres goes away
        await write_transactions(journal, 50)        # still acknowledged: on disk in the spill
        assert journal.records_spilled > 0 and list(tmp_path.glob("spill-*.jsonl"))
        assert await rows(pg_dsn, pg_schema) != (100, 100)
        proxy.restore()                              # it comes back
        await asyncio.sleep(1.2)
        await write_transactions(journal, 10)        # the next batch replays the spill first
        await journal.close()
        assert await rows(pg_dsn, pg_schema) == (110, 110)
        assert not list(tmp_path.glob("spill-*.jsonl"))
        await proxy.stop()
    asyncio.run(scenario())


def test_a_spill_left_by_a_stopped_process_is_replayed_at_the_next_start(pg_dsn, pg_schema, tmp_path):
    async def scenario():
        proxy = FaultProxy("127.0.0.1", 5432)
        journal = PostgresJournal(proxied(pg_dsn, await proxy.start()), schema=pg_schema, spill_dir=tmp_path,
                                  commit_timeout=4.0)
        await journal.start()
        proxy.cut()
        await write_transactions(journal, 20)
        await journal.close()                        # stops while Postgres is still away
        assert list(tmp_path.glob("spill-*.jsonl"))
        proxy.restore()
        again = PostgresJournal(pg_dsn, schema=pg_schema, spill_dir=tmp_path)
        await again.start()
        await again.close()
        assert await rows(pg_dsn, pg_schema) == (20, 20)
        # A second start finds nothing more to replay: exactly once.
        third = PostgresJournal(pg_dsn, schema=pg_schema, spill_dir=tmp_path)
        await third.start()
        await third.close()
        assert await rows(pg_dsn, pg_schema) == (20, 20)
        await proxy.stop()
    asyncio.run(scenario())


def test_past_the_spill_bound_new_top_ups_are_refused_but_outcomes_are_kept(pg_dsn, pg_schema, tmp_path):
    async def scenario():
        proxy = FaultProxy("127.0.0.1", 5432)
        journal = PostgresJournal(proxied(pg_dsn, await proxy.start()), schema=pg_schema, spill_dir=tmp_path,
                                  commit_timeout=4.0, spill_max_seconds=0.5)
        await journal.start()
        record = intake("BOUNDED00001")
        assert await journal.record_intake(record)
        proxy.cut()
        await journal.record_outcome(outcome(record.txn_id))   # spilled
        await asyncio.sleep(0.8)
        try:
            await journal.record_intake(intake("BOUNDED00002"))
        except JournalUnavailable:
            pass
        else:
            raise AssertionError("a new top-up was accepted past the spill bound")
        await journal.record_outcome(outcome(record.txn_id))   # what already happened is still kept
        proxy.restore()
        await asyncio.sleep(1.2)
        await journal.record_outcome(outcome(record.txn_id))
        await journal.close()
        assert await rows(pg_dsn, pg_schema) == (1, 3)
        await proxy.stop()
    asyncio.run(scenario())


def test_when_the_spill_cannot_be_written_records_are_refused(pg_dsn, pg_schema, tmp_path):
    async def scenario():
        proxy = FaultProxy("127.0.0.1", 5432)
        blocked = tmp_path / "not-a-directory"
        blocked.write_text("a file where the spill directory should be")
        journal = PostgresJournal(proxied(pg_dsn, await proxy.start()), schema=pg_schema, spill_dir=blocked,
                                  commit_timeout=4.0)
        await journal.start()
        proxy.cut()
        try:
            await journal.record_intake(intake("NOSPILL00001"))
        except JournalUnavailable:
            pass
        else:
            raise AssertionError("an intake was acknowledged with neither Postgres nor a spill file")
        await journal.close()
        await proxy.stop()
    asyncio.run(scenario())
