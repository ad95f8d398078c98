"""POS terminals, acquirer rules and prepaid float accounts, end to end: pos87 with TPDU
and MAC on real sockets, bank87 for the rules, the float ledger in a real Postgres."""

from __future__ import annotations

import asyncio

import pytest

from simulators.pos import PosSimulator, Terminal
from switch.accounts import FloatLedger
from switch.wire import load_dialect, tpdu
from support import MELLI, NOVIN, BankClient, postgres_journal, running_switch, top_up

KEY = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
OTHER_KEY = bytes.fromhex("11111111111111112222222222222222")
AGENT = "AGENT001"


def run(coroutine):
    return asyncio.run(coroutine)


def pos_overrides(**acquirer_rules) -> dict:
    return {
        "acquirers": [
            {"institution_id": MELLI, "name": "Bank Melli Iran", "allowed_addresses": ["127.0.0.1/32"]},
            {"institution_id": NOVIN, "name": "Eghtesad Novin PSP", "allowed_addresses": ["127.0.0.2/32"],
             **acquirer_rules},
        ],
        "pos_listener": {"host": "127.0.0.1", "port": 0, "idle_timeout": 5.0},
        "terminals": [
            {"terminal_id": "POS00001", "merchant_id": "SHOP00000000001", "acquirer": MELLI, "key": KEY.hex()},
            *({"terminal_id": f"AGT{i:05d}", "merchant_id": "AGENT0000000001", "acquirer": MELLI,
               "key": KEY.hex(), "account": AGENT} for i in range(1, 21)),
        ],
    }


@pytest.fixture
def journal(pg_dsn, pg_schema):
    return lambda: postgres_journal(pg_dsn, pg_schema)


def shop() -> Terminal:
    return Terminal("POS00001", "SHOP00000000001", MELLI, KEY)


def agents(key: bytes = KEY) -> list[Terminal]:
    return [Terminal(f"AGT{i:05d}", "AGENT0000000001", MELLI, key) for i in range(1, 21)]


async def funded_ledger(dsn: str, schema: str, amount: int) -> FloatLedger:
    ledger = FloatLedger(dsn, schema=schema)
    await ledger.start()
    await ledger.open_account(AGENT)
    if amount:
        await ledger.deposit(AGENT, amount, actor="test", note="opening float")
    return ledger


def test_pos_top_up_with_a_mac_is_approved_and_answered_with_a_mac_and_swapped_tpdu(journal):
    async def scenario():
        async with running_switch(journal(), **pos_overrides()) as switch:
            pos = PosSimulator("127.0.0.1", switch.pos_port, [shop()])
            answer = await pos.top_up(shop(), msisdn="09121110001", amount=100_000)
            assert (answer["t"], answer["39"], answer["44"]) == ("0210", "00", "MCI")
            assert pos.report.bad_answer_macs == 0 and pos.report.mismatched == 0
            assert len(switch.simulators["MCI"].ledger) == 1
            await pos.close()
    run(scenario())


def test_wrong_or_missing_mac_gets_63_and_never_reaches_an_operator(journal):
    async def scenario():
        async with running_switch(journal(), **pos_overrides()) as switch:
            pos = PosSimulator("127.0.0.1", switch.pos_port, [shop()])
            answer = await pos.top_up(shop(), msisdn="09121110001", amount=100_000, wrong_key=True)
            assert answer["39"] == "63" and "64" not in answer and "128" not in answer
            # Without any MAC field at all.
            dialect = load_dialect("pos87")
            reader, writer = await asyncio.open_connection("127.0.0.1", switch.pos_port)
            request = pos.top_up_request(shop(), "09121110001", 100_000)
            writer.write(tpdu.pack(tpdu.Tpdu(1, 2), dialect.encode(request)))
            decoder = tpdu.frame_decoder()
            frames = []
            while not frames:
                frames = decoder.feed(await asyncio.wait_for(reader.read(4096), 5))
            header, message = tpdu.split_tpdu(frames[0])
            assert header == tpdu.Tpdu(2, 1) and dialect.decode(message)["39"] == "63"
            writer.close()
            assert not switch.simulators["MCI"].ledger and not switch.simulators["MCI"].answered
            assert await switch.journal.summary() == {"63": 2}
            await pos.close()
    run(scenario())


def test_unregistered_terminal_gets_63_and_a_short_tpdu_is_dropped(journal):
    async def scenario():
        async with running_switch(journal(), **pos_overrides()) as switch:
            stranger = Terminal("NOBODY01", "SHOP00000000001", MELLI, KEY)
            pos = PosSimulator("127.0.0.1", switch.pos_port, [stranger, shop()])
            assert (await pos.top_up(stranger, msisdn="09121110001", amount=100_000))["39"] == "63"
            reader, writer = await asyncio.open_connection("127.0.0.1", switch.pos_port)
            writer.write(b"\x00\x03\x60\x00\x01")        # a TPDU cut short: nothing to answer
            await asyncio.sleep(0.2)
            assert not reader.at_eof()
            writer.close()
            assert (await pos.top_up(shop(), msisdn="09121110001", amount=100_000))["39"] == "00"
            await pos.close()
    run(scenario())


def test_inquiry_0100_says_which_operator_serves_a_number_and_what_it_takes(journal):
    async def scenario():
        async with running_switch(journal(), **pos_overrides()) as switch:
            pos = PosSimulator("127.0.0.1", switch.pos_port, [shop()])
            answer = await pos.inquiry(shop(), msisdn="09361110001")
            assert (answer["t"], answer["39"], answer["44"]) == ("0110", "00", "IRANCELL")
            assert answer["48"].startswith("OP008IRANCELLAM") and "10000-2000000/10000" in answer["48"]
            assert (await pos.inquiry(shop(), msisdn="09341110001"))["39"] == "92"
            await pos.close()
    run(scenario())


def test_acquirer_rules_57_61_and_65(journal):
    async def scenario():
        rules = {"allowed_operators": ["MCI", "IRANCELL"], "min_amount": 20_000, "max_amount": 500_000,
                 "daily_limit": 600_000, "frequency_limit": {"count": 2, "period": 60.0}}
        async with running_switch(journal(), **pos_overrides(**rules)) as switch:
            bank = await BankClient.connect(switch.port, "127.0.0.2")
            ask = lambda stan, **kw: bank.request(top_up(stan, acquirer=NOVIN, **kw))  # noqa: E731
            assert (await ask("000001", msisdn="09211110001"))["39"] == "57"       # RighTel not allowed
            assert (await ask("000002", amount=10_000))["39"] == "61"              # under the minimum
            assert (await ask("000003", amount=1_000_000))["39"] == "61"           # over the maximum
            assert (await ask("000004", msisdn="09121110005"))["39"] == "00"
            assert (await ask("000005", msisdn="09121110005"))["39"] == "00"
            assert (await ask("000006", msisdn="09121110005"))["39"] == "65"       # third in the period
            assert (await ask("000007", msisdn="09121110006", amount=500_000))["39"] == "61"  # over the day
            assert (await ask("000008", msisdn="09121110006", amount=500_000 - 300_000))["39"] == "00"
            assert sum(1 for _ in switch.simulators["MCI"].ledger) == 3
            await bank.close()
    run(scenario())


def test_prepaid_float_holds_captures_refuses_51_and_returns_on_reversal(journal, pg_dsn, pg_schema):
    async def scenario():
        async with running_switch(journal(), reversals={"backoff_start": 0.1, "poll_interval": 0.1},
                                  **pos_overrides()) as switch:
            ledger = await funded_ledger(pg_dsn, pg_schema, 250_000)
            agent = agents()[0]
            pos = PosSimulator("127.0.0.1", switch.pos_port, [agent])
            first = await pos.top_up(agent, msisdn="09121110001", amount=100_000)
            second = await pos.top_up(agent, msisdn="09121110002", amount=100_000)
            third = await pos.top_up(agent, msisdn="09121110003", amount=100_000)
            assert [first["39"], second["39"], third["39"]] == ["00", "00", "51"]
            balance = await pos.balance_inquiry(agent)
            assert balance["39"] == "00" and balance["54"] == "0001364C000000050000" + "0002364C000000050000"
            # A decline gives the hold back.
            switch.simulators["MCI"].behaviour.decline_rate = 1.0
            assert (await pos.top_up(agent, msisdn="09121110004", amount=50_000))["39"] == "05"
            assert (await ledger.balance(AGENT)).available == 50_000
            switch.simulators["MCI"].behaviour.decline_rate = 0.0
            # A reversal returns the amount once the operator has reversed it.
            request = {**pos.top_up_request(agent, "09121110001", 100_000)}
            original_stan, original_7, original_37 = first["11"], first["7"], first["37"]
            reversal = {**request, "t": "0400", "37": original_37,
                        "90": "0200" + original_stan + original_7 + MELLI.zfill(11) + "0" * 11}
            assert (await pos.send(agent, reversal))["39"] == "00"
            for _ in range(100):
                if (await ledger.balance(AGENT)).balance == 150_000:
                    break
                await asyncio.sleep(0.05)
            assert (await ledger.balance(AGENT)).balance == 150_000
            assert await ledger.verify(AGENT)
            await ledger.close()
            await pos.close()
    run(scenario())


def test_many_terminals_of_one_agent_never_overdraw_a_small_float(journal, pg_dsn, pg_schema):
    async def scenario():
        async with running_switch(journal(), **pos_overrides()) as switch:
            ledger = await funded_ledger(pg_dsn, pg_schema, 1_000_000)
            pos = PosSimulator("127.0.0.1", switch.pos_port, agents(), count=120, concurrency=20, seed=7,
                               msisdn_forms=("national_trunk",))
            report = await pos.run()
            approved_amount = sum(credit.amount for sim in switch.simulators.values()
                                  for credit in sim.ledger.values())
            balance = await ledger.balance(AGENT)
            assert report.answers["51"] > 0 and report.answers["00"] > 0
            assert balance.balance >= 0 and balance.held == 0
            assert balance.balance == 1_000_000 - approved_amount
            assert await ledger.verify(AGENT)
            await ledger.close()
    run(scenario())
