"""An operator host speaking `opa87`, for the demo, the tests and the benchmarks.

It listens (the switch dials it), answers sign-on and echo, refuses top-ups
before sign-on (91), and answers each top-up after a configurable latency:
approved, declined at a configurable rate, 14 for unknown subscribers, or not
at all at a configurable rate (to exercise the switch's timeouts). It keeps a
ledger of what it credited, keyed by the switch's reference (11 and 7), so an
audit can compare it with the switch's journal.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
from collections import Counter
from dataclasses import dataclass, field

from switch.errors import RemoteProtocolError
from switch.wire import load_dialect

log = logging.getLogger("airswitch.sim.operator")


@dataclass
class OperatorBehaviour:
    latency_ms: float = 5.0          # mean answer delay
    jitter_ms: float = 0.0           # uniform +/- around the mean
    decline_rate: float = 0.0        # share of top-ups answered 05
    no_answer_rate: float = 0.0      # share of top-ups never answered
    unknown_subscribers: frozenset[str] = frozenset()  # MSISDNs (international digits) answered 14
    seed: int | None = None


@dataclass
class Credit:
    msisdn: str
    amount: int
    tracking_code: str
    operator_ref: str


@dataclass
class OperatorSimulator:
    operator_id: str
    behaviour: OperatorBehaviour = field(default_factory=OperatorBehaviour)
    host: str = "127.0.0.1"
    port: int = 0
    ledger: dict[tuple[str, str], Credit] = field(default_factory=dict)
    answered: Counter = field(default_factory=Counter)

    def __post_init__(self):
        self.dialect = load_dialect("opa87")
        self._random = random.Random(self.behaviour.seed)
        self._refs = itertools.count(1)
        self._server: asyncio.Server | None = None
        self.connections: set[_OperatorConnection] = set()

    async def start(self) -> int:
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _OperatorConnection(self), self.host, self.port, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("operator simulator %s (opa87) on %s:%d", self.operator_id, self.host, self.port)
        return self.port

    def disconnect_all(self) -> None:
        """Drop every link now (requests in flight included)."""
        for connection in list(self.connections):
            connection.transport.close()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        self.disconnect_all()
        if self._server is not None:
            await self._server.wait_closed()

    def decide(self, request: dict) -> dict | None:
        """The answer to a signed-on top-up, or None for no answer."""
        behaviour = self.behaviour
        answer = {key: request[key] for key in ("2", "3", "4", "7", "11", "32", "37", "41", "49") if key in request}
        answer["t"] = "0210"
        key = (request.get("11", ""), request.get("7", ""))
        roll = self._random.random()
        if roll < behaviour.no_answer_rate:
            self.answered["no answer"] += 1
            return None
        if key in self.ledger:
            code = "94"
        elif request.get("2") in behaviour.unknown_subscribers:
            code = "14"
        elif roll < behaviour.no_answer_rate + behaviour.decline_rate:
            code = "05"
        else:
            code = "00"
            reference = f"{self.operator_id}{next(self._refs):010d}"
            self.ledger[key] = Credit(request["2"], int(request["4"]), request["37"], reference)
            answer["38"] = f"{self._random.randrange(1_000_000):06d}"
            answer["62"] = reference
        answer["39"] = code
        self.answered[code] += 1
        return answer

    def delay(self) -> float:
        behaviour = self.behaviour
        jitter = self._random.uniform(-behaviour.jitter_ms, behaviour.jitter_ms) if behaviour.jitter_ms else 0.0
        return max(0.0, behaviour.latency_ms + jitter) / 1000.0


class _OperatorConnection(asyncio.Protocol):
    def __init__(self, simulator: OperatorSimulator):
        self.simulator = simulator
        self.dialect = simulator.dialect
        self.decoder = self.dialect.frame_decoder()
        self.signed_on = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport):
        self.transport = transport
        self.simulator.connections.add(self)

    def connection_lost(self, exc):
        self.simulator.connections.discard(self)

    def data_received(self, data: bytes) -> None:
        try:
            frames = self.decoder.feed(data)
        except RemoteProtocolError as exc:
            log.warning("operator sim: %s; closing", exc)
            self.transport.close()
            return
        for frame in frames:
            try:
                message = self.dialect.decode(frame)
            except RemoteProtocolError as exc:
                log.warning("operator sim: dropped undecodable message: %s", exc)
                continue
            self.handle(message)

    def handle(self, message: dict) -> None:
        mti = message["t"]
        if mti == "0800":
            if message.get("70") == "001":
                self.signed_on = True
            self.send({"t": "0810", "7": message.get("7", ""), "11": message.get("11", ""),
                       "39": "00", "70": message.get("70", "")})
        elif mti == "0200":
            if not self.signed_on:
                refusal = {k: message[k] for k in ("2", "3", "4", "7", "11", "32", "37", "41", "49") if k in message}
                self.send({**refusal, "t": "0210", "39": "91"})
                return
            answer = self.simulator.decide(message)
            if answer is not None:
                asyncio.get_running_loop().call_later(self.simulator.delay(), self.send, answer)
        elif mti != "0810":
            log.info("operator sim: MTI %s ignored", mti)

    def send(self, message: dict) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(self.dialect.pack(message))
