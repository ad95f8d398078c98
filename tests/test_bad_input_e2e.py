"""Bad input from an acquirer (INTERFACES.md 1.5 "Bad requests"): each event costs
only what it must, and other connections and in-flight transactions are untouched."""

from __future__ import annotations

import asyncio

import pytest

from support import BANK87, BankClient, postgres_journal, running_switch, top_up


def run(coroutine):
    return asyncio.run(coroutine)


@pytest.fixture
def journal(pg_dsn, pg_schema):
    return lambda: postgres_journal(pg_dsn, pg_schema)


def test_frame_over_the_cap_closes_that_connection_only(journal):
    async def scenario():
        async with running_switch(journal()) as switch:
            good = await BankClient.connect(switch.port)
            bad = await BankClient.connect(switch.port)
            bad.send_raw(b"\xff\xff" + b"x" * 100)
            assert await bad.closed_by_peer()
            assert (await good.request(top_up("000001")))["39"] == "00"
            await good.close()
    run(scenario())


def test_length_header_that_lies_closes_the_connection_after_the_read_timeout(journal):
    async def scenario():
        async with running_switch(journal(), read_timeout=0.3) as switch:
            bad = await BankClient.connect(switch.port)
            bad.send_raw(b"\x01\x00" + b"0200")    # promises 256 bytes, sends 4
            assert await bad.closed_by_peer(timeout=3.0)
    run(scenario())


def test_message_that_does_not_decode_gets_30_when_mti_11_and_37_can_be_read(journal):
    async def scenario():
        async with running_switch(journal()) as switch:
            bank = await BankClient.connect(switch.port)
            request = top_up("000001")
            payload = BANK87.encode(request)[:-5]         # field 103 cut short
            future = asyncio.get_running_loop().create_future()
            bank.waiting[("000001", request["37"])] = future
            bank.send_raw(len(payload).to_bytes(2, "big") + payload)
            answer = await asyncio.wait_for(future, 5)
            assert (answer["t"], answer["39"]) == ("0210", "30")
            assert not switch.simulators["MCI"].ledger
            # The connection stays.
            assert (await bank.request(top_up("000002")))["39"] == "00"
            await bank.close()
    run(scenario())


def test_garbage_that_cannot_be_answered_is_dropped_and_the_connection_stays(journal):
    async def scenario():
        async with running_switch(journal()) as switch:
            bank = await BankClient.connect(switch.port)
            bank.send_raw(b"\x00\x05" + b"\x01\x02\x03\x04\x05")
            assert (await bank.request(top_up("000001")))["39"] == "00"
            await bank.close()
    run(scenario())


def test_unknown_request_mti_gets_12_and_a_response_mti_is_dropped(journal):
    async def scenario():
        async with running_switch(journal()) as switch:
            bank = await BankClient.connect(switch.port)
            answer = await bank.request({**top_up("000001"), "t": "0300"})
            assert (answer["t"], answer["39"]) == ("0310", "12")
            bank.send_raw(BANK87.pack({**top_up("000002"), "t": "0210", "39": "00"}))
            bank.send_raw(BANK87.pack({"t": "0999", "11": "000003"}))
            assert (await bank.request(top_up("000004")))["39"] == "00"
            assert bank.unmatched.empty()
            await bank.close()
    run(scenario())


@pytest.mark.parametrize("missing", ["3", "4", "7", "11", "32", "37", "41", "49", "103"])
def test_missing_mandatory_field_gets_30_and_does_not_use_the_key(journal, missing):
    async def scenario():
        async with running_switch(journal()) as switch:
            bank = await BankClient.connect(switch.port)
            request = top_up("000001")
            broken = {key: value for key, value in request.items() if key != missing}
            if missing in ("11", "37"):
                # The answer is matched by 11 and 37; read it from the unmatched queue.
                bank.send_raw(BANK87.pack(broken))
                answer = await asyncio.wait_for(bank.unmatched.get(), 5)
            else:
                answer = await bank.request(broken)
            assert answer["39"] == "30"
            # A request refused with 30 does not use its (32, 37): the corrected one goes through.
            assert (await bank.request({**request, "11": "000002"}))["39"] == "00"
            await bank.close()
    run(scenario())


def test_non_numeric_amount_gets_30(journal):
    async def scenario():
        async with running_switch(journal()) as switch:
            bank = await BankClient.connect(switch.port)
            assert (await bank.request(top_up("000001", **{"4": "00000010000X"})))["39"] == "30"
            await bank.close()
    run(scenario())


def test_unsupported_processing_code_gets_12(journal):
    async def scenario():
        async with running_switch(journal()) as switch:
            bank = await BankClient.connect(switch.port)
            assert (await bank.request(top_up("000001", **{"3": "400000"})))["39"] == "12"
            await bank.close()
    run(scenario())
