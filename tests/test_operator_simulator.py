"""The operator simulator on real sockets, in each dialect and both link directions.

A tiny switch end built on the wire layer drives it: in listen mode it dials the
simulator; in dial mode a small server plays the switch's operator port.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import statistics

import pytest

from simulators.operator import RECONNECT_BACKOFF_MIN, Credit, OperatorBehaviour, OperatorSimulator
from switch.wire import load_dialect

DIALECTS = ("opa87", "opb93", "opcjson")
SIGN_ON_DIALECTS = ("opa87", "opb93")
MSISDN = "989121110001"
UNKNOWN_MSISDN = "989121119999"
AMOUNT = 100_000
TRACKING = "TRK000000042"
FIELD_7 = "0101120000"          # opa87 transmission time of every test request
FIELD_12 = "260101120000"       # opb93 local date and time of every test request
QUIET_PERIOD = 0.3              # seconds in which "no answer" must hold
RECEIVE_TIMEOUT = 2.0


def run(coroutine):
    return asyncio.run(coroutine)


# -- the switch's end of a link -----------------------------------------------------------
class SwitchEnd:
    """One connection as the switch sees it: send messages, receive decoded ones with a timeout."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, dialect: str):
        self.reader, self.writer = reader, writer
        self.wire = load_dialect(dialect)
        self.decoder = self.wire.frame_decoder()
        self.inbox: collections.deque[dict] = collections.deque()

    @classmethod
    async def connect(cls, port: int, dialect: str) -> "SwitchEnd":
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer, dialect)

    def send(self, message: dict) -> None:
        self.writer.write(self.wire.pack(message))

    def send_raw(self, data: bytes) -> None:
        self.writer.write(data)

    async def receive(self, timeout: float = RECEIVE_TIMEOUT) -> dict:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.inbox:
            data = await asyncio.wait_for(self.reader.read(65536), max(0.0, deadline - loop.time()))
            if not data:
                raise ConnectionError("closed by the simulator")
            self.inbox.extend(self.wire.decode(payload) for payload in self.decoder.feed(data))
        return self.inbox.popleft()

    async def nothing_within(self, seconds: float) -> bool:
        try:
            await self.receive(seconds)
        except asyncio.TimeoutError:
            return True
        return False

    async def closed_by_peer(self, timeout: float = RECEIVE_TIMEOUT) -> bool:
        try:
            while await asyncio.wait_for(self.reader.read(65536), timeout):
                pass
        except asyncio.TimeoutError:
            return False
        return True

    def close(self) -> None:
        self.writer.close()


# -- what the switch sends, per dialect ---------------------------------------------------
class Opa87Switch:
    dialect = "opa87"
    codes = {"sign-on": "00", "approved": "00", "declined": "05", "unknown": "14", "duplicate": "94",
             "not signed on": "91", "reversed": "00", "unknown original": "25"}

    @staticmethod
    def sign_on(stan: int = 1) -> dict:
        return {"t": "0800", "7": FIELD_7, "11": f"{stan:06d}", "41": "AIRSW001", "70": "001"}

    @staticmethod
    def echo() -> dict:
        return {"t": "0800", "7": FIELD_7, "11": "000099", "41": "AIRSW001", "70": "301"}

    @staticmethod
    def echo_answered(answer: dict) -> bool:
        return answer["t"] == "0810" and answer["39"] == "00" and answer["70"] == "301"

    @staticmethod
    def top_up(ref: int, msisdn: str = MSISDN, amount: int = AMOUNT) -> dict:
        return {"t": "0200", "2": msisdn, "3": "000000", "4": f"{amount:012d}", "7": FIELD_7, "11": f"{ref:06d}",
                "12": "120000", "13": "0101", "32": "99001", "37": TRACKING, "41": "AIRSW001", "49": "364"}

    @staticmethod
    def reversal(ref: int, original: int) -> dict:
        return {"t": "0420", "2": MSISDN, "3": "000000", "4": f"{AMOUNT:012d}", "7": FIELD_7, "11": f"{ref:06d}",
                "32": "99001", "37": TRACKING, "41": "AIRSW001", "49": "364",
                "90": f"0200{original:06d}{FIELD_7}{'99001':0>11}{'0':0>11}"}

    @staticmethod
    def code(answer: dict) -> str:
        return answer["39"]

    @staticmethod
    def ref_of(answer: dict) -> int:
        return int(answer["11"])

    @staticmethod
    def operator_ref(answer: dict) -> str:
        return answer["62"]

    @staticmethod
    def ledger_key(ref: int) -> tuple:
        return ("opa87", f"{ref:06d}", FIELD_7)

    echoed = ("2", "3", "4", "7", "11", "32", "37", "41", "49")
    garbage = b"0012" + b"0200ZZZZZZZZ"     # a frame whose bitmap is not hex


class Opb93Switch:
    dialect = "opb93"
    codes = {"sign-on": "800", "approved": "000", "declined": "100", "unknown": "111", "duplicate": "913",
             "not signed on": "909", "reversed": "400", "unknown original": "480"}

    @staticmethod
    def sign_on(stan: int = 1) -> dict:
        return {"t": "1804", "11": f"{stan:06d}", "12": FIELD_12, "24": "801", "32": "99001"}

    @staticmethod
    def echo() -> dict:
        return {"t": "1804", "11": "000099", "12": FIELD_12, "24": "831", "32": "99001"}

    @staticmethod
    def echo_answered(answer: dict) -> bool:
        return answer["t"] == "1814" and answer["39"] == "800" and answer["24"] == "831"

    @staticmethod
    def top_up(ref: int, msisdn: str = MSISDN, amount: int = AMOUNT) -> dict:
        return {"t": "1200", "3": "000000", "4": f"{amount:012d}", "11": f"{ref:06d}", "12": FIELD_12, "24": "200",
                "32": "99001", "37": TRACKING, "49": "364", "102": msisdn}

    @staticmethod
    def reversal(ref: int, original: int) -> dict:
        return {"t": "1420", "3": "000000", "4": f"{AMOUNT:012d}", "11": f"{ref:06d}", "12": FIELD_12, "24": "400",
                "32": "99001", "37": TRACKING, "49": "364", "102": MSISDN,
                "56": f"1200{original:06d}{FIELD_12}0599001"}

    @staticmethod
    def code(answer: dict) -> str:
        return answer["39"]

    @staticmethod
    def ref_of(answer: dict) -> int:
        return int(answer["11"])

    @staticmethod
    def operator_ref(answer: dict) -> str:
        return answer["63"]

    @staticmethod
    def ledger_key(ref: int) -> tuple:
        return ("opb93", f"{ref:06d}", FIELD_12)

    echoed = ("3", "4", "11", "12", "32", "37", "49", "102")
    garbage = b"\x00\x061200\xff\xff"         # a bitmap cut short


class OpcJsonSwitch:
    dialect = "opcjson"
    codes = {"approved": "OK", "declined": "REJECTED DECLINED", "unknown": "REJECTED INVALID_MSISDN",
             "duplicate": "REJECTED DUPLICATE", "reversed": "OK", "unknown original": "NOT_FOUND"}
    sign_on = None

    @staticmethod
    def echo() -> dict:
        return {"type": "ping"}

    @staticmethod
    def echo_answered(answer: dict) -> bool:
        return answer == {"type": "pong"}

    @staticmethod
    def top_up(ref: int, msisdn: str = MSISDN, amount: int = AMOUNT) -> dict:
        return {"type": "recharge", "ref": f"R{ref}", "msisdn": msisdn, "amount": amount, "currency": "364",
                "tracking": TRACKING}

    @staticmethod
    def reversal(ref: int, original: int) -> dict:
        return {"type": "reverse", "ref": f"R{ref}", "original_ref": f"R{original}"}

    @staticmethod
    def code(answer: dict) -> str:
        if answer["type"] == "reverse_result":
            return answer["status"]
        return " ".join(part for part in (answer["status"], answer["reason"]) if part)

    @staticmethod
    def ref_of(answer: dict) -> int:
        return int(answer["ref"][1:])

    @staticmethod
    def operator_ref(answer: dict) -> str:
        return answer["op_txn_id"]

    @staticmethod
    def ledger_key(ref: int) -> tuple:
        return ("opcjson", f"R{ref}")

    echoed = ("ref",)
    garbage = b"this is not JSON\n"


SWITCH = {side.dialect: side for side in (Opa87Switch, Opb93Switch, OpcJsonSwitch)}


async def linked(simulator: OperatorSimulator, dialect: str) -> SwitchEnd:
    """A connection to a listening simulator, signed on where the dialect has a sign-on."""
    end = await SwitchEnd.connect(simulator.port, dialect)
    side = SWITCH[dialect]
    if side.sign_on is not None:
        end.send(side.sign_on())
        answer = await end.receive()
        assert answer["39"] == side.codes["sign-on"]
    return end


def listening(dialect: str, **behaviour) -> OperatorSimulator:
    return OperatorSimulator("MCI", OperatorBehaviour(**{"latency_ms": 1, **behaviour}), dialect=dialect)


# -- listen mode --------------------------------------------------------------------------
def test_opa87_sign_on_is_answered_00_echoing_7_11_41_70():
    async def scenario():
        simulator = listening("opa87")
        await simulator.start()
        end = await SwitchEnd.connect(simulator.port, "opa87")
        end.send(Opa87Switch.sign_on(7))
        answer = await end.receive()
        assert answer["t"] == "0810" and answer["39"] == "00"
        assert {key: answer[key] for key in ("7", "11", "41", "70")} == \
            {"7": FIELD_7, "11": "000007", "41": "AIRSW001", "70": "001"}
        assert simulator.signed_on_links == 1 and await simulator.wait_linked(0.1)
        end.close()
        await simulator.stop()
    run(scenario())


def test_opb93_sign_on_is_answered_800_echoing_11_12_24_32():
    async def scenario():
        simulator = listening("opb93")
        await simulator.start()
        end = await SwitchEnd.connect(simulator.port, "opb93")
        end.send(Opb93Switch.sign_on(7))
        answer = await end.receive()
        assert answer["t"] == "1814" and answer["39"] == "800"
        assert {key: answer[key] for key in ("11", "12", "24", "32")} == \
            {"11": "000007", "12": FIELD_12, "24": "801", "32": "99001"}
        assert simulator.signed_on_links == 1
        end.close()
        await simulator.stop()
    run(scenario())


def test_opcjson_listen_link_needs_no_login_and_counts_as_linked_at_once():
    async def scenario():
        simulator = listening("opcjson")
        await simulator.start()
        end = await SwitchEnd.connect(simulator.port, "opcjson")
        assert await simulator.wait_linked(1.0)
        end.send(OpcJsonSwitch.top_up(1))
        assert (await end.receive())["status"] == "OK"
        end.close()
        await simulator.stop()
    run(scenario())


@pytest.mark.parametrize("dialect", SIGN_ON_DIALECTS)
def test_top_up_before_sign_on_is_refused_and_credits_nothing(dialect):
    async def scenario():
        side = SWITCH[dialect]
        simulator = listening(dialect)
        await simulator.start()
        end = await SwitchEnd.connect(simulator.port, dialect)
        end.send(side.top_up(1))
        answer = await end.receive()
        assert side.code(answer) == side.codes["not signed on"]
        assert not simulator.ledger and simulator.signed_on_links == 0
        end.close()
        await simulator.stop()
    run(scenario())


@pytest.mark.parametrize("dialect", DIALECTS)
def test_approved_top_up_echoes_the_request_and_is_credited_in_the_ledger(dialect):
    async def scenario():
        side = SWITCH[dialect]
        simulator = listening(dialect)
        await simulator.start()
        end = await linked(simulator, dialect)
        request = side.top_up(1)
        end.send(request)
        answer = await end.receive()
        assert side.code(answer) == side.codes["approved"]
        for key in side.echoed:
            assert answer[key] == request[key], key
        if dialect != "opcjson":
            assert len(answer["38"]) == 6 and answer["38"].isdigit()
        assert side.operator_ref(answer) == "MCI0000000001"
        assert simulator.ledger == {side.ledger_key(1): Credit(MSISDN, AMOUNT, TRACKING, "MCI0000000001")}
        assert simulator.answered == {side.codes["approved"]: 1}
        end.close()
        await simulator.stop()
    run(scenario())


@pytest.mark.parametrize("dialect", DIALECTS)
def test_decline_rate_one_declines_with_the_dialect_code_and_credits_nothing(dialect):
    async def scenario():
        side = SWITCH[dialect]
        simulator = listening(dialect, decline_rate=1.0)
        await simulator.start()
        end = await linked(simulator, dialect)
        end.send(side.top_up(1))
        answer = await end.receive()
        assert side.code(answer) == side.codes["declined"]
        if dialect == "opcjson":
            assert answer["status"] == "REJECTED" and answer["op_txn_id"] is None
        assert not simulator.ledger
        end.close()
        await simulator.stop()
    run(scenario())


@pytest.mark.parametrize("dialect", DIALECTS)
def test_unknown_subscriber_is_refused_with_the_dialect_code(dialect):
    async def scenario():
        side = SWITCH[dialect]
        simulator = listening(dialect, unknown_subscribers=frozenset({UNKNOWN_MSISDN}))
        await simulator.start()
        end = await linked(simulator, dialect)
        end.send(side.top_up(1, msisdn=UNKNOWN_MSISDN))
        assert side.code(await end.receive()) == side.codes["unknown"]
        end.send(side.top_up(2))
        assert side.code(await end.receive()) == side.codes["approved"]
        assert list(simulator.ledger) == [side.ledger_key(2)]
        end.close()
        await simulator.stop()
    run(scenario())


@pytest.mark.parametrize("dialect", DIALECTS)
def test_a_reference_already_credited_is_answered_duplicate_and_not_credited_twice(dialect):
    async def scenario():
        side = SWITCH[dialect]
        simulator = listening(dialect)
        await simulator.start()
        end = await linked(simulator, dialect)
        end.send(side.top_up(1))
        assert side.code(await end.receive()) == side.codes["approved"]
        end.send(side.top_up(1))
        assert side.code(await end.receive()) == side.codes["duplicate"]
        assert len(simulator.ledger) == 1
        assert simulator.answered == {side.codes["approved"]: 1, side.codes["duplicate"]: 1}
        end.close()
        await simulator.stop()
    run(scenario())


@pytest.mark.parametrize("dialect", DIALECTS)
def test_no_answer_rate_one_never_answers_a_top_up_but_still_answers_echo(dialect):
    async def scenario():
        side = SWITCH[dialect]
        simulator = listening(dialect, no_answer_rate=1.0)
        await simulator.start()
        end = await linked(simulator, dialect)
        end.send(side.top_up(1))
        assert await end.nothing_within(QUIET_PERIOD)
        assert simulator.answered == {"no answer": 1} and not simulator.ledger
        end.send(side.echo())
        assert side.echo_answered(await end.receive())
        end.close()
        await simulator.stop()
    run(scenario())


@pytest.mark.parametrize("dialect", DIALECTS)
def test_echo_is_answered(dialect):
    async def scenario():
        side = SWITCH[dialect]
        simulator = listening(dialect)
        await simulator.start()
        end = await linked(simulator, dialect)
        end.send(side.echo())
        assert side.echo_answered(await end.receive())
        end.close()
        await simulator.stop()
    run(scenario())


@pytest.mark.parametrize("dialect", DIALECTS)
def test_disconnect_all_closes_the_switch_connection_with_answers_in_flight(dialect):
    async def scenario():
        side = SWITCH[dialect]
        simulator = listening(dialect, latency_ms=200)
        await simulator.start()
        end = await linked(simulator, dialect)
        end.send(side.top_up(1))
        await asyncio.sleep(0.05)   # the top-up has arrived and waits for its answer
        assert len(simulator.connections) == 1
        simulator.disconnect_all()
        assert await end.closed_by_peer()
        assert not end.inbox and not simulator.connections and simulator.signed_on_links == 0
        await simulator.stop()
    run(scenario())


@pytest.mark.parametrize("dialect", DIALECTS)
def test_reversal_of_a_credit_is_accepted_and_of_an_unknown_original_refused(dialect):
    async def scenario():
        side = SWITCH[dialect]
        simulator = listening(dialect)
        await simulator.start()
        end = await linked(simulator, dialect)
        end.send(side.top_up(1))
        assert side.code(await end.receive()) == side.codes["approved"]
        end.send(side.reversal(2, original=1))
        answer = await end.receive()
        assert side.code(answer) == side.codes["reversed"] and side.ref_of(answer) == 2
        end.send(side.reversal(3, original=42))
        assert side.code(await end.receive()) == side.codes["unknown original"]
        # The credit stays in the ledger (it happened); `reversed` says a reversal undid it.
        assert list(simulator.reversed) == [side.ledger_key(1)] and len(simulator.ledger) == 1
        end.close()
        await simulator.stop()
    run(scenario())


@pytest.mark.parametrize("dialect", DIALECTS)
def test_malformed_messages_are_ignored_and_the_link_stays(dialect):
    async def scenario():
        side = SWITCH[dialect]
        simulator = listening(dialect)
        await simulator.start()
        end = await linked(simulator, dialect)
        end.send_raw(side.garbage)
        incomplete = side.top_up(1)
        if dialect == "opcjson":
            del incomplete["amount"]
            end.send_raw(b"[1, 2]\n" + b'{"type": "bogus"}\n' + b'{"no": "type"}\n' + b"x" * 5000 + b"\n")
        else:
            del incomplete["4"]
        end.send(incomplete)
        assert await end.nothing_within(QUIET_PERIOD)
        end.send(side.echo())
        assert side.echo_answered(await end.receive())
        assert not simulator.ledger and len(simulator.connections) == 1
        end.close()
        await simulator.stop()
    run(scenario())


def test_behaviour_changed_at_runtime_applies_to_the_next_top_up():
    async def scenario():
        simulator = listening("opa87")
        await simulator.start()
        end = await linked(simulator, "opa87")
        simulator.behaviour.latency_ms = 400
        end.send(Opa87Switch.top_up(1))
        assert await end.nothing_within(0.15)
        assert (await end.receive())["39"] == "00"
        simulator.behaviour.latency_ms = 1
        simulator.behaviour.decline_rate = 1.0
        end.send(Opa87Switch.top_up(2))
        assert (await end.receive())["39"] == "05"
        end.close()
        await simulator.stop()
    run(scenario())


def test_exponential_latency_has_the_configured_mean():
    simulator = OperatorSimulator("MCI", OperatorBehaviour(latency_ms=20, latency_distribution="exponential",
                                                           seed=7))
    delays = [simulator.delay() for _ in range(4000)]
    assert statistics.mean(delays) == pytest.approx(0.020, rel=0.1)
    assert max(delays) > 0.060   # a tail, unlike "uniform"


def test_constructor_refuses_what_cannot_work():
    with pytest.raises(ValueError):
        OperatorBehaviour(latency_distribution="gaussian")
    with pytest.raises(ValueError):
        OperatorSimulator("MCI", mode="dial")                                  # no switch port
    with pytest.raises(ValueError):
        OperatorSimulator("MCI", dialect="opcjson", mode="dial", switch_port=1)  # no secret
    with pytest.raises(ValueError):
        OperatorSimulator("MCI", dialect="opz99")


# -- dial mode ----------------------------------------------------------------------------
class OperatorPort:
    """The switch's operator port (its `accept` mode), reduced to handing over each accepted connection."""

    def __init__(self, dialect: str):
        self.dialect = dialect
        self.accepted: asyncio.Queue[SwitchEnd] = asyncio.Queue()
        self._server: asyncio.Server | None = None
        self._ends: list[SwitchEnd] = []

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader, writer) -> None:
        end = SwitchEnd(reader, writer, self.dialect)
        self._ends.append(end)
        self.accepted.put_nowait(end)

    async def next_link(self, timeout: float = RECEIVE_TIMEOUT) -> SwitchEnd:
        return await asyncio.wait_for(self.accepted.get(), timeout)

    async def stop(self) -> None:
        for end in self._ends:
            end.close()
        self._server.close()
        await self._server.wait_closed()


HANDSHAKE_ANSWERS = {
    "opa87": lambda hello: {"t": "0810", "7": hello["7"], "11": hello["11"], "39": "00", "70": hello["70"]},
    "opb93": lambda hello: {"t": "1814", **{key: hello[key] for key in ("11", "12", "24", "32")}, "39": "800"},
    "opcjson": lambda hello: {"type": "login_ok"},
}


def dialing(dialect: str, port: int, **options) -> OperatorSimulator:
    return OperatorSimulator("MCI", OperatorBehaviour(latency_ms=1), dialect=dialect, mode="dial",
                             switch_port=port, **options)


def assert_handshake(dialect: str, hello: dict) -> None:
    if dialect == "opa87":
        assert hello["t"] == "0800" and hello["70"] == "001" and len(hello["7"]) == 10 and len(hello["11"]) == 6
    elif dialect == "opb93":
        assert hello["t"] == "1804" and hello["24"] == "801" and hello["32"] == "99001"
        assert len(hello["12"]) == 12 and len(hello["11"]) == 6
    else:
        assert hello == {"type": "login", "operator": "MCI", "secret": "s3cret"}


@pytest.mark.parametrize("dialect", DIALECTS)
def test_dialing_simulator_hand_shakes_then_answers_echo_and_a_top_up(dialect):
    async def scenario():
        side = SWITCH[dialect]
        port_ = OperatorPort(dialect)
        simulator = dialing(dialect, await port_.start(), secret="s3cret")
        assert await simulator.start() == 0
        end = await port_.next_link()
        hello = await end.receive()
        assert_handshake(dialect, hello)
        assert simulator.signed_on_links == 0
        end.send(HANDSHAKE_ANSWERS[dialect](hello))
        assert await simulator.wait_linked(RECEIVE_TIMEOUT) and simulator.signed_on_links == 1
        end.send(side.echo())
        assert side.echo_answered(await end.receive())
        end.send(side.top_up(1))
        answer = await end.receive()
        assert side.code(answer) == side.codes["approved"]
        assert list(simulator.ledger) == [side.ledger_key(1)]
        # Nothing unprompted: no echo, no second handshake.
        assert await end.nothing_within(QUIET_PERIOD)
        await simulator.stop()
        assert await end.closed_by_peer()
        await port_.stop()
    run(scenario())


@pytest.mark.parametrize("dialect", SIGN_ON_DIALECTS)
def test_dialing_simulator_refuses_top_ups_until_its_sign_on_is_accepted(dialect):
    async def scenario():
        side = SWITCH[dialect]
        port_ = OperatorPort(dialect)
        simulator = dialing(dialect, await port_.start())
        await simulator.start()
        end = await port_.next_link()
        await end.receive()   # the sign-on, left unanswered for now
        end.send(side.top_up(1))
        assert side.code(await end.receive()) == side.codes["not signed on"]
        await simulator.stop()
        await port_.stop()
    run(scenario())


def test_dialing_simulator_redials_after_the_link_drops():
    async def scenario():
        port_ = OperatorPort("opa87")
        simulator = dialing("opa87", await port_.start())
        await simulator.start()
        first = await port_.next_link()
        first.send(HANDSHAKE_ANSWERS["opa87"](await first.receive()))
        assert await simulator.wait_linked(RECEIVE_TIMEOUT)
        first.close()                     # the switch drops the link
        second = await port_.next_link()
        second.send(HANDSHAKE_ANSWERS["opa87"](await second.receive()))
        assert await simulator.wait_linked(RECEIVE_TIMEOUT)
        simulator.disconnect_all()        # and so can the operator: it redials too
        third = await port_.next_link()
        third.send(HANDSHAKE_ANSWERS["opa87"](await third.receive()))
        assert await simulator.wait_linked(RECEIVE_TIMEOUT) and simulator.signed_on_links == 1
        await simulator.stop()
        await port_.stop()
    run(scenario())


def test_dialing_opcjson_refused_login_backs_off_without_crashing_and_links_once_accepted():
    async def scenario():
        port_ = OperatorPort("opcjson")
        simulator = dialing("opcjson", await port_.start(), secret="s3cret")
        await simulator.start()
        refusals = 0
        window = RECONNECT_BACKOFF_MIN * 6
        loop = asyncio.get_running_loop()
        deadline = loop.time() + window
        while loop.time() < deadline:
            try:
                end = await port_.next_link(max(0.01, deadline - loop.time()))
            except asyncio.TimeoutError:
                break
            assert (await end.receive())["type"] == "login"
            end.close()                   # what the switch does on a wrong secret
            refusals += 1
        # It retried, but with a growing backoff (0.1, 0.2, 0.4 s...), not in a tight loop.
        assert 2 <= refusals <= 4, refusals
        assert simulator.signed_on_links == 0 and not await simulator.wait_linked(0.01)
        # The switch's configuration is fixed: the next login is accepted.
        end = await port_.next_link(timeout=3.0)
        assert (await end.receive())["secret"] == "s3cret"
        end.send({"type": "login_ok"})
        assert await simulator.wait_linked(RECEIVE_TIMEOUT)
        await simulator.stop()
        await port_.stop()
    run(scenario())


def test_dialing_simulator_with_reconnect_off_stops_after_the_first_link():
    async def scenario():
        port_ = OperatorPort("opb93")
        simulator = dialing("opb93", await port_.start(), reconnect=False)
        await simulator.start()
        end = await port_.next_link()
        end.send(HANDSHAKE_ANSWERS["opb93"](await end.receive()))
        assert await simulator.wait_linked(RECEIVE_TIMEOUT)
        end.close()
        with pytest.raises(asyncio.TimeoutError):
            await port_.next_link(timeout=RECONNECT_BACKOFF_MIN * 3)
        await simulator.stop()
        await port_.stop()
    run(scenario())


def test_several_dialed_links_share_the_ledger():
    async def scenario():
        port_ = OperatorPort("opa87")
        simulator = dialing("opa87", await port_.start(), links=2)
        await simulator.start()
        ends = [await port_.next_link() for _ in range(2)]
        for end in ends:
            end.send(HANDSHAKE_ANSWERS["opa87"](await end.receive()))
        stans = itertools.count(1)
        for end in ends:
            end.send(Opa87Switch.top_up(next(stans)))
            assert (await end.receive())["39"] == "00"
        assert simulator.signed_on_links == 2 and len(simulator.ledger) == 2
        await simulator.stop()
        await port_.stop()
    run(scenario())
