"""After the top-up: an acquirer's reversals (0400/0420) and an operator's late answers, through
the transaction core and store-and-forward wired to fakes (tests/fakes.py). No sockets, no Postgres."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import msgspec
import pytest

from switch.flow import late_answers
from switch.flow.codes import ResponseCode
from switch.flow.late_answers import LateAnswers
from switch.flow.store_and_forward import ReversalForwarder
from switch.providers.base import NoAnswer, ReversalAnswer

from tests.fakes import (ACCOUNT, NOTHING_TO_REVERSE, FakeLedger, Flow, approve, decline, prepaid_acquirer,
                         reversal_config, reversal_of, run_bounded, switch_config, top_up)


async def until(condition, rounds: int = 200) -> None:
    for _ in range(rounds):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


def approved_original(flow: Flow):
    original = top_up()
    assert asyncio.run(flow.handle(original)).approved
    return original, flow.journal.only_key_intake().txn_id


# -- acquirer reversals ----------------------------------------------------------------------

def test_a_reversal_of_an_approval_is_stored_with_reversal_pending_before_00_and_wakes_the_forwarder():
    flow = Flow()
    original, txn_id = approved_original(flow)
    answer = asyncio.run(flow.handle(reversal_of(original)))
    assert answer.response_code == ResponseCode.APPROVED
    stored = flow.journal.stored_reversals[txn_id]
    assert (stored["state"], stored["reversal"].reason, stored["reversal"].operator_id) == (
        "pending", "acquirer_reversal", "MCI")
    latest = flow.journal.outcomes_of(txn_id)[-1]
    assert (latest.state, latest.event, latest.response_code) == ("reversal_pending", "acquirer_reversal", "00")
    assert flow.reversals_stored == 1


def test_a_reversal_advice_of_an_approval_is_stored_and_acknowledged():
    flow = Flow()
    original, txn_id = approved_original(flow)
    assert asyncio.run(flow.handle(reversal_of(original, advice=True))).response_code == ResponseCode.APPROVED
    assert txn_id in flow.journal.stored_reversals
    assert flow.reversals_stored == 1


@pytest.mark.parametrize(("advice", "code"), [(False, ResponseCode.NOT_FOUND), (True, ResponseCode.APPROVED)])
def test_a_reversal_of_an_unknown_original_is_25_or_an_acknowledged_advice_and_stores_nothing(advice, code):
    flow = Flow()
    answer = asyncio.run(flow.handle(reversal_of(top_up(), advice=advice)))
    assert answer.response_code == code
    assert flow.journal.stored_reversals == {}
    [(intake, outcome)] = flow.journal.refusals
    assert (intake.uses_key, outcome.state, outcome.response_code) == (False, "refused", code)
    assert flow.reversals_stored == 0


@pytest.mark.parametrize("mismatch", [
    {"trace": "999999"}, {"transmitted_at": "0101000000"}, {"kind": "0100"}, {"acquirer_id": "00000627412"},
])
def test_a_reversal_whose_field_90_does_not_match_the_original_is_an_unknown_original(mismatch):
    flow = Flow()
    original, txn_id = approved_original(flow)
    request = reversal_of(original)
    request = msgspec.structs.replace(request, original=msgspec.structs.replace(request.original, **mismatch))
    assert asyncio.run(flow.handle(request)).response_code == ResponseCode.NOT_FOUND
    assert flow.journal.stored_reversals == {}


def test_a_reversal_whose_amount_differs_from_the_original_is_an_unknown_original():
    flow = Flow()
    original, _ = approved_original(flow)
    assert asyncio.run(flow.handle(reversal_of(original, amount=200_000))).response_code == ResponseCode.NOT_FOUND


@pytest.mark.parametrize("outcome", [decline("05"), NoAnswer("timeout")], ids=["declined", "unknown"])
def test_a_reversal_of_an_original_that_was_not_approved_is_00_and_stores_nothing(outcome):
    flow = Flow()
    flow.mci.script = [outcome]
    original = top_up()
    asyncio.run(flow.handle(original))
    txn_id = flow.journal.only_key_intake().txn_id
    before = (list(flow.journal.outcomes), dict(flow.journal.stored_reversals))
    assert asyncio.run(flow.handle(reversal_of(original))).response_code == ResponseCode.APPROVED
    assert (flow.journal.outcomes, flow.journal.stored_reversals) == before
    assert flow.journal.refusals == []
    assert flow.reversals_stored == 0
    assert flow.journal.view(txn_id).state in ("declined", "unknown")


def test_a_0400_outside_the_reversal_window_is_12_and_an_advice_is_still_stored():
    flow = Flow(switch_config(reversals=reversal_config(window_days=0)))
    original, txn_id = approved_original(flow)
    intake = flow.journal.intakes[txn_id]
    flow.journal.intakes[txn_id] = msgspec.structs.replace(intake, business_day=intake.business_day - timedelta(days=1))
    assert asyncio.run(flow.handle(reversal_of(original))).response_code == ResponseCode.INVALID_TXN
    assert flow.journal.stored_reversals == {}
    assert asyncio.run(flow.handle(reversal_of(original, advice=True))).response_code == ResponseCode.APPROVED
    assert txn_id in flow.journal.stored_reversals


def test_a_0400_within_a_wider_window_of_an_earlier_day_is_stored():
    flow = Flow(switch_config(reversals=reversal_config(window_days=1)))
    original, txn_id = approved_original(flow)
    intake = flow.journal.intakes[txn_id]
    flow.journal.intakes[txn_id] = msgspec.structs.replace(intake, business_day=intake.business_day - timedelta(days=1))
    assert asyncio.run(flow.handle(reversal_of(original))).response_code == ResponseCode.APPROVED
    assert txn_id in flow.journal.stored_reversals


def test_a_reversal_of_an_original_in_flight_waits_for_its_approval_then_stores_the_reversal():
    flow = Flow()
    original = top_up()

    async def scenario():
        flow.mci.gate = asyncio.Event()
        first = asyncio.create_task(flow.handle(original))
        await until(lambda: flow.mci.calls)
        reversal = asyncio.create_task(flow.handle(reversal_of(original)))
        for _ in range(20):
            await asyncio.sleep(0)
        assert not reversal.done()
        flow.mci.gate.set()
        return await first, await reversal

    first, reversed_ = run_bounded(scenario())
    assert first.approved and reversed_.response_code == ResponseCode.APPROVED
    txn_id = flow.mci.calls[0].txn_id
    assert flow.journal.view(txn_id).state == "reversal_pending"
    assert txn_id in flow.journal.stored_reversals


def test_a_reversal_is_96_when_the_journal_cannot_be_read_and_96_when_it_cannot_be_stored():
    flow = Flow()
    original, txn_id = approved_original(flow)
    flow.journal.fail("find_latest", times=1)
    assert asyncio.run(flow.handle(reversal_of(original))).response_code == ResponseCode.MALFUNCTION
    flow.journal.fail("record_outcome", times=1)
    assert asyncio.run(flow.handle(reversal_of(original))).response_code == ResponseCode.MALFUNCTION
    assert flow.journal.stored_reversals == {}
    assert flow.reversals_stored == 0


@pytest.mark.parametrize(("fields", "code"), [({"problem": "field 90 missing"}, ResponseCode.FORMAT_ERROR),
                                              ({"acquirer_id": "627412"}, ResponseCode.NOT_PERMITTED)])
def test_a_malformed_or_foreign_reversal_is_refused_before_the_original_is_looked_up(fields, code):
    flow = Flow()
    original, _ = approved_original(flow)
    assert asyncio.run(flow.handle(reversal_of(original, **fields))).response_code == code
    assert flow.journal.reads.get("find_latest", 0) == 0
    assert flow.journal.stored_reversals == {}


# -- late answers -----------------------------------------------------------------------------

def settled_unknown(reversal_code: str):
    """A top-up the operator did not answer, whose reversal store-and-forward settled with `reversal_code`."""
    flow = Flow()
    flow.mci.script = [NoAnswer("timeout")]
    assert asyncio.run(flow.handle(top_up())).response_code == ResponseCode.UNAVAILABLE
    topup = flow.mci.calls[0]
    flow.mci.reverse_script = [ReversalAnswer(settled=True, operator_code=reversal_code,
                                              nothing_to_reverse=reversal_code == NOTHING_TO_REVERSE)]
    forwarder = ReversalForwarder(flow.journal, flow.providers, reversal_config(), flow.float_hold.refund)
    assert asyncio.run(forwarder.forward_due()) == 1
    assert flow.journal.view(topup.txn_id).state == "reversed"
    assert flow.journal.stored_reversals[topup.txn_id]["state"] == "done"
    wakes: list = []
    return flow, topup, forwarder, LateAnswers(flow.journal, flow.providers, lambda: wakes.append(1)), wakes


def test_a_late_approval_after_a_reversal_settled_as_nothing_to_reverse_reopens_it_and_wakes_the_forwarder():
    flow, topup, forwarder, late, wakes = settled_unknown(NOTHING_TO_REVERSE)
    asyncio.run(late.record("MCI", topup, approve(ref="LATE-1")))
    rows = flow.journal.outcomes_of(topup.txn_id)
    assert [(o.event, o.state) for o in rows[-2:]] == [("late_answer", "unknown"), ("reversal_reopened", "unknown")]
    assert rows[-2].operator_ref == "LATE-1"
    assert flow.journal.stored_reversals[topup.txn_id]["state"] == "pending"
    assert flow.journal.view(topup.txn_id).state == "unknown"
    assert wakes == [1]
    assert asyncio.run(forwarder.forward_due()) == 1          # store-and-forward sends it again
    assert [r.txn_id for r in flow.mci.reversals] == [topup.txn_id, topup.txn_id]


def test_a_late_approval_after_a_reversal_settled_as_reversed_is_recorded_only():
    flow, topup, _, late, wakes = settled_unknown("00")
    updates = len(flow.journal.reversal_updates)
    asyncio.run(late.record("MCI", topup, approve()))
    assert flow.journal.outcomes_of(topup.txn_id)[-1].event == "late_answer"
    assert flow.journal.view(topup.txn_id).state == "reversed"
    assert len(flow.journal.reversal_updates) == updates
    assert flow.journal.stored_reversals[topup.txn_id]["state"] == "done"
    assert wakes == []


def test_a_late_decline_is_recorded_only_and_reads_nothing():
    flow, topup, _, late, wakes = settled_unknown(NOTHING_TO_REVERSE)
    reads = dict(flow.journal.reads)
    asyncio.run(late.record("MCI", topup, decline("05")))
    last = flow.journal.outcomes_of(topup.txn_id)[-1]
    assert (last.event, last.operator_code) == ("late_answer", "05")
    assert flow.journal.reads == reads
    assert flow.journal.stored_reversals[topup.txn_id]["state"] == "done"
    assert wakes == []


def test_a_late_approval_while_its_reversal_is_still_owed_is_recorded_only():
    flow = Flow()
    flow.mci.script = [NoAnswer("timeout")]
    asyncio.run(flow.handle(top_up()))
    topup = flow.mci.calls[0]
    wakes: list = []
    asyncio.run(LateAnswers(flow.journal, flow.providers, lambda: wakes.append(1)).record("MCI", topup, approve()))
    assert flow.journal.outcomes_of(topup.txn_id)[-1].event == "late_answer"
    assert flow.journal.stored_reversals[topup.txn_id]["state"] == "pending"
    assert flow.journal.reversal_updates == [] and wakes == []


def test_a_late_approval_decision_is_retried_while_the_journal_cannot_be_read_then_taken(monkeypatch):
    monkeypatch.setattr(late_answers, "RETRY_START", 0.001)
    flow, topup, _, late, wakes = settled_unknown(NOTHING_TO_REVERSE)
    flow.journal.fail("record_outcome", times=2)
    flow.journal.fail("transaction", times=3)
    reads = flow.journal.reads.get("transaction", 0)
    asyncio.run(asyncio.wait_for(late.record("MCI", topup, approve()), timeout=5))
    assert flow.journal.failures.raised["record_outcome"] == 2
    assert flow.journal.reads["transaction"] - reads == 4
    assert [o.event for o in flow.journal.outcomes_of(topup.txn_id)[-2:]] == ["late_answer", "reversal_reopened"]
    assert wakes == [1]


def test_the_late_answer_handler_records_in_the_background():
    flow, topup, _, late, wakes = settled_unknown(NOTHING_TO_REVERSE)

    async def scenario():
        late("MCI", topup, approve())       # a link calls it from its reader and goes on
        await until(lambda: wakes)
        await late.stop()

    run_bounded(scenario())
    assert flow.journal.stored_reversals[topup.txn_id]["state"] == "pending"


def test_a_settled_unknown_top_up_gives_its_float_back():
    flow = Flow(switch_config([prepaid_acquirer()]), ledger=FakeLedger({ACCOUNT: 1_000_000}))
    flow.mci.script = [NoAnswer("timeout")]
    asyncio.run(flow.handle(top_up(prepaid_acquirer())))
    txn_id = flow.mci.calls[0].txn_id
    assert flow.ledger.state_of(txn_id) == "held"
    forwarder = ReversalForwarder(flow.journal, flow.providers, reversal_config(), flow.float_hold.refund)
    assert asyncio.run(forwarder.forward_due()) == 1
    assert flow.ledger.state_of(txn_id) == "released"
    assert flow.ledger.held(ACCOUNT) == 0 and flow.ledger.balances[ACCOUNT] == 1_000_000
