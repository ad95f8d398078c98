"""POS terminals speaking `pos87`: many terminals, each one request at a time, MAC on every message.

Each terminal has its own connection (kept for its next request unless
`keep_connection=False`), puts the TPDU on every frame and signs every message but
0800 with its K1||K2 (INTERFACES.md 1.2). `run()` sends `count` top-ups with at
most `concurrency` terminals busy at once; `wrong_key_share` of them are signed
with a wrong key, which the switch must refuse with 39 = 63 and no MAC. Every
answer is checked: MTI, 11 and 37 of the request, the TPDU swapped, and the MAC
(answers with 39 = 63 and 0810s carry none). Tracking codes (37) are unique per
run, so a run never collides with an earlier one in the dedupe key.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

from simulators.bank import AMOUNTS, PREFIXES, run_id
from simulators.latency import percentile
from switch.errors import RemoteProtocolError
from switch.wire import load_dialect
from switch.wire.framing import FrameDecoder
from switch.wire.mac import KEY_LENGTH, mac_required, sign, verify
from switch.wire.tpdu import Tpdu, frame_decoder, pack, split_tpdu

log = logging.getLogger("airswitch.sim.pos")

CONNECT_TIMEOUT = 10.0   # seconds to open a terminal's connection
ANSWER_TIMEOUT = 30.0    # seconds a request may wait for its answer before counted as lost
READ_SIZE = 4096
SWITCH_NII = 0x0001      # destination NII the terminals put in their TPDU

TOP_UP, INQUIRY, BALANCE_INQUIRY = "000000", "300000", "310000"

# How a terminal may write the subscriber's number (INTERFACES.md 1.3, field 103).
MSISDN_FORMS = ("international", "plus", "double_zero", "national_trunk", "national")


def msisdn_in_form(national: str, form: str, country_code: str = "98") -> str:
    """`national` is the number without trunk 0 (9121234567)."""
    return {"international": country_code + national, "plus": "+" + country_code + national,
            "double_zero": "00" + country_code + national, "national_trunk": "0" + national,
            "national": national}[form]


@dataclass(frozen=True)
class Terminal:
    terminal_id: str      # field 41, 8 characters
    merchant_id: str      # field 42, 15 characters
    acquirer_id: str      # field 32
    key: bytes            # MAC key K1||K2, 16 bytes
    nii: int = 0x0000     # source NII in the TPDU

    def __post_init__(self) -> None:
        if len(self.terminal_id) != 8:
            raise ValueError(f"terminal id {self.terminal_id!r} is not 8 characters")
        if len(self.merchant_id) != 15:
            raise ValueError(f"merchant id {self.merchant_id!r} is not 15 characters")
        if not (self.acquirer_id.isdigit() and len(self.acquirer_id) <= 11):
            raise ValueError(f"acquirer id {self.acquirer_id!r} is not up to 11 digits")
        if len(self.key) != KEY_LENGTH:
            raise ValueError(f"terminal {self.terminal_id}: MAC key is {len(self.key)} bytes, not {KEY_LENGTH}")


def make_terminals(count: int, acquirer_id: str, key: bytes, *, prefix: str = "POS") -> list[Terminal]:
    """`count` terminals of one acquirer sharing one key: POS00001.., merchants AIRSWITCHPOS001.."""
    width = 8 - len(prefix)
    return [Terminal(f"{prefix}{i:0{width}d}", f"AIRSWITCHPOS{i % 1000:03d}", acquirer_id, key)
            for i in range(1, count + 1)]


def wrong_key_for(key: bytes) -> bytes:
    """A key that is certainly not the terminal's."""
    return bytes(byte ^ 0x5A for byte in key)


@dataclass
class PosReport:
    sent: int = 0
    answers: Counter = field(default_factory=Counter)            # by field 39
    lost: int = 0                                                 # no answer in time, or the link dropped
    bad_answer_macs: int = 0                                      # answers needing a MAC without a right one
    mismatched: int = 0                                           # answer not decodable, or not the request's
    wrong_key_sent: int = 0
    wrong_key_answers: Counter = field(default_factory=Counter)  # field 39 of the requests signed wrongly
    elapsed: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)

    @property
    def answered(self) -> int:
        return sum(self.answers.values())

    def percentile(self, share: float) -> float:
        return percentile(self.latencies_ms, share)


class _Link:
    """One terminal's connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, decoder: FrameDecoder):
        self.reader, self.writer, self.decoder = reader, writer, decoder
        self.frames: list[bytes] = []

    async def next_frame(self) -> bytes:
        while not self.frames:
            data = await self.reader.read(READ_SIZE)
            if not data:
                raise ConnectionError("switch closed the connection")
            self.frames += self.decoder.feed(data)
        return self.frames.pop(0)

    def close(self) -> None:
        self.writer.close()


class PosSimulator:
    def __init__(self, host: str, port: int, terminals: Sequence[Terminal], *, count: int = 1000,
                 concurrency: int = 50, wrong_key_share: float = 0.0, seed: int | None = None,
                 msisdn_forms: Sequence[str] = MSISDN_FORMS, keep_connection: bool = True,
                 switch_nii: int = SWITCH_NII, answer_timeout: float = ANSWER_TIMEOUT,
                 local_address: str | None = None, run: str | None = None):
        if not terminals:
            raise ValueError("a POS simulator needs at least one terminal")
        unknown = set(msisdn_forms) - set(MSISDN_FORMS)
        if unknown or not msisdn_forms:
            raise ValueError(f"MSISDN forms must be some of {', '.join(MSISDN_FORMS)}; got {sorted(unknown)}")
        self.host, self.port = host, port
        self.terminals = list(terminals)
        self.count, self.concurrency = count, concurrency
        self.wrong_key_share = wrong_key_share
        self.msisdn_forms = tuple(msisdn_forms)
        self.keep_connection = keep_connection
        self.switch_nii = switch_nii
        self.answer_timeout = answer_timeout
        self.local_address = local_address
        self.run_id = run or run_id()
        self.dialect = load_dialect("pos87")
        self.random = random.Random(seed)
        self.report = PosReport()
        self._sequences = itertools.count(1)
        self._links: dict[str, _Link] = {}
        self._busy: dict[str, asyncio.Lock] = {t.terminal_id: asyncio.Lock() for t in self.terminals}

    # -- the traffic ------------------------------------------------------------------------
    def _stamp(self) -> dict:
        """7, 11, 12 and 13 of a new request; 37 is a tracking code unique to this run."""
        sequence = next(self._sequences)
        now = datetime.now(timezone.utc)
        return {"7": now.strftime("%m%d%H%M%S"), "11": f"{sequence % 1_000_000 or 1:06d}",
                "12": now.strftime("%H%M%S"), "13": now.strftime("%m%d"), "37": f"{self.run_id}{sequence:08d}"[-12:]}

    def _common(self, terminal: Terminal, mti: str, processing_code: str) -> dict:
        return {"t": mti, "3": processing_code, **self._stamp(), "32": terminal.acquirer_id,
                "41": terminal.terminal_id, "42": terminal.merchant_id}

    def random_msisdn(self) -> str:
        national = self.random.choice(PREFIXES)[1:] + f"{self.random.randrange(10_000_000):07d}"
        return msisdn_in_form(national, self.random.choice(self.msisdn_forms))

    def top_up_request(self, terminal: Terminal, msisdn: str | None = None, amount: int | None = None) -> dict:
        return {**self._common(terminal, "0200", TOP_UP), "4": f"{amount or self.random.choice(AMOUNTS):012d}",
                "48": "CH003POS", "49": "364", "103": msisdn or self.random_msisdn()}

    def inquiry_request(self, terminal: Terminal, msisdn: str | None = None) -> dict:
        return {**self._common(terminal, "0100", INQUIRY), "48": "CH003POS", "103": msisdn or self.random_msisdn()}

    def balance_request(self, terminal: Terminal) -> dict:
        return {**self._common(terminal, "0200", BALANCE_INQUIRY), "48": "CH003POS"}

    def sign_on_request(self, terminal: Terminal) -> dict:
        stamp = self._stamp()
        return {"t": "0800", "7": stamp["7"], "11": stamp["11"], "70": "001"}

    async def top_up(self, terminal: Terminal, msisdn: str | None = None, amount: int | None = None, *,
                     wrong_key: bool = False) -> dict | None:
        return await self.send(terminal, self.top_up_request(terminal, msisdn, amount), wrong_key=wrong_key)

    async def inquiry(self, terminal: Terminal, msisdn: str | None = None, *, wrong_key: bool = False) -> dict | None:
        return await self.send(terminal, self.inquiry_request(terminal, msisdn), wrong_key=wrong_key)

    async def balance_inquiry(self, terminal: Terminal, *, wrong_key: bool = False) -> dict | None:
        return await self.send(terminal, self.balance_request(terminal), wrong_key=wrong_key)

    async def sign_on(self, terminal: Terminal) -> dict | None:
        return await self.send(terminal, self.sign_on_request(terminal))

    async def run(self) -> PosReport:
        """Send `count` top-ups, at most `concurrency` terminals busy at once; then close every connection."""
        idle: asyncio.Queue[Terminal] = asyncio.Queue()
        for terminal in self.terminals:
            idle.put_nowait(terminal)
        remaining = itertools.count()

        async def worker() -> None:
            while next(remaining) < self.count:
                terminal = await idle.get()
                try:
                    wrong = bool(self.wrong_key_share) and self.random.random() < self.wrong_key_share
                    await self.top_up(terminal, wrong_key=wrong)
                finally:
                    idle.put_nowait(terminal)

        started = time.perf_counter()
        try:
            # No more workers than terminals: a worker always finds an idle terminal.
            await asyncio.gather(*(worker() for _ in range(max(1, min(self.concurrency, len(self.terminals))))))
        finally:
            self.report.elapsed = time.perf_counter() - started
            await self.close()
        return self.report

    async def close(self) -> None:
        links, self._links = list(self._links.values()), {}
        for link in links:
            link.close()
        for link in links:
            try:
                await link.writer.wait_closed()
            except (ConnectionError, OSError):
                pass

    # -- one exchange ------------------------------------------------------------------------
    async def send(self, terminal: Terminal, request: dict, *, wrong_key: bool = False) -> dict | None:
        """Send one request from `terminal` and return its answer (None when lost or not the request's)."""
        async with self._busy[terminal.terminal_id]:
            return await self._exchange(terminal, request, wrong_key)

    async def _exchange(self, terminal: Terminal, request: dict, wrong_key: bool) -> dict | None:
        report = self.report
        tpdu = Tpdu(destination=self.switch_nii, source=terminal.nii)
        if mac_required(request):
            message = sign(self.dialect, request, wrong_key_for(terminal.key) if wrong_key else terminal.key)
        else:
            message = self.dialect.encode(request)
        report.sent += 1
        if wrong_key:
            report.wrong_key_sent += 1
        sent_at = time.perf_counter()
        try:
            link = await self._link(terminal)
            link.writer.write(pack(tpdu, message))
            await link.writer.drain()
            payload = await asyncio.wait_for(link.next_frame(), self.answer_timeout)
        except (asyncio.TimeoutError, ConnectionError, OSError, RemoteProtocolError) as exc:
            log.warning("pos sim: %s: %s lost: %r", terminal.terminal_id, request["t"], exc)
            report.lost += 1
            self._drop_link(terminal)   # a late answer must not be taken for the next request's
            return None
        finally:
            if not self.keep_connection:
                self._drop_link(terminal)
        try:
            answer_tpdu, answer_message = split_tpdu(payload)
            answer = self.dialect.decode(answer_message)
        except RemoteProtocolError as exc:
            log.warning("pos sim: %s: answer does not decode: %s", terminal.terminal_id, exc)
            report.mismatched += 1
            self._drop_link(terminal)
            return None
        if (answer_tpdu != tpdu.answer() or answer["t"] != request["t"][:2] + "10"
                or answer.get("11") != request["11"] or answer.get("37") != request.get("37")):
            log.warning("pos sim: %s: answer %s %s/%s does not match request %s %s/%s", terminal.terminal_id,
                        answer["t"], answer.get("11"), answer.get("37"), request["t"], request["11"], request.get("37"))
            report.mismatched += 1
            self._drop_link(terminal)   # out of step with the switch: start afresh
            return None
        code = answer.get("39", "??")
        report.answers[code] += 1
        report.latencies_ms.append((time.perf_counter() - sent_at) * 1000.0)
        if wrong_key:
            report.wrong_key_answers[code] += 1
        if mac_required(answer) and not verify(self.dialect, answer_message, answer, terminal.key):
            report.bad_answer_macs += 1
        return answer

    async def _link(self, terminal: Terminal) -> _Link:
        link = self._links.get(terminal.terminal_id)
        if link is not None and not link.reader.at_eof():
            return link
        self._drop_link(terminal)
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port,
                                    local_addr=(self.local_address, 0) if self.local_address else None),
            CONNECT_TIMEOUT)
        link = self._links[terminal.terminal_id] = _Link(reader, writer, frame_decoder())
        return link

    def _drop_link(self, terminal: Terminal) -> None:
        link = self._links.pop(terminal.terminal_id, None)
        if link is not None:
            link.close()
