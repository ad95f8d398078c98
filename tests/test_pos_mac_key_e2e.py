"""A pos87 request refused 63 for its MAC uses no dedupe key (issue 9, INTERFACES.md 1.5: "nor does
a pos87 request refused with 63 (its MAC did not verify, so it proves nothing)"): its (32, 37) is
still free for the genuine request, and a 0201 repeat or a 0400 reversal naming that (32, 37) finds
no original."""

from __future__ import annotations

import asyncio

import pytest

from simulators.pos import PosSimulator, Terminal
from support import MELLI, BankClient, postgres_journal, running_switch, top_up

KEY = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
MSISDN = "09121110001"
AMOUNT = 100_000


def run(coroutine):
    return asyncio.run(coroutine)


@pytest.fixture
def journal(pg_dsn, pg_schema):
    return lambda: postgres_journal(pg_dsn, pg_schema)


def pos_overrides() -> dict:
    return {
        "pos_listener": {"host": "127.0.0.1", "port": 0, "idle_timeout": 5.0},
        "terminals": [{"terminal_id": "POS00001", "merchant_id": "SHOP00000000001", "acquirer": MELLI,
                       "key": KEY.hex()}],
    }


def shop() -> Terminal:
    return Terminal("POS00001", "SHOP00000000001", MELLI, KEY)


async def refused_for_its_mac(pos: PosSimulator) -> dict:
    """A POS top-up signed with a wrong key: 63. Returns the request as sent (MAC aside)."""
    request = pos.top_up_request(shop(), MSISDN, AMOUNT)
    answer = await pos.send(shop(), request, wrong_key=True)
    assert (answer["t"], answer["39"]) == ("0210", "63")
    return request


def test_after_a_bad_mac_63_the_same_32_37_with_a_good_mac_is_approved_not_94(journal):
    async def scenario():
        async with running_switch(journal(), **pos_overrides()) as switch:
            pos = PosSimulator("127.0.0.1", switch.pos_port, [shop()])
            request = await refused_for_its_mac(pos)
            answer = await pos.send(shop(), dict(request))          # the terminal's genuine request
            assert (answer["t"], answer["37"], answer["39"]) == ("0210", request["37"], "00")
            assert pos.report.bad_answer_macs == 0
            assert len(switch.simulators["MCI"].ledger) == 1
            view = await switch.journal.find_latest(MELLI, request["37"])
            assert (view.state, view.response_code) == ("approved", "00")
            await pos.close()
    run(scenario())


def test_a_bank87_0400_for_the_32_37_of_only_a_bad_mac_attempt_finds_no_original(journal):
    async def scenario():
        async with running_switch(journal(), **pos_overrides()) as switch:
            pos = PosSimulator("127.0.0.1", switch.pos_port, [shop()])
            request = await refused_for_its_mac(pos)
            bank = await BankClient.connect(switch.port)
            field_90 = "0200" + request["11"] + request["7"] + MELLI.zfill(11) + "0" * 11
            reversal = top_up("000001", rrn=request["37"], mti="0400", msisdn=MSISDN, amount=AMOUNT, **{"90": field_90})
            answer = await bank.request(reversal)
            assert (answer["t"], answer["39"]) == ("0410", "25")
            assert await switch.journal.find_latest(MELLI, request["37"]) is None
            assert not switch.simulators["MCI"].reversal_answers and not switch.simulators["MCI"].answered
            await bank.close()
            await pos.close()
    run(scenario())


def test_a_bank87_0201_for_the_32_37_of_only_a_bad_mac_attempt_finds_no_original_and_is_a_top_up(journal):
    async def scenario():
        async with running_switch(journal(), **pos_overrides()) as switch:
            pos = PosSimulator("127.0.0.1", switch.pos_port, [shop()])
            request = await refused_for_its_mac(pos)
            bank = await BankClient.connect(switch.port)
            repeat = top_up("000001", rrn=request["37"], mti="0201", msisdn=MSISDN, amount=AMOUNT)
            answer = await bank.request(repeat)
            assert (answer["t"], answer["39"]) == ("0210", "00")    # processed as a 0200, not the 63 replayed
            assert len(switch.simulators["MCI"].ledger) == 1
            view = await switch.journal.find_latest(MELLI, request["37"])
            assert (view.mti, view.state) == ("0201", "approved")
            await bank.close()
            await pos.close()
    run(scenario())
