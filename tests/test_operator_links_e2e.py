"""Every operator dialect in both link directions, end to end on real sockets:
bank87 client -> switch -> operator simulator (opa87, opb93, opcjson; the switch
dials, or the operator dials the switch), journal in a real Postgres."""

from __future__ import annotations

import asyncio

import pytest

from simulators.operator import OperatorBehaviour
from switch.clock import utcnow
from switch.providers.adapters import adapter_for
from switch.wire import load_dialect
from support import MELLI, BankClient, postgres_journal, running_switch, switch_config, top_up
from switch.app.server import Switch

LINKS = [(dialect, mode) for dialect in ("opa87", "opb93", "opcjson") for mode in ("connect", "accept")]
IDS = [f"{dialect}-{mode}" for dialect, mode in LINKS]


def run(coroutine):
    return asyncio.run(coroutine)


@pytest.fixture
def journal(pg_dsn, pg_schema):
    return lambda: postgres_journal(pg_dsn, pg_schema)


@pytest.mark.parametrize("dialect, mode", LINKS, ids=IDS)
def test_top_up_is_approved_through_every_dialect_and_direction(journal, dialect, mode):
    async def scenario():
        async with running_switch(journal(), dialects={"MCI": (dialect, mode)}) as switch:
            bank = await BankClient.connect(switch.port)
            request = top_up("000001")
            answer = await bank.request(request)
            assert (answer["39"], answer["44"]) == ("00", "MCI")
            credits = list(switch.simulators["MCI"].ledger.values())
            assert [(c.msisdn, c.amount, c.tracking_code) for c in credits] == \
                [("989121110001", 100_000, request["37"])]
            assert credits[0].operator_ref in answer["48"]
            view = await switch.journal.find(MELLI, request["37"], switch.core.calendar.day_of(utcnow()))
            assert view.state == "approved" and view.operator_ref == credits[0].operator_ref
            await bank.close()
    run(scenario())


@pytest.mark.parametrize("dialect, mode", LINKS, ids=IDS)
def test_every_operator_refusal_reaches_the_acquirer_as_in_table_2_4(journal, dialect, mode):
    async def scenario():
        behaviour = OperatorBehaviour(latency_ms=1, unknown_subscribers=frozenset({"989121110002"}),
                                      barred_subscribers=frozenset({"989121110003"}),
                                      invalid_amounts=frozenset({200_000}))
        async with running_switch(journal(), {"MCI": behaviour}, dialects={"MCI": (dialect, mode)}) as switch:
            bank = await BankClient.connect(switch.port)
            assert (await bank.request(top_up("000001", msisdn="09121110002")))["39"] == "14"
            assert (await bank.request(top_up("000002", msisdn="09121110003")))["39"] == "57"
            assert (await bank.request(top_up("000003", amount=200_000)))["39"] == "13"
            switch.simulators["MCI"].behaviour.decline_rate = 1.0
            assert (await bank.request(top_up("000004")))["39"] == "05"
            switch.simulators["MCI"].behaviour.decline_rate = 0.0
            switch.simulators["MCI"].behaviour.error_rate = 1.0
            assert (await bank.request(top_up("000005")))["39"] == "96"
            assert not switch.simulators["MCI"].ledger
            await bank.close()
    run(scenario())


@pytest.mark.parametrize("dialect, mode", LINKS, ids=IDS)
def test_timeout_answers_91_and_a_late_answer_is_journaled_against_its_transaction(journal, dialect, mode):
    async def scenario():
        behaviour = OperatorBehaviour(latency_ms=600)
        async with running_switch(journal(), {"MCI": behaviour}, dialects={"MCI": (dialect, mode)},
                                  operator_timeout=0.3) as switch:
            bank = await BankClient.connect(switch.port)
            request = top_up("000001")
            assert (await bank.request(request))["39"] == "91"
            day = switch.core.calendar.day_of(utcnow())
            assert (await switch.journal.find(MELLI, request["37"], day)).state == "unknown"
            await asyncio.sleep(0.6)  # the operator's approval arrives late
            view = await switch.journal.find(MELLI, request["37"], day)
            credit = next(iter(switch.simulators["MCI"].ledger.values()))
            assert (view.state, view.response_code) == ("unknown", "91")    # a late answer decides nothing
            history = await switch.journal.history(view.txn_id)
            late = [row for row in history if row[2] == "late_answer"]
            assert [(row[1], row[3], row[5]) for row in late] == [("unknown", "91", credit.operator_ref)]
            # The late approval never reaches a newer request on the same link.
            switch.simulators["MCI"].behaviour.latency_ms = 1
            assert (await bank.request(top_up("000002")))["39"] == "00"
            await bank.close()
    run(scenario())


@pytest.mark.parametrize("dialect, mode", LINKS, ids=IDS)
def test_link_drop_with_requests_in_flight_answers_91_and_the_link_comes_back(journal, dialect, mode):
    async def scenario():
        behaviour = OperatorBehaviour(latency_ms=500)
        async with running_switch(journal(), {"MCI": behaviour}, dialects={"MCI": (dialect, mode)}) as switch:
            bank = await BankClient.connect(switch.port)
            in_flight = [asyncio.create_task(bank.request(top_up(f"{i:06d}"))) for i in range(1, 4)]
            await asyncio.sleep(0.2)
            switch.simulators["MCI"].disconnect_all()
            assert [a["39"] for a in await asyncio.gather(*in_flight)] == ["91"] * 3
            switch.simulators["MCI"].behaviour.latency_ms = 1
            assert await switch.providers["MCI"].wait_up(5.0)
            assert (await bank.request(top_up("000010")))["39"] == "00"
            await bank.close()
    run(scenario())


class SilentOperator:
    """An operator host that completes the sign-on, then never answers anything again."""

    def __init__(self, dialect: str):
        self.dialect = load_dialect(dialect)
        self.adapter = adapter_for(dialect, "MCI", "99001", "AIRSW001")
        self.connections = 0
        self.closed = 0

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        decoder = self.dialect.frame_decoder()
        try:
            while data := await reader.read(65536):
                for frame in decoder.feed(data):
                    message = self.dialect.decode(frame)
                    reply = self.adapter.handshake(message)   # answers a sign-on, nothing else
                    if reply is not None:
                        writer.write(self.dialect.pack(reply))
        finally:
            self.closed += 1
            writer.close()


@pytest.mark.parametrize("dialect", ["opa87", "opb93", "opcjson"])
def test_a_link_that_misses_its_echo_is_marked_down_closed_and_redialled(journal, dialect):
    async def scenario():
        silent = SilentOperator(dialect)
        server = await asyncio.start_server(silent.serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        config = switch_config({"MCI": port}, {"MCI": (dialect, "connect")}, echo_interval=0.2,
                               operator_timeout=0.2)
        switch = Switch(config, journal=journal())
        await switch.start()
        try:
            assert await switch.providers["MCI"].wait_up(3.0)
            await asyncio.sleep(1.5)     # echo after 0.2 s idle, unanswered after 0.2 s: down, closed, redial
            assert silent.closed >= 1 and silent.connections >= 2
        finally:
            await switch.stop()
            server.close()
    run(scenario())


def test_operator_noise_is_ignored_and_the_link_survives(journal):
    """Garbage from an opcjson operator: not JSON, not an object, no type, unknown type, unknown ref,
    an over-long line. Logged, ignored; the next real answer still reaches the right request."""
    async def scenario():
        async with running_switch(journal(), {"MCI": OperatorBehaviour(latency_ms=200)},
                                  dialects={"MCI": ("opcjson", "connect")}) as switch:
            bank = await BankClient.connect(switch.port)
            pending = asyncio.create_task(bank.request(top_up("000001")))
            await asyncio.sleep(0.05)
            connection = next(iter(switch.simulators["MCI"].connections))
            connection.transport.write(b"not json\n[1,2]\n{\"no\":\"type\"}\n{\"type\":\"surprise\"}\n"
                                       b"{\"type\":\"recharge_result\",\"ref\":\"nobody\",\"status\":\"OK\"}\n"
                                       + b"{\"type\":\"ping\",\"pad\":\"" + b"x" * 5000 + b"\"}\n")
            assert (await pending)["39"] == "00"
            assert switch.providers["MCI"].is_up
            await bank.close()
    run(scenario())


def test_iso_operator_noise_is_ignored_and_the_link_survives(journal):
    async def scenario():
        async with running_switch(journal(), {"MCI": OperatorBehaviour(latency_ms=200)},
                                  dialects={"MCI": ("opb93", "connect")}) as switch:
            bank = await BankClient.connect(switch.port)
            pending = asyncio.create_task(bank.request(top_up("000001")))
            await asyncio.sleep(0.05)
            connection = next(iter(switch.simulators["MCI"].connections))
            dialect = load_dialect("opb93")
            connection.transport.write(b"\x00\x04JUNK"                                      # does not decode
                                       + dialect.pack({"t": "1999", "11": "000777"})        # unknown MTI
                                       + dialect.pack({"t": "1210", "11": "999999", "39": "000"}))  # unknown STAN
            assert (await pending)["39"] == "00"
            assert switch.providers["MCI"].is_up
            await bank.close()
    run(scenario())


def test_opcjson_login_with_a_wrong_secret_is_closed_and_never_carries_traffic(journal):
    async def scenario():
        async with running_switch(journal(), dialects={"MCI": ("opcjson", "accept")}) as switch:
            port = switch.providers["MCI"].accept_port()
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b'{"type":"login","operator":"MCI","secret":"guess"}\n')
            assert await asyncio.wait_for(reader.read(), 3) == b""   # closed, nothing said
            assert len(switch.providers["MCI"].links) == 1           # only the simulator's link
    run(scenario())


def test_accept_link_from_an_address_not_allowed_is_closed(journal):
    async def scenario():
        async with running_switch(journal(), dialects={"MCI": ("opa87", "accept")}) as switch:
            port = switch.providers["MCI"].accept_port()
            reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=("127.0.0.5", 0))
            assert await asyncio.wait_for(reader.read(), 3) == b""
    run(scenario())
