"""The top-up and balance chains of `TransactionCore`, participant by participant, through
fakes of the journal, the providers and the float ledger (tests/fakes.py): no sockets, no Postgres."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import msgspec
import pytest

from switch.clock import utcnow
from switch.app.config import FrequencyLimit, PricingConfig
from switch.flow.codes import ResponseCode
from switch.flow.messages import Balance
from switch.flow.participants.dedupe import DedupeWindow
from switch.flow.queueing import IntakeQueue
from switch.providers.base import NoAnswer, NotSent, Provider

from tests.fakes import (ACCOUNT, IRANCELL_NUMBER, UNROUTED_NUMBER, FakeJournal, FakeLedger, FakeProvider, Flow,
                         acquirer, approve, balance_inquiry, decline, prepaid_acquirer, repeat_of, run_bounded,
                         switch_config, top_up)


def prepaid_flow(*script, balance: int = 1_000_000, **config) -> Flow:
    flow = Flow(switch_config([prepaid_acquirer(**config)]), ledger=FakeLedger({ACCOUNT: balance}))
    flow.mci.script = list(script)
    return flow


async def settle(flow: Flow, *requests):
    return [await flow.handle(request) for request in requests]


async def until(condition, rounds: int = 200) -> None:
    for _ in range(rounds):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


def test_the_fake_provider_has_every_member_of_the_provider_protocol():
    members = {name for name in vars(Provider) if not name.startswith("_")} | set(Provider.__annotations__)
    assert members == {"id", "next_reference", "is_up", "top_up", "reverse", "is_nothing_to_reverse"}
    assert all(hasattr(FakeProvider("MCI"), name) for name in members)


# -- approved -----------------------------------------------------------------------------

def test_an_approval_answers_38_44_and_48_or_from_the_operators_answer():
    flow = Flow()
    flow.mci.script = [approve(ref="MCI-778899", approval_code="AB12CD")]
    answer = asyncio.run(flow.handle(top_up()))
    assert answer.response_code == ResponseCode.APPROVED
    assert (answer.approval_code, answer.operator_id, answer.tags) == ("AB12CD", "MCI", {"OR": "MCI-778899"})


def test_an_operator_approval_code_that_is_not_six_long_is_made_an6():
    flow = Flow()
    flow.mci.script = [approve(ref="MCI-1", approval_code="X9")]
    answer = asyncio.run(flow.handle(top_up()))
    assert answer.approval_code == "0000X9"


def test_an_approval_records_the_intake_with_the_key_before_the_provider_call_and_the_outcome_after():
    flow = Flow()
    request = top_up(msisdn="9121234567")
    asyncio.run(flow.handle(request))
    intake = flow.journal.only_key_intake()
    assert flow.steps("record_intake", "top_up", "record_outcome") == [
        ("record_intake", intake.txn_id), ("top_up", intake.txn_id),
        ("record_outcome", intake.txn_id, "approved", "end")]
    [topup] = flow.mci.calls
    assert (intake.uses_key, intake.msisdn, intake.routed_operator) == (True, "989121234567", "MCI")
    assert (intake.operator_stan, intake.operator_sent_at) == (topup.stan, topup.sent_at)
    assert (topup.msisdn, topup.amount, topup.tracking_code) == ("989121234567", 100_000, request.tracking_code)
    [outcome] = flow.journal.outcomes
    assert (outcome.response_code, outcome.operator_ref, outcome.approval_code) == ("00", "OPREF-1", "A1B2C3")


def test_an_approval_paid_from_float_holds_amount_plus_fee_after_the_intake_and_captures_it():
    flow = Flow(switch_config([prepaid_acquirer()], pricing={"MCI": PricingConfig(fee_fixed=500)}),
                ledger=FakeLedger({ACCOUNT: 1_000_000}))
    answer = asyncio.run(flow.handle(top_up(prepaid_acquirer())))
    assert answer.approved
    txn_id = flow.journal.only_key_intake().txn_id
    assert flow.steps("record_intake", "hold", "top_up", "capture", "record_outcome") == [
        ("record_intake", txn_id), ("hold", txn_id, 100_500), ("top_up", txn_id), ("capture", txn_id),
        ("record_outcome", txn_id, "approved", "end")]
    assert flow.ledger.balances[ACCOUNT] == 1_000_000 - 100_500
    assert flow.ledger.held(ACCOUNT) == 0


def test_an_approval_keeps_its_place_in_the_acquirers_daily_limit():
    flow = Flow(switch_config([acquirer(daily_limit=150_000)]))
    first, second = asyncio.run(settle(flow, top_up(acquirer(daily_limit=150_000)),
                                       top_up(acquirer(daily_limit=150_000))))
    assert first.approved
    assert second.response_code == ResponseCode.OVER_LIMIT


# -- declined, not sent, no answer ----------------------------------------------------------

def test_an_operator_decline_answers_its_mapped_code_and_releases_float_and_limit():
    payer = prepaid_acquirer(daily_limit=100_000)
    flow = prepaid_flow(decline("14", operator_code="111"), approve(), daily_limit=100_000)
    declined, retried = asyncio.run(settle(flow, top_up(payer), top_up(payer)))
    assert declined.response_code == ResponseCode.INVALID_MSISDN
    assert declined.approval_code is None and declined.tags == {}
    first = flow.mci.calls[0].txn_id
    [outcome] = flow.journal.outcomes_of(first)
    assert (outcome.state, outcome.response_code, outcome.operator_code) == ("declined", "14", "111")
    assert flow.ledger.state_of(first) == "released"
    assert retried.approved            # the daily limit was given back


def test_not_sent_answers_91_declined_and_releases_the_float():
    flow = prepaid_flow(NotSent("no live link"))
    answer = asyncio.run(flow.handle(top_up(prepaid_acquirer())))
    assert answer.response_code == ResponseCode.UNAVAILABLE
    txn_id = flow.mci.calls[0].txn_id
    [outcome] = flow.journal.outcomes_of(txn_id)
    assert (outcome.state, outcome.response_code) == ("declined", "91")
    assert flow.journal.stored_reversals == {}
    assert flow.ledger.state_of(txn_id) == "released"


def test_an_operator_routed_to_but_not_configured_is_91_declined_and_nothing_is_sent():
    flow = Flow(providers={"MCI": FakeProvider("MCI")})
    answer = asyncio.run(flow.handle(top_up(msisdn=IRANCELL_NUMBER)))
    assert answer.response_code == ResponseCode.UNAVAILABLE
    intake = flow.journal.only_key_intake()
    assert intake.routed_operator is None
    [outcome] = flow.journal.outcomes
    assert (outcome.state, outcome.operator_id) == ("declined", "IRANCELL")


def test_no_answer_is_91_unknown_with_its_reversal_stored_with_the_outcome_float_held_and_limit_kept():
    payer = prepaid_acquirer(daily_limit=150_000)
    flow = prepaid_flow(NoAnswer("timeout"), daily_limit=150_000)
    unknown, next_one = asyncio.run(settle(flow, top_up(payer), top_up(payer)))
    assert unknown.response_code == ResponseCode.UNAVAILABLE
    txn_id = flow.mci.calls[0].txn_id
    [outcome] = flow.journal.outcomes_of(txn_id)
    assert (outcome.state, outcome.response_code) == ("unknown", "91")
    assert flow.steps("record_outcome")[0] == ("record_outcome", txn_id, "unknown", "end")
    reversal = flow.journal.stored_reversals[txn_id]["reversal"]
    assert (reversal.operator_id, reversal.reason) == ("MCI", "unknown_outcome")
    assert flow.ledger.state_of(txn_id) == "held"
    assert next_one.response_code == ResponseCode.OVER_LIMIT      # the unknown one still counts


# -- the journal ----------------------------------------------------------------------------

def test_a_journal_that_cannot_take_the_intake_answers_96_sends_nothing_and_still_writes_the_outcome():
    flow = Flow()
    flow.journal.fail("record_intake", times=1)
    answer = asyncio.run(flow.handle(top_up()))
    assert answer.response_code == ResponseCode.MALFUNCTION
    assert flow.mci.calls == []
    [(_, txn_id)] = flow.steps("record_intake")
    [outcome] = flow.journal.outcomes
    assert (outcome.txn_id, outcome.state, outcome.response_code) == (txn_id, "refused", "96")
    assert flow.journal.refusals == []   # not a second intake: the first one may yet have committed


def test_a_key_already_taken_in_the_journal_is_94_under_a_new_txn_id_without_the_key_and_releases_limits():
    journal = FakeJournal()
    payer = acquirer(daily_limit=100_000)
    other_process = Flow(switch_config([payer]), journal=journal)
    this_process = Flow(switch_config([payer]), journal=journal)
    request = top_up(payer)
    assert asyncio.run(other_process.handle(request)).approved
    duplicate, fresh = asyncio.run(settle(this_process, request, top_up(payer)))
    assert duplicate.response_code == ResponseCode.DUPLICATE
    assert this_process.mci.calls[0].tracking_code != request.tracking_code   # only `fresh` was sent
    _, claim = [i for i in journal.attempted_intakes if i.tracking_code == request.tracking_code]
    assert claim.uses_key and claim.txn_id not in journal.intakes       # the claim this process lost
    [(intake, outcome)] = journal.refusals
    assert intake.txn_id != claim.txn_id
    assert (intake.uses_key, intake.routed_operator, outcome.response_code) == (False, None, "94")
    assert fresh.approved               # the 94's place in the daily limit was given back


def test_an_approval_whose_outcome_is_not_journaled_is_96_and_compensated_by_unknown_with_a_reversal():
    flow = prepaid_flow(daily_limit=150_000)
    flow.journal.fail("record_outcome", times=1)
    payer = prepaid_acquirer(daily_limit=150_000)
    answer, next_one = asyncio.run(settle(flow, top_up(payer), top_up(payer)))
    assert answer.response_code == ResponseCode.MALFUNCTION
    assert answer.approval_code is None
    txn_id = flow.mci.calls[0].txn_id
    assert flow.steps("record_outcome")[:2] == [("record_outcome", txn_id, "approved", "end"),
                                                ("record_outcome", txn_id, "unknown", "end")]
    [compensation] = flow.journal.outcomes_of(txn_id)
    assert (compensation.state, compensation.response_code) == ("unknown", "96")
    assert flow.journal.stored_reversals[txn_id]["reversal"].reason == "unknown_outcome"
    assert flow.ledger.state_of(txn_id) == "captured"    # the reversal's settlement refunds it
    assert next_one.response_code == ResponseCode.OVER_LIMIT


def test_an_approval_whose_outcome_and_compensation_both_fail_is_96_and_left_an_orphan():
    flow = Flow()
    flow.journal.fail("record_outcome")
    answer = asyncio.run(flow.handle(top_up()))
    assert answer.response_code == ResponseCode.MALFUNCTION
    assert flow.journal.failures.raised == {"record_outcome": 2}
    orphans = asyncio.run(flow.journal.orphans(utcnow() - timedelta(minutes=1), utcnow()))
    assert [o.txn_id for o in orphans] == [flow.mci.calls[0].txn_id]


# -- refusals before the key: the payer may send the tracking code again --------------------

@pytest.mark.parametrize(("fields", "code"), [
    ({"problem": "field 4 missing"}, ResponseCode.FORMAT_ERROR),
    ({"acquirer_id": "627412"}, ResponseCode.NOT_PERMITTED),
])
def test_a_refusal_by_validation_does_not_use_the_key_and_the_corrected_request_is_processed(fields, code):
    flow = Flow()
    corrected = top_up()
    refused, processed = asyncio.run(settle(flow, top_up(tracking_code=corrected.tracking_code, **fields), corrected))
    assert refused.response_code == code
    [(intake, outcome)] = flow.journal.refusals
    assert (intake.uses_key, outcome.response_code) == (False, code)
    assert processed.approved
    assert len(flow.mci.calls) == 1


def test_over_the_in_flight_cap_is_91_at_once_without_the_key_and_nothing_recorded():
    flow = Flow(switch_config(max_in_flight=1))

    async def scenario():
        flow.mci.gate = asyncio.Event()
        first = asyncio.create_task(flow.handle(top_up()))
        await until(lambda: flow.mci.calls)
        over = top_up()
        turned_away = await flow.handle(over)
        flow.mci.gate.set()
        return await first, turned_away, await flow.handle(over)

    first, turned_away, sent_again = run_bounded(scenario())
    assert first.approved
    assert turned_away.response_code == ResponseCode.UNAVAILABLE
    assert flow.journal.refusals == []        # a shed request spends nothing of the journal
    assert sent_again.approved


def test_a_duplicate_in_the_window_is_94_recorded_without_the_key_and_never_reaches_the_journal_key():
    flow = Flow()
    request = top_up()
    original, duplicate = asyncio.run(settle(flow, request, request))
    assert original.approved
    assert duplicate.response_code == ResponseCode.DUPLICATE
    assert len(flow.journal.key_intakes()) == 1
    assert len(flow.steps("record_intake")) == 1
    [(intake, outcome)] = flow.journal.refusals
    assert (intake.uses_key, outcome.response_code) == (False, "94")
    assert len(flow.mci.calls) == 1


# -- refusals after the route: they use the key, and never reach the provider ------------------

KEYED_REFUSALS = {
    "14 malformed MSISDN": ({}, {"msisdn": "12345"}, ResponseCode.INVALID_MSISDN),
    "92 no route": ({}, {"msisdn": UNROUTED_NUMBER}, ResponseCode.NO_ROUTE),
    "13 amount the operator does not take": ({}, {"amount": 100_500}, ResponseCode.INVALID_AMOUNT),
    "13 wrong currency": ({}, {"currency": "840"}, ResponseCode.INVALID_AMOUNT),
    "57 operator not allowed": ({"allowed_operators": ["IRANCELL"]}, {}, ResponseCode.NOT_PERMITTED),
    "61 over the per top-up maximum": ({"max_amount": 50_000}, {}, ResponseCode.OVER_LIMIT),
    "61 under the per top-up minimum": ({"min_amount": 200_000}, {}, ResponseCode.OVER_LIMIT),
    "65 too frequent": ({"frequency_limit": FrequencyLimit(count=1, period=3600)}, {}, ResponseCode.TOO_FREQUENT),
}


@pytest.mark.parametrize(("rules", "fields", "code"), list(KEYED_REFUSALS.values()), ids=list(KEYED_REFUSALS))
def test_a_refusal_after_validation_uses_the_key_records_intake_then_refused_outcome_and_sends_nothing(
        rules, fields, code):
    payer = acquirer(**rules)
    flow = Flow(switch_config([payer]))
    earlier = [top_up(payer)] if code == ResponseCode.TOO_FREQUENT else []
    request = top_up(payer, **fields)
    *_, answer = asyncio.run(settle(flow, *earlier, request))
    assert answer.response_code == code
    [intake] = [i for i in flow.journal.key_intakes() if i.tracking_code == request.tracking_code]
    assert intake.uses_key is True
    assert flow.steps("record_intake", "record_outcome")[-2:] == [
        ("record_intake", intake.txn_id), ("record_outcome", intake.txn_id, "refused", "end")]
    [outcome] = flow.journal.outcomes_of(intake.txn_id)
    assert outcome.response_code == code
    assert [c.tracking_code for c in flow.mci.calls] == [r.tracking_code for r in earlier]
    assert flow.journal.refusals == []


def test_a_keyed_refusal_gives_back_its_place_so_the_next_top_up_is_approved():
    payer = acquirer(daily_limit=100_000, frequency_limit=FrequencyLimit(count=1, period=3600))
    flow = Flow(switch_config([payer]))
    refused, approved = asyncio.run(settle(flow, top_up(payer, amount=100_500), top_up(payer)))
    assert refused.response_code == ResponseCode.INVALID_AMOUNT   # refused before limits reserved anything
    assert approved.approved


# -- float ------------------------------------------------------------------------------------

def test_float_too_short_is_51_with_the_key_nothing_sent_and_the_limit_given_back():
    payer = prepaid_acquirer(daily_limit=100_000)
    flow = prepaid_flow(balance=99_999, daily_limit=100_000)
    short = asyncio.run(flow.handle(top_up(payer)))
    assert short.response_code == ResponseCode.INSUFFICIENT_FLOAT
    assert flow.mci.calls == []
    intake = flow.journal.only_key_intake()
    [outcome] = flow.journal.outcomes_of(intake.txn_id)
    assert (outcome.state, outcome.response_code) == ("refused", "51")
    flow.ledger.balances[ACCOUNT] = 100_000
    assert asyncio.run(flow.handle(top_up(payer))).approved


def test_a_ledger_that_cannot_be_reached_is_96_and_any_hold_is_released():
    flow = prepaid_flow()
    flow.ledger.fail("hold", times=1)
    answer = asyncio.run(flow.handle(top_up(prepaid_acquirer())))
    assert answer.response_code == ResponseCode.MALFUNCTION
    assert flow.mci.calls == []
    txn_id = flow.journal.only_key_intake().txn_id
    assert flow.steps("release") == [("release", txn_id)]
    assert flow.journal.outcomes_of(txn_id)[0].response_code == "96"


# -- balance inquiry ----------------------------------------------------------------------------

def test_a_balance_inquiry_answers_the_float_balance_and_is_recorded_as_an_inquiry_with_the_key():
    flow = prepaid_flow(balance=750_000)
    flow.ledger.holds["other"] = {"account": ACCOUNT, "amount": 50_000, "state": "held"}
    answer = asyncio.run(flow.handle(balance_inquiry(prepaid_acquirer())))
    assert answer.response_code == ResponseCode.APPROVED
    assert answer.balance == Balance(ledger=750_000, available=700_000)
    intake = flow.journal.only_key_intake()
    [outcome] = flow.journal.outcomes_of(intake.txn_id)
    assert (outcome.state, outcome.response_code) == ("inquiry", "00")
    assert flow.mci.calls == []


def test_a_balance_inquiry_without_a_float_account_is_57_without_the_key():
    flow = Flow()
    answer = asyncio.run(flow.handle(balance_inquiry()))
    assert answer == type(answer)(response_code=ResponseCode.NOT_PERMITTED)
    assert flow.journal.keys == {}
    [(intake, _)] = flow.journal.refusals
    assert intake.uses_key is False


def test_a_balance_inquiry_the_ledger_cannot_answer_is_96_and_shows_no_balance():
    flow = prepaid_flow()
    flow.ledger.fail("balance")
    answer = asyncio.run(flow.handle(balance_inquiry(prepaid_acquirer())))
    assert (answer.response_code, answer.balance) == (ResponseCode.MALFUNCTION, None)


# -- repeats (0201) -------------------------------------------------------------------------------

def test_a_repeat_of_a_stored_approval_replays_it_with_the_same_38_and_records_nothing():
    flow = Flow()
    original = top_up()
    first = asyncio.run(flow.handle(original))
    written = len(flow.trail)
    replay = asyncio.run(flow.handle(repeat_of(original, trace="000002")))
    assert replay == first
    assert replay.approval_code == "A1B2C3"
    assert len(flow.mci.calls) == 1
    assert [step[0] for step in flow.trail[written:]] == []


def test_a_repeat_of_a_stored_decline_replays_its_code():
    flow = Flow()
    flow.mci.script = [decline("57")]
    original = top_up()
    asyncio.run(flow.handle(original))
    assert asyncio.run(flow.handle(repeat_of(original))).response_code == ResponseCode.NOT_PERMITTED
    assert len(flow.mci.calls) == 1


def test_a_repeat_naming_the_number_in_another_form_is_the_same_number():
    flow = Flow()
    original = top_up(msisdn="09121234567")
    first = asyncio.run(flow.handle(original))
    assert asyncio.run(flow.handle(repeat_of(original, msisdn="+989121234567"))) == first


def test_a_repeat_of_an_original_in_flight_waits_for_it_and_gets_its_answer():
    flow = Flow()
    original = top_up()

    async def scenario():
        flow.mci.gate = asyncio.Event()
        first = asyncio.create_task(flow.handle(original))
        await until(lambda: flow.mci.calls)
        repeat = asyncio.create_task(flow.handle(repeat_of(original)))
        for _ in range(20):
            await asyncio.sleep(0)
        assert not repeat.done()
        flow.mci.gate.set()
        return await first, await repeat

    first, repeated = run_bounded(scenario())
    assert first.approved and repeated == first
    assert len(flow.mci.calls) == 1
    assert flow.journal.reads.get("find", 0) == 0     # it waited here instead of reading the journal


@pytest.mark.parametrize("differs", [{"amount": 200_000}, {"msisdn": "09121234568"}])
def test_a_repeat_whose_amount_or_number_differ_from_its_stored_original_is_94(differs):
    flow = Flow()
    original = top_up()
    asyncio.run(flow.handle(original))
    assert asyncio.run(flow.handle(repeat_of(original, **differs))).response_code == ResponseCode.DUPLICATE
    assert len(flow.mci.calls) == 1


def test_a_repeat_whose_amount_differs_from_its_original_in_flight_is_94():
    flow = Flow()
    original = top_up()

    async def scenario():
        flow.mci.gate = asyncio.Event()
        first = asyncio.create_task(flow.handle(original))
        await until(lambda: flow.mci.calls)
        repeat = asyncio.create_task(flow.handle(repeat_of(original, amount=200_000)))
        await asyncio.sleep(0)
        flow.mci.gate.set()
        return await first, await repeat

    first, repeated = run_bounded(scenario())
    assert first.approved
    assert repeated.response_code == ResponseCode.DUPLICATE


def test_a_repeat_is_91_when_the_journal_cannot_be_read():
    flow = Flow()
    original = top_up()
    asyncio.run(flow.handle(original))
    flow.journal.fail("find")
    assert asyncio.run(flow.handle(repeat_of(original))).response_code == ResponseCode.UNAVAILABLE
    assert len(flow.mci.calls) == 1


def test_a_repeat_of_an_original_another_process_holds_unfinished_is_91():
    journal = FakeJournal()
    other, here = Flow(journal=journal), Flow(journal=journal)
    original = top_up()

    async def scenario():
        other.mci.gate = asyncio.Event()
        first = asyncio.create_task(other.handle(original))
        await until(lambda: other.mci.calls)
        repeated = await here.handle(repeat_of(original))
        other.mci.gate.set()
        await first
        return repeated

    assert run_bounded(scenario()).response_code == ResponseCode.UNAVAILABLE
    assert here.mci.calls == []


def test_a_repeat_with_no_original_is_processed_as_a_top_up_under_its_own_key():
    flow = Flow()
    repeat = repeat_of(top_up())
    answer = asyncio.run(flow.handle(repeat))
    assert answer.approved
    intake = flow.journal.only_key_intake()
    assert (intake.mti, intake.tracking_code, intake.uses_key) == ("0201", repeat.tracking_code, True)
    assert len(flow.mci.calls) == 1


# -- in flight ----------------------------------------------------------------------------------

def test_a_duplicate_of_a_top_up_still_in_flight_after_the_window_forgot_its_key_leaves_the_original_answer():
    flow = Flow(window=DedupeWindow(max_keys=1))
    original = top_up()

    async def scenario():
        flow.mci.gate = asyncio.Event()
        first = asyncio.create_task(flow.handle(original))
        await until(lambda: flow.mci.calls)
        other = asyncio.create_task(flow.handle(top_up()))   # pushes the original's key out of the window
        await until(lambda: len(flow.mci.calls) == 2)
        duplicate = await flow.handle(original)
        flow.mci.gate.set()
        await other
        return await first, duplicate

    first, duplicate = run_bounded(scenario())
    assert duplicate.response_code == ResponseCode.DUPLICATE
    assert first.approved


def test_a_top_up_that_queued_longer_than_the_objective_before_admission_is_shed_with_91_and_nothing_recorded():
    flow = Flow(switch_config(max_queue_delay=0.05))
    late = top_up(arrived=time.monotonic() - 0.2)      # its bytes arrived 200 ms ago: the loop is behind
    shed, = asyncio.run(settle(flow, late))
    assert shed.response_code == ResponseCode.UNAVAILABLE
    assert flow.journal.refusals == [] and flow.journal.intakes == {} and flow.mci.calls == []
    again, = asyncio.run(settle(flow, msgspec.structs.replace(late, arrived=time.monotonic())))
    assert again.approved                                # the key was not used: sent again, it goes through


def test_while_journal_commits_queue_longer_than_the_objective_top_ups_are_shed_and_admitted_once_they_drain(
        monkeypatch):
    flow = Flow(switch_config(max_queue_delay=0.05))
    intakes = flow.core.intakes
    real_monotonic = time.monotonic
    monkeypatch.setattr(time, "monotonic", lambda: real_monotonic() - 0.5)
    intakes.enter("an intake waiting 500 ms for its commit")     # a journal that stopped committing
    monkeypatch.undo()
    shed, = asyncio.run(settle(flow, top_up()))
    assert shed.response_code == ResponseCode.UNAVAILABLE and flow.mci.calls == []
    intakes.leave("an intake waiting 500 ms for its commit")      # it commits: the fastest wait of its window
    monkeypatch.setattr(time, "monotonic", lambda: real_monotonic() + 0.11)   # that window has ended
    assert intakes.delay() >= 0.4                                  # a standing queue: still shedding
    monkeypatch.setattr(time, "monotonic", lambda: real_monotonic() + 0.25)   # a window with none waiting
    assert intakes.delay() == 0.0                                  # drained: admission opens again
    monkeypatch.undo()
    admitted, = asyncio.run(settle(flow, top_up()))
    assert admitted.approved


def test_a_burst_of_commit_waits_under_the_objective_is_no_standing_queue():
    intakes = IntakeQueue(window=0.05)
    for n in range(100):
        intakes.enter(str(n))
    for n in range(100):
        intakes.leave(str(n))
    time.sleep(0.06)
    assert intakes.delay() < 0.05
