"""A bank host speaking `bank87`: connects, signs on, sends top-ups, counts the answers.

Top-ups go out at a given rate (or as fast as the in-flight window allows) over
one persistent connection, many in flight at once, matched back by 11 and 37.
Numbers and amounts look like real traffic on the demo's Iranian operators;
`--bad-share` mixes in requests that must be refused (bad number, no route,
bad amount) so every decline path is exercised. Tracking codes are unique per
run, so a run never collides with an earlier one in the dedupe key.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import string
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone

from simulators.latency import percentile
from switch.errors import RemoteProtocolError
from switch.wire import load_dialect

log = logging.getLogger("airswitch.sim.bank")

ANSWER_TIMEOUT = 30.0  # seconds a sent top-up may wait for its answer before counted as lost

# National prefixes of the demo operators (MCI, Irancell, RighTel).
PREFIXES = ["0912", "0919", "0910", "0991", "0935", "0936", "0939", "0901", "0903", "0921", "0920"]
AMOUNTS = [20_000, 50_000, 100_000, 200_000, 500_000]  # taken by every demo operator


def run_id() -> str:
    """Four characters unique enough per run to keep tracking codes fresh."""
    alphabet = string.ascii_uppercase + string.digits
    return "".join(random.SystemRandom().choice(alphabet) for _ in range(4))


@dataclass
class BankReport:
    sent: int = 0
    answers: Counter = field(default_factory=Counter)
    lost: int = 0
    elapsed: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    approved_by_operator: Counter = field(default_factory=Counter)  # field 44 of approvals
    approvals: set = field(default_factory=set)   # (acquirer id, tracking code) of every 00 received

    @property
    def answered(self) -> int:
        return sum(self.answers.values())

    def percentile(self, share: float) -> float:
        return percentile(self.latencies_ms, share)


class BankSimulator:
    def __init__(self, host: str, port: int, institution_id: str, *, count: int = 1000, rate: float = 0.0,
                 duration: float | None = None, window: int = 200, bad_share: float = 0.0, seed: int | None = None,
                 terminal_id: str = "BANKSIM1", run: str | None = None, local_address: str | None = None):
        self.host, self.port = host, port
        self.institution_id = institution_id
        self.count, self.rate, self.window, self.duration = count, rate, window, duration
        self.local_address = local_address
        self.bad_share = bad_share
        self.terminal_id = terminal_id
        self.run = run or run_id()
        self.dialect = load_dialect("bank87")
        self.random = random.Random(seed)
        self.report = BankReport()
        self._waiting: dict[tuple[str, str], tuple[asyncio.Future, float]] = {}
        self._stans = itertools.count(1)
        self._transport: asyncio.Transport | None = None

    # -- the traffic ------------------------------------------------------------------------
    def top_up(self, sequence: int) -> dict:
        now = datetime.now(timezone.utc)
        amount = self.random.choice(AMOUNTS)
        number = self.random.choice(PREFIXES) + f"{self.random.randrange(10_000_000):07d}"
        form = self.random.random()
        msisdn = ("98" + number[1:]) if form < 0.2 else ("+98" + number[1:]) if form < 0.3 else number
        if self.bad_share and self.random.random() < self.bad_share:
            kind = self.random.randrange(3)
            if kind == 0:
                msisdn = "09x2" + number[4:]                 # malformed: 14
            elif kind == 1:
                msisdn = "0934" + number[4:]                 # TeleKish: no operator of ours: 92
            else:
                amount = 12_345                              # no operator takes it: 13
        return {
            "t": "0200", "2": "6037991234567890", "3": "000000", "4": f"{amount:012d}",
            "7": now.strftime("%m%d%H%M%S"), "11": f"{next(self._stans) % 1_000_000 or 1:06d}",
            "12": now.strftime("%H%M%S"), "13": now.strftime("%m%d"), "32": self.institution_id,
            "37": f"{self.run}{sequence:08d}"[:12], "41": self.terminal_id, "42": "AIRSWITCHDEMO01",
            "48": "CH003WEB", "49": "364", "103": msisdn,
        }

    async def run_traffic(self, on_progress=None) -> BankReport:
        loop = asyncio.get_running_loop()
        reader_done = loop.create_future()
        self._transport, _ = await loop.create_connection(
            lambda: _BankProtocol(self, reader_done), self.host, self.port,
            local_addr=(self.local_address, 0) if self.local_address else None)
        try:
            await self.exchange({"t": "0800", "7": datetime.now(timezone.utc).strftime("%m%d%H%M%S"),
                                 "11": "000000", "37": "", "70": "001"})
            started = time.perf_counter()
            window = asyncio.Semaphore(self.window)
            in_flight: set[asyncio.Task] = set()
            for sequence in range(self.count):
                if self.duration is not None and time.perf_counter() - started >= self.duration:
                    break
                if self.rate:
                    delay = started + sequence / self.rate - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                await window.acquire()
                task = loop.create_task(self._one(self.top_up(sequence), window))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
                if on_progress is not None and sequence % 100 == 0:
                    on_progress(self.report)
            if in_flight:
                await asyncio.wait(in_flight)
            self.report.elapsed = time.perf_counter() - started
        finally:
            self._transport.close()
        return self.report

    async def _one(self, request: dict, window: asyncio.Semaphore) -> None:
        self.report.sent += 1
        sent_at = time.perf_counter()
        try:
            answer = await self.exchange(request)
        except (asyncio.TimeoutError, ConnectionError):
            self.report.lost += 1
        else:
            code = answer.get("39", "??")
            self.report.answers[code] += 1
            if code == "00":
                self.report.approved_by_operator[answer.get("44", "?")] += 1
                self.report.approvals.add((answer.get("32", ""), answer.get("37", "")))
            self.report.latencies_ms.append((time.perf_counter() - sent_at) * 1000.0)
        finally:
            window.release()

    async def exchange(self, request: dict, timeout: float = ANSWER_TIMEOUT) -> dict:
        key = (request["11"], request.get("37", ""))
        future = asyncio.get_running_loop().create_future()
        self._waiting[key] = (future, time.perf_counter())
        if request["t"] == "0800":
            request = {k: v for k, v in request.items() if k != "37"}
        self._transport.write(self.dialect.pack(request))
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            self._waiting.pop(key, None)

    def answer_received(self, answer: dict) -> None:
        key = (answer.get("11", ""), answer.get("37", ""))
        waiting = self._waiting.get(key)
        if waiting is None:
            log.warning("bank sim: answer with no request: %s", key)
            return
        if not waiting[0].done():
            waiting[0].set_result(answer)

    def connection_lost(self) -> None:
        for future, _ in self._waiting.values():
            if not future.done():
                future.set_exception(ConnectionError("switch closed the connection"))


class _BankProtocol(asyncio.Protocol):
    def __init__(self, bank: BankSimulator, done: asyncio.Future):
        self.bank = bank
        self.done = done
        self.decoder = bank.dialect.frame_decoder()

    def data_received(self, data: bytes) -> None:
        try:
            frames = self.decoder.feed(data)
        except RemoteProtocolError as exc:
            log.error("bank sim: %s", exc)
            return
        for frame in frames:
            self.bank.answer_received(self.bank.dialect.decode(frame))

    def connection_lost(self, exc):
        self.bank.connection_lost()
        if not self.done.done():
            self.done.set_result(None)
