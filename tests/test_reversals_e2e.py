"""Money safety on the acquirer and operator sides: reversals stored before they are
acknowledged, forwarded in the operator's dialect until it answers, in order; crash
recovery of requests that were sent and never finished."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from simulators.operator import OperatorBehaviour
from switch.clock import utcnow
from switch.journal import Intake
from support import MELLI, BankClient, postgres_journal, running_switch, top_up

LINKS = [("opa87", "connect"), ("opb93", "connect"), ("opcjson", "accept")]
IDS = [f"{d}-{m}" for d, m in LINKS]
FAST_REVERSALS = {"max_attempts": 4, "backoff_start": 0.1, "backoff_max": 0.2, "poll_interval": 0.1,
                  "orphan_age": 1.5}


def run(coroutine):
    return asyncio.run(coroutine)


@pytest.fixture
def journal(pg_dsn, pg_schema):
    return lambda: postgres_journal(pg_dsn, pg_schema)


async def wait_for_state(switch, rrn: str, state: str, timeout: float = 5.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        view = await switch.journal.find_latest(MELLI, rrn)
        if view is not None and view.state == state:
            return view
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{rrn}: state {view.state if view else None}, expected {state}")
        await asyncio.sleep(0.05)


def reversal_of(original: dict, stan: str, mti: str = "0400") -> dict:
    field_90 = original["t"] + original["11"] + original["7"] + original["32"].zfill(11) + "0" * 11
    return {**original, "t": mti, "11": stan, "90": field_90}


@pytest.mark.parametrize("dialect, mode", LINKS, ids=IDS)
def test_an_unknown_outcome_is_reversed_at_the_operator_that_credited_late(journal, dialect, mode):
    async def scenario():
        behaviour = OperatorBehaviour(latency_ms=500)
        async with running_switch(journal(), {"MCI": behaviour}, dialects={"MCI": (dialect, mode)},
                                  operator_timeout=0.2, reversals=FAST_REVERSALS) as switch:
            bank = await BankClient.connect(switch.port)
            request = top_up("000001")
            assert (await bank.request(request))["39"] == "91"
            switch.simulators["MCI"].behaviour.latency_ms = 1   # it answers the reversal in time
            view = await wait_for_state(switch, request["37"], "reversed")
            simulator = switch.simulators["MCI"]
            credited = [key for key, credit in simulator.ledger.items() if credit.tracking_code == request["37"]]
            assert credited and all(key in simulator.reversed for key in credited)
            assert view.response_code == "91"
            await bank.close()
    run(scenario())


@pytest.mark.parametrize("dialect, mode", LINKS, ids=IDS)
def test_acquirer_0400_of_an_approved_top_up_reverses_it_at_the_operator(journal, dialect, mode):
    async def scenario():
        async with running_switch(journal(), dialects={"MCI": (dialect, mode)}, reversals=FAST_REVERSALS) as switch:
            bank = await BankClient.connect(switch.port)
            original = top_up("000001")
            assert (await bank.request(original))["39"] == "00"
            answer = await bank.request(reversal_of(original, "000002"))
            assert (answer["t"], answer["39"]) == ("0410", "00")
            await wait_for_state(switch, original["37"], "reversed")
            simulator = switch.simulators["MCI"]
            assert len(simulator.reversed) == 1 and set(simulator.reversed) == set(simulator.ledger)
            # Asking again changes nothing and is answered 00.
            again = await bank.request(reversal_of(original, "000003", "0420"))
            assert (again["t"], again["39"]) == ("0430", "00")
            await bank.close()
    run(scenario())


def test_reversal_rules_for_unknown_mismatched_and_unapproved_originals(journal):
    async def scenario():
        behaviours = {"MCI": OperatorBehaviour(latency_ms=1, decline_rate=1.0)}
        async with running_switch(journal(), behaviours, reversals=FAST_REVERSALS) as switch:
            bank = await BankClient.connect(switch.port)
            never_sent = top_up("000001")
            assert (await bank.request(reversal_of(never_sent, "000002")))["39"] == "25"
            advice = await bank.request(reversal_of(never_sent, "000003", "0420"))
            assert (advice["t"], advice["39"]) == ("0430", "00")
            declined = top_up("000004")
            assert (await bank.request(declined))["39"] == "05"
            assert (await bank.request(reversal_of(declined, "000005")))["39"] == "00"
            wrong_90 = reversal_of(declined, "000006")
            wrong_90["90"] = "0200" + "999999" + wrong_90["90"][10:]
            assert (await bank.request(wrong_90))["39"] == "25"
            wrong_amount = {**reversal_of(declined, "000007"), "4": "000000999999"}
            assert (await bank.request(wrong_amount))["39"] == "25"
            missing_90 = {k: v for k, v in reversal_of(declined, "000008").items() if k != "90"}
            assert (await bank.request(missing_90))["39"] == "30"
            await asyncio.sleep(0.3)
            assert not switch.simulators["MCI"].reversed and not switch.simulators["MCI"].reversal_answers
            await bank.close()
    run(scenario())


def test_a_0400_outside_the_reversal_window_gets_12_but_a_0420_is_taken(journal):
    async def scenario():
        async with running_switch(journal(), reversals=FAST_REVERSALS) as switch:
            bank = await BankClient.connect(switch.port)
            original = top_up("000001")
            assert (await bank.request(original))["39"] == "00"
            switch.core.calendar.day_of = lambda moment, real=switch.core.calendar.day_of: real(moment) + timedelta(days=1)
            assert (await bank.request(reversal_of(original, "000002")))["39"] == "12"
            assert (await bank.request(reversal_of(original, "000003", "0420")))["39"] == "00"
            await wait_for_state(switch, original["37"], "reversed")
            await bank.close()
    run(scenario())


def test_reversals_are_repeated_until_the_operator_answers_and_kept_in_order(journal):
    async def scenario():
        behaviour = OperatorBehaviour(latency_ms=300)
        async with running_switch(journal(), {"MCI": behaviour}, operator_timeout=0.1,
                                  reversals={**FAST_REVERSALS, "max_attempts": 50}) as switch:
            simulator = switch.simulators["MCI"]
            bank = await BankClient.connect(switch.port)
            first, second = top_up("000001"), top_up("000002")
            assert (await bank.request(first))["39"] == "91"
            assert (await bank.request(second))["39"] == "91"
            await simulator.stop()                    # the operator goes away before the reversals
            await asyncio.sleep(0.6)
            pending = await switch.journal.reversals(("pending",))
            assert [p.tracking_code for p in pending] == [first["37"], second["37"]]
            assert pending[0].attempts >= 2 and pending[1].attempts == 0   # the second waits for the first
            simulator.behaviour.latency_ms = 1
            await simulator.start()                   # back on the same port: the link redials
            await wait_for_state(switch, first["37"], "reversed")
            await wait_for_state(switch, second["37"], "reversed")
            await bank.close()
    run(scenario())


def test_a_reversal_that_keeps_failing_needs_manual_reconciliation_and_can_be_resolved(journal):
    async def scenario():
        behaviour = OperatorBehaviour(latency_ms=1, no_answer_rate=1.0)
        async with running_switch(journal(), {"MCI": behaviour}, operator_timeout=0.1,
                                  reversals={**FAST_REVERSALS, "max_attempts": 2}) as switch:
            await switch.simulators["MCI"].stop()
            bank = await BankClient.connect(switch.port)
            await switch.simulators["MCI"].start()
            await switch.providers["MCI"].wait_up(5)
            request = top_up("000001")
            assert (await bank.request(request))["39"] == "91"
            await switch.simulators["MCI"].stop()     # and it never answers the reversal
            view = await wait_for_state(switch, request["37"], "reversal_failed")
            failed = await switch.journal.reversals(("failed",))
            assert [f.txn_id for f in failed] == [view.txn_id] and failed[0].attempts == 2
            assert await switch.forwarder.resolve(view.txn_id, "settled with MCI by phone, ticket 42")
            await wait_for_state(switch, request["37"], "resolved")
            await bank.close()
    run(scenario())


def test_a_request_sent_by_a_process_that_died_is_recovered_and_reversed(journal):
    async def scenario():
        async with running_switch(journal(), reversals=FAST_REVERSALS) as switch:
            # What a crashed process leaves behind: the intake, routed and sent, and nothing else.
            now = utcnow()
            lost = Intake(txn_id="d" * 32, received_at=now - timedelta(seconds=2),
                          business_day=switch.core.calendar.day_of(now), mti="0200", acquirer_id=MELLI,
                          tracking_code="CRASHED00001", stan="000001", transmitted_at="1122101010",
                          terminal_id="TERM0001", merchant_id=None, card_masked=None, msisdn="989121110001",
                          amount=100_000, currency="364", channel=None, uses_key=True, routed_operator="MCI",
                          operator_stan="123456", operator_sent_at=now - timedelta(seconds=2))
            assert await switch.journal.record_intake(lost)
            switch.forwarder._last_scan = 0.0   # scan now rather than in RECOVERY_EVERY seconds
            switch.forwarder.wake()
            view = await wait_for_state(switch, "CRASHED00001", "reversed", timeout=15)
            assert view.response_code == "91"
            assert switch.simulators["MCI"].reversal_answers   # the operator was asked
    run(scenario())


def test_a_0420_for_a_top_up_still_in_flight_reverses_it_once_it_is_approved(journal):
    async def scenario():
        async with running_switch(journal(), {"MCI": OperatorBehaviour(latency_ms=400)},
                                  reversals=FAST_REVERSALS) as switch:
            bank = await BankClient.connect(switch.port)
            original = top_up("000001")
            in_flight = asyncio.create_task(bank.request(original))
            await asyncio.sleep(0.1)       # the acquirer gives up waiting and sends its advice
            advice = await bank.request(reversal_of(original, "000002", "0420"))
            assert (advice["t"], advice["39"]) == ("0430", "00")
            assert (await in_flight)["39"] == "00"
            switch.simulators["MCI"].behaviour.latency_ms = 1
            await wait_for_state(switch, original["37"], "reversed")
            simulator = switch.simulators["MCI"]
            assert set(simulator.reversed) == set(simulator.ledger) and len(simulator.ledger) == 1
            await bank.close()
    run(scenario())
