"""The POS simulator against a tiny fake switch on 127.0.0.1: TPDU, pos87 and the MAC working together."""

from __future__ import annotations

import asyncio
import re
from collections import Counter

import pytest

from simulators.pos import MSISDN_FORMS, PosSimulator, Terminal, make_terminals, msisdn_in_form
from switch.errors import RemoteProtocolError
from switch.wire import load_dialect
from switch.wire.mac import mac_required, sign, verify
from switch.wire.tpdu import pack, frame_decoder, split_tpdu

POS = load_dialect("pos87")
KEY = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
ECHO = ["3", "4", "7", "11", "12", "13", "32", "37", "41", "42", "49", "103"]


class FakeSwitch:
    """Decodes pos87 behind a TPDU, checks the MAC, answers 00 signed, or 63 unsigned when the MAC is wrong.

    `answer_key` signs answers with another key (to see the simulator catch it); `silent` never answers.
    """

    def __init__(self, keys: dict[str, bytes], *, answer_key: bytes | None = None, silent: bool = False):
        self.keys = keys
        self.answer_key = answer_key
        self.silent = silent
        self.connections = 0
        self.requests: list[dict] = []
        self.in_flight: Counter = Counter()     # by terminal
        self.most_in_flight = 0
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> int:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def __aexit__(self, *exc) -> None:
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        decoder = frame_decoder()
        try:
            while data := await reader.read(4096):
                for frame in decoder.feed(data):
                    tpdu, message = split_tpdu(frame)
                    request = POS.decode(message)
                    self.requests.append(request)
                    terminal = request.get("41", "")
                    self.in_flight[terminal] += 1
                    self.most_in_flight = max(self.most_in_flight, self.in_flight[terminal])
                    await asyncio.sleep(0.001)
                    self.in_flight[terminal] -= 1
                    if self.silent:
                        continue
                    writer.write(pack(tpdu.answer(), self.answer(request, message)))
        except (ConnectionError, RemoteProtocolError):
            pass
        finally:
            writer.close()

    def answer(self, request: dict, message: bytes) -> bytes:
        if request["t"] == "0800":
            return POS.encode({"t": "0810", "7": request["7"], "11": request["11"], "70": request["70"], "39": "00"})
        answer = {key: request[key] for key in ECHO if key in request}
        answer["t"] = request["t"][:2] + "10"
        key = self.keys[request["41"]]
        if mac_required(request) and not verify(POS, message, request, key):
            return POS.encode({**answer, "39": "63"})
        answer["39"] = "00"
        if request.get("3") == "310000":
            answer["54"] = "1001364C000000500000"
        return sign(POS, answer, self.answer_key or key)


def terminals(count: int = 8) -> list[Terminal]:
    return make_terminals(count, "603799", KEY)


def keys_of(terminal_list: list[Terminal]) -> dict[str, bytes]:
    return {terminal.terminal_id: terminal.key for terminal in terminal_list}


def test_run_sends_signed_top_ups_one_at_a_time_per_terminal_and_counts_wrong_keys():
    fleet = terminals(8)

    async def scenario():
        fake = FakeSwitch(keys_of(fleet))
        async with fake as port:
            sim = PosSimulator("127.0.0.1", port, fleet, count=60, concurrency=5, wrong_key_share=0.25, seed=7)
            return fake, await sim.run()

    fake, report = asyncio.run(scenario())
    assert report.sent == report.answered == 60
    assert report.lost == report.mismatched == report.bad_answer_macs == 0
    assert 0 < report.wrong_key_sent < 60
    assert report.answers == Counter({"00": 60 - report.wrong_key_sent, "63": report.wrong_key_sent})
    assert report.wrong_key_answers == Counter({"63": report.wrong_key_sent})
    assert fake.most_in_flight == 1                      # one request at a time per terminal
    assert fake.connections <= len(fleet)                # each terminal keeps its connection
    assert len({request["37"] for request in fake.requests}) == 60
    for request in fake.requests:
        assert request["t"] == "0200" and request["3"] == "000000" and request["49"] == "364"
        assert request["48"] == "CH003POS" and request["32"] == "603799" and len(request["4"]) == 12
        assert "128" in request and "64" not in request


def test_answers_signed_with_the_wrong_key_are_counted_as_bad_macs():
    fleet = terminals(2)

    async def scenario():
        fake = FakeSwitch(keys_of(fleet), answer_key=bytes.fromhex("00112233445566778899AABBCCDDEEFF"))
        async with fake as port:
            return await PosSimulator("127.0.0.1", port, fleet, count=6, concurrency=2, seed=1).run()

    report = asyncio.run(scenario())
    assert report.answers == Counter({"00": 6}) and report.bad_answer_macs == 6


def test_inquiry_balance_and_sign_on_are_sent_and_checked():
    fleet = terminals(1)
    terminal = fleet[0]

    async def scenario():
        fake = FakeSwitch(keys_of(fleet))
        async with fake as port:
            sim = PosSimulator("127.0.0.1", port, fleet, seed=3)
            answers = [await sim.sign_on(terminal), await sim.inquiry(terminal, "09121234567"),
                       await sim.balance_inquiry(terminal), await sim.top_up(terminal, "9121234567", 50_000)]
            await sim.close()
            return fake, sim.report, answers

    fake, report, answers = asyncio.run(scenario())
    sign_on, inquiry, balance, top_up = answers
    assert sign_on["t"] == "0810" and "64" not in sign_on and "128" not in sign_on
    assert inquiry["t"] == "0110" and inquiry["3"] == "300000" and inquiry["39"] == "00"
    assert balance["t"] == "0210" and balance["54"] == "1001364C000000500000" and "64" in balance
    assert top_up["4"] == "000000050000" and top_up["103"] == "9121234567"
    assert report.bad_answer_macs == report.lost == report.mismatched == 0
    requests = {request["t"] + request.get("3", ""): request for request in fake.requests}
    assert "64" not in requests["0800"] and "128" not in requests["0800"]
    assert "128" in requests["0100300000"]             # it carries 103: secondary bitmap
    assert "64" in requests["0200310000"]              # no field above 64
    assert fake.connections == 1


def test_without_keep_connection_every_request_opens_its_own_connection():
    fleet = terminals(3)

    async def scenario():
        fake = FakeSwitch(keys_of(fleet))
        async with fake as port:
            report = await PosSimulator("127.0.0.1", port, fleet, count=9, concurrency=3,
                                        keep_connection=False).run()
            return fake, report

    fake, report = asyncio.run(scenario())
    assert report.answers == Counter({"00": 9}) and fake.connections == 9


def test_a_switch_that_does_not_answer_leaves_the_requests_lost():
    fleet = terminals(2)

    async def scenario():
        fake = FakeSwitch(keys_of(fleet), silent=True)
        async with fake as port:
            return await PosSimulator("127.0.0.1", port, fleet, count=4, concurrency=2, answer_timeout=0.2).run()

    report = asyncio.run(scenario())
    assert report.sent == report.lost == 4 and report.answered == 0


def test_msisdn_forms_are_those_the_interface_accepts():
    patterns = {"international": r"98\d{10}", "plus": r"\+98\d{10}", "double_zero": r"0098\d{10}",
                "national_trunk": r"09\d{9}", "national": r"9\d{9}"}
    assert set(patterns) == set(MSISDN_FORMS)
    for form, pattern in patterns.items():
        assert re.fullmatch(pattern, msisdn_in_form("9121234567", form))
        sim = PosSimulator("127.0.0.1", 1, terminals(1), msisdn_forms=[form], seed=5)
        assert all(re.fullmatch(pattern, sim.random_msisdn()) for _ in range(20))


def test_terminals_with_ids_or_keys_of_the_wrong_size_are_refused():
    with pytest.raises(ValueError, match="8 characters"):
        Terminal("TERM1", "MERCHANT0000001", "603799", KEY)
    with pytest.raises(ValueError, match="15 characters"):
        Terminal("TERM0001", "MERCHANT", "603799", KEY)
    with pytest.raises(ValueError, match="16"):
        Terminal("TERM0001", "MERCHANT0000001", "603799", KEY[:8])
    with pytest.raises(ValueError, match="MSISDN forms"):
        PosSimulator("127.0.0.1", 1, terminals(1), msisdn_forms=["local"])
