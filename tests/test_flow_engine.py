"""The engine and the transaction states, alone: scripted participants around `Engine.run`,
an in-memory journal, no sockets, no Postgres."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from switch.clock import BusinessCalendar
from switch.errors import LocalProtocolError
from switch.flow.codes import ResponseCode
from switch.flow.engine import Chain, Engine
from switch.flow.messages import Answer
from switch.flow.states import TRANSITIONS, IllegalTransition, TxnState, check_transition
from switch.flow.transaction import Transaction
from switch.journal import Journal

from tests.fakes import FakeJournal, top_up

DECIDE = "decide"     # a scripted participant that approves the transaction


class Scripted:
    """A participant whose prepare returns (or does) what it is told, and that notes its calls."""

    def __init__(self, name: str, calls: list, step=None) -> None:
        self.name, self.calls, self.step = name, calls, step

    async def prepare(self, txn: Transaction):
        self.calls.append(("prepare", self.name))
        if isinstance(self.step, BaseException):
            raise self.step
        if self.step == DECIDE:
            txn.decide(TxnState.APPROVED, ResponseCode.APPROVED)
            return None
        return self.step

    async def end(self, txn: Transaction) -> None:
        self.calls.append(("end", self.name, txn.state))


def chain(calls: list, *steps) -> list[Scripted]:
    return [Scripted(f"p{n}", calls, step) for n, step in enumerate(steps)]


def run(journal: FakeJournal, participants, request=None):
    engine = Engine(journal, BusinessCalendar())
    return asyncio.run(engine.run(request or top_up(), Chain(*participants)))


def test_the_fake_journal_implements_the_journal_protocol():
    assert isinstance(FakeJournal(), Journal)


def test_ends_run_once_each_in_reverse_order_for_exactly_the_participants_whose_prepare_ran():
    calls: list = []
    journal = FakeJournal()
    answer = run(journal, chain(calls, None, None, ResponseCode.NOT_PERMITTED, DECIDE))
    assert answer.response_code == ResponseCode.NOT_PERMITTED
    assert calls == [("prepare", "p0"), ("prepare", "p1"), ("prepare", "p2"),
                     ("end", "p2", TxnState.REFUSED), ("end", "p1", TxnState.REFUSED),
                     ("end", "p0", TxnState.REFUSED)]


def test_ends_run_after_a_decision_in_reverse_order_and_see_the_decided_state():
    calls: list = []
    answer = run(FakeJournal(), chain(calls, None, DECIDE))
    assert answer.response_code == ResponseCode.APPROVED
    assert calls[2:] == [("end", "p1", TxnState.APPROVED), ("end", "p0", TxnState.APPROVED)]


def test_a_refusal_before_the_key_is_recorded_once_as_a_refusal_that_uses_no_key():
    journal = FakeJournal()
    request = top_up()
    answer = run(journal, chain([], None, ResponseCode.FORMAT_ERROR), request)
    assert answer == Answer(response_code=ResponseCode.FORMAT_ERROR)
    [(intake, outcome)] = journal.refusals
    assert intake.uses_key is False
    assert (intake.acquirer_id, intake.tracking_code) == (request.acquirer_id, request.tracking_code)
    assert (outcome.txn_id, outcome.state, outcome.response_code) == (intake.txn_id, "refused", "30")
    assert journal.keys == {}


def test_an_answer_step_is_answered_as_is_records_nothing_and_still_runs_the_ends():
    calls: list = []
    journal = FakeJournal()
    replay = Answer(response_code=ResponseCode.APPROVED, approval_code="123456", operator_id="MCI")
    answer = run(journal, chain(calls, None, replay, DECIDE), top_up())
    assert answer is replay
    assert journal.trail == []
    assert calls[-2:] == [("end", "p1", None), ("end", "p0", None)]
    assert ("prepare", "p2") not in calls


def test_an_exception_in_a_participant_propagates_after_every_prepared_end_ran_with_state_none():
    calls: list = []
    journal = FakeJournal()
    with pytest.raises(ZeroDivisionError):
        run(journal, chain(calls, None, ZeroDivisionError("a bug"), DECIDE))
    assert calls == [("prepare", "p0"), ("prepare", "p1"), ("end", "p1", None), ("end", "p0", None)]
    assert journal.trail == []   # nothing recorded: the holds stay, orphan recovery decides


def test_a_chain_that_ends_without_a_decision_is_a_local_protocol_error_after_its_ends_ran():
    calls: list = []
    journal = FakeJournal()
    with pytest.raises(LocalProtocolError, match="without a decision"):
        run(journal, chain(calls, None, None))
    assert calls[-2:] == [("end", "p1", None), ("end", "p0", None)]
    assert journal.trail == []


def test_a_refusal_the_journal_cannot_take_is_still_answered():
    journal = FakeJournal()
    journal.fail("record_refusal")
    answer = run(journal, chain([], ResponseCode.FORMAT_ERROR))
    assert answer.response_code == ResponseCode.FORMAT_ERROR
    assert journal.failures.raised == {"record_refusal": 1}
    assert journal.refusals == []


def test_a_transaction_whose_intake_holds_the_key_is_not_recorded_again_by_the_engine():
    class HoldsTheKey(Scripted):
        async def prepare(self, txn):
            txn.journaled = True
            return ResponseCode.INVALID_MSISDN

    journal = FakeJournal()
    answer = run(journal, [HoldsTheKey("journaling", [])])
    assert answer.response_code == ResponseCode.INVALID_MSISDN
    assert journal.trail == []   # its outcome is the journal participant's to write, not the engine's


def test_refuse_turns_a_request_away_recorded_without_the_key_and_without_participants():
    journal = FakeJournal()
    engine = Engine(journal, BusinessCalendar())
    answer = asyncio.run(engine.refuse(top_up(), ResponseCode.SECURITY_VIOLATION))
    assert answer.response_code == ResponseCode.SECURITY_VIOLATION
    [(intake, outcome)] = journal.refusals
    assert (intake.uses_key, outcome.state, outcome.response_code) == (False, "refused", "63")


# -- states ------------------------------------------------------------------------------

ALLOWED = [(current, new) for current, targets in TRANSITIONS.items() for new in sorted(targets)]
FORBIDDEN = [(current, new) for current, new in itertools.product([None, *TxnState], TxnState)
             if new not in TRANSITIONS[current]]


def test_every_state_has_a_row_in_the_transitions_table():
    assert set(TRANSITIONS) == {None, *TxnState}


@pytest.mark.parametrize(("current", "new"), ALLOWED)
def test_every_declared_transition_is_allowed(current, new):
    assert check_transition(current, new) is new
    assert check_transition(current.value if current else None, new) is new   # as read back from the journal


@pytest.mark.parametrize(("current", "new"), FORBIDDEN)
def test_every_undeclared_transition_raises_illegal_transition(current, new):
    with pytest.raises(IllegalTransition):
        check_transition(current, new)


@pytest.mark.parametrize(("current", "new"), [
    (TxnState.REFUSED, TxnState.APPROVED), (TxnState.DECLINED, TxnState.APPROVED),
    (TxnState.APPROVED, TxnState.APPROVED), (None, TxnState.REVERSED), (TxnState.INQUIRY, TxnState.REVERSED),
    *[(TxnState.RESOLVED, new) for new in TxnState],
])
def test_named_illegal_transitions_raise_and_illegal_transition_is_local(current, new):
    with pytest.raises(IllegalTransition) as raised:
        check_transition(current, new)
    assert isinstance(raised.value, LocalProtocolError)


def test_a_transaction_is_decided_once():
    txn = Transaction(top_up(), BusinessCalendar().day_of)
    txn.decide(TxnState.APPROVED, "00")
    with pytest.raises(IllegalTransition):
        txn.decide(TxnState.REFUSED, ResponseCode.MALFUNCTION)
    assert (txn.state, txn.response_code) == (TxnState.APPROVED, ResponseCode.APPROVED)


def test_a_decision_with_a_code_outside_the_table_raises_and_leaves_the_transaction_undecided():
    txn = Transaction(top_up(), BusinessCalendar().day_of)
    with pytest.raises(ValueError):
        txn.decide(TxnState.DECLINED, "06")
    assert txn.state is None
