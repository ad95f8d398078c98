"""End to end on real sockets: bank87 client -> switch -> opa87 operator simulators,
with the journal in a real Postgres (a fresh schema per test)."""

from __future__ import annotations

import asyncio

import pytest

from simulators.operator import OperatorBehaviour
from switch.clock import utcnow
from support import MELLI, NOVIN, BankClient, postgres_journal, running_switch, top_up, tracking_code


def run(coroutine):
    return asyncio.run(coroutine)


@pytest.fixture
def journal(pg_dsn, pg_schema):
    return lambda: postgres_journal(pg_dsn, pg_schema)


def test_approved_top_up_is_answered_0210_00_and_journaled(journal):
    async def scenario():
        async with running_switch(journal()) as switch:
            bank = await BankClient.connect(switch.port)
            request = top_up("000001")
            answer = await bank.request(request)
            assert answer["t"] == "0210" and answer["39"] == "00"
            for field in ("3", "4", "7", "11", "12", "13", "32", "37", "41", "42", "49", "103"):
                assert answer[field] == request[field], field
            assert len(answer["38"]) == 6 and answer["44"] == "MCI"
            assert answer["48"].startswith("OR") and "MCI" in answer["48"]
            # The operator saw the tracking code unchanged and the number in international form.
            credits = list(switch.simulators["MCI"].ledger.values())
            assert [(c.tracking_code, c.msisdn, c.amount) for c in credits] == \
                [(request["37"], "989121110001", 100_000)]
            view = await switch.journal.find(MELLI, request["37"], switch.core.calendar.day_of(utcnow()))
            assert view.state == "approved" and view.response_code == "00"
            assert view.operator_id == "MCI" and view.card_masked == "603799******7890"
            assert view.msisdn == "989121110001" and view.channel == "WEB"
            await bank.close()
    run(scenario())


@pytest.mark.parametrize("msisdn, amount, currency, expected", [
    ("09x21234567", 100_000, "364", "14"),            # malformed number
    ("09341234567", 100_000, "364", "92"),            # 0934 (TeleKish): no operator of ours
    ("09121110001", 12_345, "364", "13"),             # not an amount MCI takes
    ("09361110001", 100_000, "840", "13"),            # wrong currency
])
def test_switch_refusals_never_reach_an_operator(journal, msisdn, amount, currency, expected):
    async def scenario():
        async with running_switch(journal()) as switch:
            bank = await BankClient.connect(switch.port)
            answer = await bank.request(top_up("000001", msisdn=msisdn, amount=amount, currency=currency))
            assert answer["39"] == expected
            assert all(not sim.ledger and not sim.answered for sim in switch.simulators.values())
            assert await switch.journal.summary() == {expected: 1}
            await bank.close()
    run(scenario())


def test_operator_decline_and_unknown_subscriber_are_mapped(journal):
    async def scenario():
        behaviours = {"MCI": OperatorBehaviour(latency_ms=1, decline_rate=1.0),
                      "IRANCELL": OperatorBehaviour(latency_ms=1, unknown_subscribers=frozenset({"989361110001"}))}
        async with running_switch(journal(), behaviours) as switch:
            bank = await BankClient.connect(switch.port)
            declined = await bank.request(top_up("000001", msisdn="09121110001"))
            unknown = await bank.request(top_up("000002", msisdn="09361110001"))
            assert (declined["39"], unknown["39"]) == ("05", "14")
            assert "38" not in declined and "44" not in declined
            await bank.close()
    run(scenario())


def test_duplicate_tracking_code_gets_94_and_never_reaches_the_operator(journal):
    async def scenario():
        async with running_switch(journal()) as switch:
            bank = await BankClient.connect(switch.port)
            rrn = tracking_code()
            first = await bank.request(top_up("000001", rrn=rrn))
            second = await bank.request(top_up("000002", rrn=rrn))
            assert (first["39"], second["39"]) == ("00", "94")
            assert len(switch.simulators["MCI"].ledger) == 1
            # Another acquirer may use the same tracking code.
            other = await BankClient.connect(switch.port, "127.0.0.2")
            third = await other.request(top_up("000003", rrn=rrn, acquirer=NOVIN))
            assert third["39"] == "00"
            await bank.close()
            await other.close()
    run(scenario())


def test_duplicate_is_caught_across_a_restart_by_the_journal_key(journal):
    rrn = tracking_code()

    async def first_run():
        async with running_switch(journal()) as switch:
            bank = await BankClient.connect(switch.port)
            assert (await bank.request(top_up("000001", rrn=rrn)))["39"] == "00"
            await bank.close()

    async def second_run():
        async with running_switch(journal()) as switch:   # fresh process state, same journal
            bank = await BankClient.connect(switch.port)
            assert (await bank.request(top_up("000001", rrn=rrn)))["39"] == "94"
            assert not switch.simulators["MCI"].ledger
            await bank.close()
    run(first_run())
    run(second_run())


def test_repeat_0201_replays_the_original_answer(journal):
    async def scenario():
        async with running_switch(journal()) as switch:
            bank = await BankClient.connect(switch.port)
            original = top_up("000001")
            first = await bank.request(original)
            repeat = await bank.request({**original, "t": "0201", "11": "000002"})
            assert repeat["t"] == "0210"
            assert (repeat["39"], repeat["38"], repeat["48"]) == (first["39"], first["38"], first["48"])
            assert len(switch.simulators["MCI"].ledger) == 1
            # A repeat whose amount differs from its original's is a duplicate.
            changed = await bank.request({**original, "t": "0201", "11": "000003", "4": "000000200000"})
            assert changed["39"] == "94"
            # A repeat with no original is processed as a 0200.
            fresh = await bank.request(top_up("000004", mti="0201"))
            assert fresh["t"] == "0210" and fresh["39"] == "00"
            await bank.close()
    run(scenario())


def test_repeat_while_the_original_is_in_flight_gets_its_answer_when_it_comes(journal):
    async def scenario():
        behaviours = {"MCI": OperatorBehaviour(latency_ms=300)}
        async with running_switch(journal(), behaviours) as switch:
            bank = await BankClient.connect(switch.port)
            original = top_up("000001")
            first = asyncio.create_task(bank.request(original))
            await asyncio.sleep(0.1)
            repeat = await bank.request({**original, "t": "0201", "11": "000002"})
            assert repeat["39"] == "00" and repeat["38"] == (await first)["38"]
            assert len(switch.simulators["MCI"].ledger) == 1
            await bank.close()
    run(scenario())


def test_field_32_of_another_acquirer_gets_57(journal):
    async def scenario():
        async with running_switch(journal()) as switch:
            bank = await BankClient.connect(switch.port)
            answer = await bank.request(top_up("000001", acquirer=NOVIN))
            assert answer["39"] == "57"
            await bank.close()
    run(scenario())


def test_connection_from_an_address_no_acquirer_allows_is_closed(journal):
    async def scenario():
        async with running_switch(journal()) as switch:
            stranger = await BankClient.connect(switch.port, "127.0.0.3")
            assert await stranger.closed_by_peer()
    run(scenario())


def test_operator_down_gets_91_at_once(journal):
    async def scenario():
        async with running_switch(journal()) as switch:
            await switch.simulators["MCI"].stop()
            await asyncio.sleep(0.2)
            bank = await BankClient.connect(switch.port)
            loop = asyncio.get_running_loop()
            started = loop.time()
            answer = await bank.request(top_up("000001"))
            assert answer["39"] == "91" and loop.time() - started < 0.5
            # The others still serve.
            assert (await bank.request(top_up("000002", msisdn="09361110001")))["39"] == "00"
            await bank.close()
    run(scenario())


def test_operator_timeout_answers_91_and_journals_unknown(journal):
    async def scenario():
        behaviours = {"MCI": OperatorBehaviour(latency_ms=1, no_answer_rate=1.0)}
        async with running_switch(journal(), behaviours, operator_timeout=0.3) as switch:
            bank = await BankClient.connect(switch.port)
            request = top_up("000001")
            answer = await bank.request(request)
            assert answer["39"] == "91"
            summary = await switch.journal.summary()
            assert summary == {"91": 1}
            view = await switch.journal.find(MELLI, request["37"], switch.core.calendar.day_of(utcnow()))
            assert view.state == "unknown"
            await bank.close()
    run(scenario())


def test_link_lost_with_requests_in_flight_answers_91_and_reconnects(journal):
    async def scenario():
        behaviours = {"MCI": OperatorBehaviour(latency_ms=500)}
        async with running_switch(journal(), behaviours) as switch:
            bank = await BankClient.connect(switch.port)
            in_flight = [asyncio.create_task(bank.request(top_up(f"{i:06d}"))) for i in range(1, 6)]
            await asyncio.sleep(0.2)
            switch.simulators["MCI"].disconnect_all()
            answers = await asyncio.gather(*in_flight)
            assert [a["39"] for a in answers] == ["91"] * 5
            assert await switch.providers["MCI"].wait_up(5.0)
            switch.simulators["MCI"].behaviour.latency_ms = 1
            assert (await bank.request(top_up("000010")))["39"] == "00"
            await bank.close()
    run(scenario())


def test_two_connections_interleave_many_requests_in_flight(journal):
    async def scenario():
        behaviours = {op: OperatorBehaviour(latency_ms=20, jitter_ms=19, seed=i)
                      for i, op in enumerate(("MCI", "IRANCELL", "RIGHTEL"))}
        async with running_switch(journal(), behaviours) as switch:
            melli = await BankClient.connect(switch.port, "127.0.0.1")
            novin = await BankClient.connect(switch.port, "127.0.0.2")
            numbers = ["09121110001", "09361110001", "09211110001"]
            requests = []
            for i in range(150):
                requests.append(melli.request(top_up(f"{i:06d}", msisdn=numbers[i % 3])))
                requests.append(novin.request(top_up(f"{i:06d}", acquirer=NOVIN, msisdn=numbers[(i + 1) % 3])))
            answers = await asyncio.gather(*requests)
            assert [a["39"] for a in answers] == ["00"] * 300
            assert await switch.journal.count_transactions() == 300
            await melli.close()
            await novin.close()
    run(scenario())


def test_network_management_0800_is_answered(journal):
    async def scenario():
        async with running_switch(journal()) as switch:
            bank = await BankClient.connect(switch.port)
            for code in ("001", "301", "002"):
                answer = await bank.request({"t": "0800", "7": "1122101010", "11": "000001", "70": code})
                assert (answer["t"], answer["39"], answer["70"]) == ("0810", "00", code)
            await bank.close()
    run(scenario())


def test_ported_number_goes_to_the_operator_that_now_serves_it(journal):
    async def scenario():
        async with running_switch(journal()) as switch:
            bank = await BankClient.connect(switch.port)
            answer = await bank.request(top_up("000001", msisdn="09121234567"))  # 0912 ported to Irancell
            assert (answer["39"], answer["44"]) == ("00", "IRANCELL")
            assert not switch.simulators["MCI"].ledger
            await bank.close()
    run(scenario())
