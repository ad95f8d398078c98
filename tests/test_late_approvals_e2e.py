"""Late approvals, end to end in every operator dialect (issue 9, docs/decisions.md "A late approval
after a settled reversal"): a top-up the operator does not answer in time gets 91 and a stored
reversal; the reversal is sent and answered; then the operator's approval of the original arrives.

- Reversal answered "reversed" (opa87 00, opb93 400, opcjson OK): the credit is undone already; the
  late approval is recorded and no further reversal is sent.
- Reversal answered "nothing to reverse" (opa87 25, opb93 480, opcjson NOT_FOUND): the operator
  credited after the reversal, so the reversal is reopened and sent again.
- The same during a Postgres outage: the late approval is spilled with the journal, and the decision
  to reopen is taken once the journal can be read again.

The operator simulator holds its top-up answers until the test releases them
(`OperatorBehaviour.hold_top_ups`), so every step happens in a known order.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from faultproxy import FaultProxy
from simulators.operator import OperatorBehaviour
from switch.journal import PostgresJournal
from support import MELLI, BankClient, eventually, postgres_journal, reversal_row, running_switch, top_up

LINKS = [("opa87", "connect"), ("opb93", "connect"), ("opcjson", "accept")]
IDS = [f"{d}-{m}" for d, m in LINKS]
REVERSED = {"opa87": "00", "opb93": "400", "opcjson": "OK"}
NOTHING_TO_REVERSE = {"opa87": "25", "opb93": "480", "opcjson": "NOT_FOUND"}
OPERATOR_TIMEOUT = 0.2   # seconds: the top-up is held longer than this, so the switch answers 91
FAST_REVERSALS = {"max_attempts": 4, "backoff_start": 0.1, "backoff_max": 0.2, "poll_interval": 0.1,
                  "orphan_age": 1.5}
QUIET = 0.5              # seconds (five forwarder polls) in which no further reversal may go out
OUTAGE_DEADLINE = 20.0   # seconds for the reopened reversal after Postgres is back (decision backoff)


def run(coroutine):
    return asyncio.run(coroutine)


@pytest.fixture
def journal(pg_dsn, pg_schema):
    return lambda: postgres_journal(pg_dsn, pg_schema)


async def top_up_answered_91(switch) -> dict:
    """A top-up to MCI that the (holding) operator does not answer in time: the bank gets 91."""
    bank = await BankClient.connect(switch.port)
    request = top_up("000001")
    try:
        assert (await bank.request(request))["39"] == "91"
    finally:
        await bank.close()
    return request


async def reversal_settled(switch, rrn: str, operator_code: str, answers: int, timeout: float = 5.0):
    """Wait until the operator answered `answers` reversals and the journal shows the transaction
    reversed by an answer `operator_code`; return its view."""
    simulator = switch.simulators["MCI"]

    async def settled():
        if sum(simulator.reversal_answers.values()) < answers:
            return None
        view = await switch.journal.find_latest(MELLI, rrn)
        return view if view is not None and view.state == "reversed" and view.operator_code == operator_code \
            else None
    return await eventually(settled, f"{rrn} reversed at the operator ({operator_code}, {answers} reversal(s))",
                            timeout)


async def late_answer_recorded(switch, txn_id: str, timeout: float = 5.0) -> None:
    """Wait until the late answer is in the journal and the switch has finished with it."""
    async def recorded():
        events = [row[2] for row in await switch.journal.history(txn_id)]
        # The late-answer handler records first and then decides; its task ends when both are done.
        return "late_answer" in events and not switch.late_answers.pending
    await eventually(recorded, f"txn {txn_id}: late answer recorded and decided", timeout)


@pytest.mark.parametrize("dialect, mode", LINKS, ids=IDS)
def test_a_late_approval_after_the_reversal_was_answered_reversed_sends_no_second_reversal(
        journal, pg_dsn, pg_schema, dialect, mode):
    async def scenario():
        behaviour = OperatorBehaviour(latency_ms=1, hold_top_ups="answer")   # credits now, answers later
        async with running_switch(journal(), {"MCI": behaviour}, dialects={"MCI": (dialect, mode)},
                                  operator_timeout=OPERATOR_TIMEOUT, reversals=FAST_REVERSALS) as switch:
            simulator = switch.simulators["MCI"]
            request = await top_up_answered_91(switch)
            view = await reversal_settled(switch, request["37"], REVERSED[dialect], answers=1)
            assert simulator.reversal_answers == {REVERSED[dialect]: 1}

            assert simulator.release_held() == 1          # the operator's approval, after all that
            await late_answer_recorded(switch, view.txn_id)
            await asyncio.sleep(QUIET)

            assert simulator.reversal_answers == {REVERSED[dialect]: 1}, "a second reversal was sent"
            after = await switch.journal.find_latest(MELLI, request["37"])
            assert (after.state, after.response_code, after.operator_code) == ("reversed", "91", REVERSED[dialect])
            assert await reversal_row(pg_dsn, pg_schema, view.txn_id) == ("done", 1, REVERSED[dialect])
            assert not await switch.journal.reversals(("pending",))
            events = [row[2] for row in await switch.journal.history(view.txn_id)]
            assert events == ["end", "reversal_done", "late_answer"]
            assert len(simulator.ledger) == 1 and set(simulator.reversed) == set(simulator.ledger)
    run(scenario())


@pytest.mark.parametrize("dialect, mode", LINKS, ids=IDS)
def test_a_late_approval_after_the_reversal_found_nothing_to_reverse_reopens_and_sends_it_again(
        journal, pg_dsn, pg_schema, dialect, mode):
    async def scenario():
        behaviour = OperatorBehaviour(latency_ms=1, hold_top_ups="credit")   # credits only when released
        async with running_switch(journal(), {"MCI": behaviour}, dialects={"MCI": (dialect, mode)},
                                  operator_timeout=OPERATOR_TIMEOUT, reversals=FAST_REVERSALS) as switch:
            simulator = switch.simulators["MCI"]
            request = await top_up_answered_91(switch)
            view = await reversal_settled(switch, request["37"], NOTHING_TO_REVERSE[dialect], answers=1)
            assert simulator.reversal_answers == {NOTHING_TO_REVERSE[dialect]: 1} and not simulator.ledger

            assert simulator.release_held() == 1          # now the operator credits, and says so
            await reversal_settled(switch, request["37"], REVERSED[dialect], answers=2)

            assert simulator.reversal_answers == {NOTHING_TO_REVERSE[dialect]: 1, REVERSED[dialect]: 1}
            assert len(simulator.ledger) == 1 and set(simulator.reversed) == set(simulator.ledger)
            after = await switch.journal.find_latest(MELLI, request["37"])
            assert (after.state, after.response_code) == ("reversed", "91")   # the acquirer's 91 stands
            assert await reversal_row(pg_dsn, pg_schema, view.txn_id) == ("done", 1, REVERSED[dialect])
            events = [row[2] for row in await switch.journal.history(view.txn_id)]
            assert events == ["end", "reversal_done", "late_answer", "reversal_reopened", "reversal_done"]
            await asyncio.sleep(QUIET)
            assert sum(simulator.reversal_answers.values()) == 2, "the reversal was sent more than twice"
    run(scenario())


def test_a_late_approval_during_a_postgres_outage_is_spilled_and_reopens_the_reversal_once_it_is_back(
        pg_dsn, pg_schema, tmp_path, caplog):
    async def scenario():
        proxy = FaultProxy("127.0.0.1", 5432)
        proxied = pg_dsn.replace("127.0.0.1:5432", f"127.0.0.1:{await proxy.start()}")
        journal = PostgresJournal(proxied, schema=pg_schema, batch_max=200, spill_dir=tmp_path, commit_timeout=2.0)
        behaviour = OperatorBehaviour(latency_ms=1, hold_top_ups="credit")
        try:
            async with running_switch(journal, {"MCI": behaviour}, operator_timeout=OPERATOR_TIMEOUT,
                                      reversals=FAST_REVERSALS) as switch:
                simulator = switch.simulators["MCI"]
                request = await top_up_answered_91(switch)
                view = await reversal_settled(switch, request["37"], "25", answers=1)

                proxy.cut()                                   # Postgres goes away
                spilled_before = journal.records_spilled
                assert simulator.release_held() == 1          # the late approval comes during the outage

                async def spilled():
                    return journal.records_spilled > spilled_before
                await eventually(spilled, "the late answer was written to the spill file")
                assert list(tmp_path.glob("spill-*.jsonl"))
                await asyncio.sleep(0.5)                      # the decision is tried, and fails, meanwhile
                assert simulator.reversal_answers == {"25": 1}

                proxy.restore()                               # Postgres is back: replay, then decide
                await reversal_settled(switch, request["37"], "00", answers=2, timeout=OUTAGE_DEADLINE)
                assert simulator.reversal_answers == {"25": 1, "00": 1}
                assert set(simulator.reversed) == set(simulator.ledger) and len(simulator.ledger) == 1
                assert await reversal_row(pg_dsn, pg_schema, view.txn_id) == ("done", 1, "00")
                events = [row[2] for row in await switch.journal.history(view.txn_id)]
                assert events == ["end", "reversal_done", "late_answer", "reversal_reopened", "reversal_done"]
        finally:
            await proxy.stop()
        not_journaled = [record.getMessage() for record in caplog.records
                         if record.levelno >= logging.CRITICAL and "journaled" in record.getMessage().lower()]
        assert not not_journaled, not_journaled
    run(scenario())
