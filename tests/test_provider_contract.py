"""The provider side's declared contracts, pure (no sockets): every dialect adapter has
what `OperatorAdapter` declares with the same parameters, the operator pool has what
`Provider` declares, reversal answers say when there was nothing to reverse, and a
pool with no live link refuses with `NotSent` before anything is sent."""

from __future__ import annotations

import asyncio
import inspect
from datetime import datetime, timezone

import pytest

from switch.app.config import LinkConfig, OperatorConfig
from switch.providers.adapters import ADAPTERS, OperatorAdapter, adapter_for
from switch.providers.base import NotSent, OperatorReversal, Provider, TopUp
from switch.providers.link import OperatorPool
from switch.wire import Dialect, JsonLinesDialect

SENT_AT = datetime(2026, 11, 22, 10, 11, 12, tzinfo=timezone.utc)
TOPUP = TopUp(txn_id="b" * 32, acquirer_id="603799", tracking_code="RRN000000002", msisdn="989121110001",
              amount=50_000, currency="364", stan="000043", sent_at=SENT_AT)
REVERSAL = OperatorReversal(txn_id="b" * 32, tracking_code="RRN000000002", msisdn="989121110001", amount=50_000,
                            currency="364", original_stan="000043", original_sent_at=SENT_AT, attempt=0)


def missing_or_different(protocol: type, candidate: object) -> list[str]:
    """What `candidate` lacks of `protocol`: attributes, methods, or methods whose parameters differ."""
    problems = [name for name in getattr(protocol, "__annotations__", {}) if not hasattr(candidate, name)]
    for name, declared in vars(protocol).items():
        if name.startswith("_"):
            continue
        if isinstance(declared, property):
            if not hasattr(candidate, name):
                problems.append(name)
            continue
        if not callable(declared):
            continue
        actual = getattr(candidate, name, None)
        if not callable(actual):
            problems.append(name)
            continue
        wanted = [p for p in inspect.signature(declared).parameters if p != "self"]
        if list(inspect.signature(actual).parameters) != wanted:
            problems.append(f"{name}{inspect.signature(actual)} is not {name}({', '.join(wanted)})")
        if inspect.iscoroutinefunction(declared) != inspect.iscoroutinefunction(actual):
            problems.append(f"{name} is not {'async' if inspect.iscoroutinefunction(declared) else 'sync'}")
    return problems


def pool(dialect: str = "opa87") -> OperatorPool:
    operator = OperatorConfig(id="MCI", name="MCI", dialect=dialect, links=[LinkConfig(port=1)], secret="s3cret")
    return OperatorPool(operator, "99001", "AIRSW001")


@pytest.mark.parametrize("dialect", sorted(ADAPTERS))
def test_every_dialect_adapter_has_all_that_operator_adapter_declares(dialect):
    adapter = adapter_for(dialect, "MCI", "99001", "AIRSW001", secret="s3cret")
    assert missing_or_different(OperatorAdapter, adapter) == []
    assert isinstance(adapter.signs_on, bool)
    assert isinstance(adapter.dialect, (Dialect, JsonLinesDialect))


def test_the_contract_check_notices_a_missing_method_and_a_changed_signature():
    class Incomplete(ADAPTERS["opcjson"]):
        reversal_answer = None

        @staticmethod
        def reversal_reference(reversal):
            return "x"

    problems = missing_or_different(OperatorAdapter, Incomplete("MCI", "99001", "AIRSW001", "s3cret"))
    assert "reversal_answer" in problems
    assert any(problem.startswith("reversal_reference") for problem in problems)


def test_the_operator_pool_has_all_that_provider_declares():
    operators = pool()
    assert missing_or_different(Provider, operators) == []
    assert operators.id == "MCI"


def test_only_the_iso_dialects_sign_on_when_dialling():
    assert {name: adapter_for(name, "MCI", "99001", "AIRSW001").signs_on for name in ADAPTERS} == \
        {"opa87": True, "opb93": True, "opcjson": False}


REVERSAL_ANSWERS = [  # dialect, answer, settled, nothing to reverse
    ("opa87", {"t": "0430", "39": "00"}, True, False),
    ("opa87", {"t": "0430", "39": "25"}, True, True),
    ("opa87", {"t": "0430", "39": "96"}, False, False),
    ("opa87", {"t": "0410", "39": "25"}, False, False),     # not an answer to a reversal
    ("opb93", {"t": "1430", "39": "400"}, True, False),
    ("opb93", {"t": "1430", "39": "480"}, True, True),
    ("opb93", {"t": "1430", "39": "909"}, False, False),
    ("opb93", {"t": "1814", "39": "480"}, False, False),
    ("opcjson", {"type": "reverse_result", "ref": "x-R", "status": "OK"}, True, False),
    ("opcjson", {"type": "reverse_result", "ref": "x-R", "status": "NOT_FOUND"}, True, True),
    ("opcjson", {"type": "reverse_result", "ref": "x-R", "status": "ERROR"}, False, False),
    ("opcjson", {"type": "recharge_result", "ref": "x-R", "status": "NOT_FOUND"}, False, False),
]


@pytest.mark.parametrize("dialect, answer, settled, nothing_to_reverse", REVERSAL_ANSWERS)
def test_reversal_answers_say_settled_and_whether_there_was_nothing_to_reverse(dialect, answer, settled,
                                                                               nothing_to_reverse):
    adapter = adapter_for(dialect, "MCI", "99001", "AIRSW001")
    read = adapter.reversal_answer(answer)
    assert (read.settled, read.nothing_to_reverse) == (settled, nothing_to_reverse)
    assert pool(dialect).is_nothing_to_reverse(read.operator_code) == (read.operator_code in ("25", "480", "NOT_FOUND"))


@pytest.mark.parametrize("dialect", sorted(ADAPTERS))
def test_a_pool_with_no_live_link_refuses_top_ups_and_reversals_with_not_sent(dialect):
    operators = pool(dialect)   # never started: no link at all

    async def attempt():
        with pytest.raises(NotSent):
            await operators.top_up(TOPUP)
        with pytest.raises(NotSent):
            await operators.reverse(REVERSAL)

    assert not operators.is_up
    asyncio.run(attempt())


def test_pool_references_are_six_digit_stans_that_never_repeat_back_to_back():
    operators = pool()
    references = [operators.next_reference() for _ in range(3)]
    assert all(len(r) == 6 and r.isdigit() and r != "000000" for r in references)
    assert len(set(references)) == 3


def test_iso_reversals_take_a_fresh_stan_and_opcjson_repeats_carry_the_same_ref():
    opa, opb, opc = (adapter_for(name, "MCI", "99001", "AIRSW001") for name in ("opa87", "opb93", "opcjson"))
    assert opa.reversal_reference(REVERSAL, 7) == "000007" and opa.reversal_reference(REVERSAL, 8) == "000008"
    assert opb.reversal_reference(REVERSAL, 1_000_000) == "000001"
    assert opc.reversal_reference(REVERSAL, 7) == opc.reversal_reference(REVERSAL, 8) == "b" * 32 + "-R"


def test_each_worker_draws_stans_from_its_own_slice_and_wraps_within_it():
    from itertools import islice
    from switch.providers.adapters.iso import stan
    from switch.providers.link import stan_counter

    first = {stan(n) for n in islice(stan_counter(0, 2), 600_000)}
    second = {stan(n) for n in islice(stan_counter(1, 2), 600_000)}
    assert not first & second                       # never the same STAN, even after wrapping
    assert len(first) == len(second) == 499_999     # each slice whole, wrapped within itself
    assert "000000" not in first | second
    assert len({stan(n) for n in islice(stan_counter(), 999_999)}) == 999_999   # one process: all of them
