"""The open-loop bank87 load generator.

It owns the traffic and its measurement: top-ups scheduled at a constant rate,
spread over a few persistent, signed-on bank87 connections, answers matched by
(11, 37), and latency counted from each request's *scheduled* send time, so a
switch that falls behind cannot hide its queue behind a slower sender
(coordinated omission). Latencies go into an HDR histogram; a per-second series
keeps what was offered, sent, answered and approved, the codes and errors, and
that second's p50/p99/max.

Nothing is unbounded: at most `max_in_flight` requests wait for an answer; a
request due while that cap is reached is not sent and counts as the error
"overload-client" (the load generator, not the switch, refused it). An answer
that does not come within `answer_timeout` counts as "timeout"; requests lost
with a dropped connection count as "connection-lost".

One Python process has to offer thousands a second, so the per-request path
does no codec work: each message template is encoded once with pyiso8583 and
only the STAN (11) and RRN (37) bytes are spliced in per request; each scheduler
wake-up writes one buffer per connection; answers are read by walking the
bitmap to fields 11, 37 and 39 instead of decoding the whole message.

Run alone: python -m bench.loadgen --port 5800 --rate 1000 --duration 10 --out result.json
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import math
import random
import string
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from hdrh.histogram import HdrHistogram

from simulators.bank import AMOUNTS, PREFIXES
from switch.errors import RemoteProtocolError
from switch.wire import Dialect, FrameDecoder, load_dialect

log = logging.getLogger("airswitch.bench.loadgen")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5800
DEFAULT_CONNECTIONS = 4
DEFAULT_MAX_IN_FLIGHT = 5_000
DEFAULT_ANSWER_TIMEOUT = 10.0     # seconds; longer than the operator timeouts the bench configures (3 s)
DEFAULT_ACQUIRER_ID = "603799"    # the demo acquirer that owns 127.0.0.1
TERMINAL_ID = "BENCH001"          # field 41
MERCHANT_ID = "AIRSWITCHBENCH1"   # field 42
CARD = "6037991234567890"         # field 2 (masked by the switch before journaling)
CONNECT_TIMEOUT = 5.0             # seconds to open one connection
SIGN_ON_TIMEOUT = 5.0             # seconds for the 0810 to our sign-on
TEMPLATE_COUNT = 256              # distinct (MSISDN, amount) messages, cycled
# Seconds the sender sleeps at least between wake-ups. Shorter sleeps would spin a core (the event
# loop's timers have millisecond resolution anyway); it adds at most this much to a request's latency.
SEND_TICK = 0.001
PROGRESS_INTERVAL = 1.0           # seconds between progress lines (and timeout sweeps)
STAN_MODULUS = 999_999            # STANs run 000001..999999, then wrap (RRNs keep the pair unique)
RUN_ID_LENGTH = 4                 # field 37 = run id (4 characters) + sequence (8 digits)
SEQUENCE_DIGITS = 8
MAX_REQUESTS = 10 ** SEQUENCE_DIGITS
HISTOGRAM_LOWEST_US = 1
HISTOGRAM_HIGHEST_US = 60_000_000  # one minute, in microseconds
HISTOGRAM_DIGITS = 3               # significant figures: 0.1 % resolution
APPROVED = b"00"

# Client-side errors (the switch's own refusals are response codes, counted separately).
OVERLOAD_CLIENT = "overload-client"
TIMEOUT = "timeout"
CONNECTION_LOST = "connection-lost"


# -- histograms -------------------------------------------------------------------------
def new_histogram() -> HdrHistogram:
    return HdrHistogram(HISTOGRAM_LOWEST_US, HISTOGRAM_HIGHEST_US, HISTOGRAM_DIGITS)


def encode_histogram(histogram: HdrHistogram) -> str:
    """The histogram as text (HdrHistogram's compressed base64 form), for JSON between processes."""
    return histogram.encode().decode("ascii")


def decode_histogram(text: str) -> HdrHistogram:
    return HdrHistogram.decode(text.encode("ascii"))


def latency_summary(histogram: HdrHistogram) -> dict:
    """Percentiles in milliseconds (HDR values are microseconds)."""
    count = histogram.get_total_count()
    if not count:
        return {"count": 0, "mean": None, "p50": None, "p90": None, "p99": None, "p99.9": None, "max": None}
    at = histogram.get_value_at_percentile
    return {"count": count, "mean": round(histogram.get_mean_value() / 1000, 3),
            "p50": at(50) / 1000, "p90": at(90) / 1000, "p99": at(99) / 1000, "p99.9": at(99.9) / 1000,
            "max": histogram.get_max_value() / 1000}


def _clamp_us(seconds: float) -> int:
    microseconds = int(seconds * 1_000_000)
    return HISTOGRAM_LOWEST_US if microseconds < HISTOGRAM_LOWEST_US else min(microseconds, HISTOGRAM_HIGHEST_US)


def _nearest_rank(ordered: list[int], share: float) -> int:
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


# -- the messages -----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Template:
    """A framed 0200, cut around its STAN and RRN values: head + STAN + middle + RRN + tail."""
    head: bytes
    middle: bytes
    tail: bytes


def top_up_fields(acquirer_id: str, msisdn: str, amount: int, now: datetime) -> dict[str, str]:
    return {
        "t": "0200", "2": CARD, "3": "000000", "4": f"{amount:012d}", "7": now.strftime("%m%d%H%M%S"),
        "11": "000000", "12": now.strftime("%H%M%S"), "13": now.strftime("%m%d"), "32": acquirer_id,
        "37": "0" * (RUN_ID_LENGTH + SEQUENCE_DIGITS), "41": TERMINAL_ID, "42": MERCHANT_ID, "48": "CH003WEB",
        "49": "364", "103": msisdn,
    }


def build_templates(dialect: Dialect, acquirer_id: str, count: int = TEMPLATE_COUNT,
                    seed: int | None = None) -> list[Template]:
    """Encode `count` top-ups once each (numbers and amounts the demo operators all take)."""
    rng = random.Random(seed)
    now = datetime.now(timezone.utc)
    rrn_length = RUN_ID_LENGTH + SEQUENCE_DIGITS
    templates = []
    for _ in range(count):
        msisdn = rng.choice(PREFIXES) + f"{rng.randrange(10_000_000):07d}"
        fields = top_up_fields(acquirer_id, msisdn, rng.choice(AMOUNTS), now)
        zeros = dialect.pack(fields)
        nines = dialect.pack({**fields, "11": "9" * 6, "37": "9" * rrn_length})
        # 11 and 37 are fixed-length and 11 comes first: the bytes that differ are exactly their values.
        differ = [i for i, (a, b) in enumerate(zip(zeros, nines)) if a != b]
        stan_at, rrn_at = differ[0], differ[6]
        if differ != [*range(stan_at, stan_at + 6), *range(rrn_at, rrn_at + rrn_length)]:
            raise RuntimeError("cannot locate fields 11 and 37 in the encoded bank87 0200")
        templates.append(Template(zeros[:stan_at], zeros[stan_at + 6:rrn_at], zeros[rrn_at + rrn_length:]))
    # A patched message must decode to what we meant: check one (the cost is paid once).
    probe = templates[0]
    frame = b"".join((probe.head, b"123456", probe.middle, b"ABCD00000042", probe.tail))
    (payload,) = dialect.frame_decoder().feed(frame)
    decoded = dialect.decode(payload)
    if (decoded["11"], decoded["37"]) != ("123456", "ABCD00000042"):
        raise RuntimeError(f"patched template decodes to 11={decoded['11']!r} 37={decoded['37']!r}")
    return templates


def run_id() -> str:
    """A fresh run id for field 37, so runs never collide in the switch's dedupe key."""
    alphabet = string.ascii_uppercase + string.digits
    return "".join(random.SystemRandom().choice(alphabet) for _ in range(RUN_ID_LENGTH))


class AnswerReader:
    """Reads the MTI, fields 11, 37 and 39 of a bank87 message without decoding the rest.

    A full pyiso8583 decode costs about 40 us; walking the bitmap to field 39 costs a
    few. Anything the walk does not expect (a field format it does not know, a
    truncated message) falls back to the full decode.
    """

    WANTED = (11, 37, 39)

    def __init__(self, dialect: Dialect):
        self.dialect = dialect
        spec = dialect.spec
        if spec["t"]["data_enc"] != "ascii" or spec["p"]["data_enc"] != "b" or spec["p"]["max_len"] != 8:
            raise ValueError(f"{dialect.name}: the fast reader needs an ASCII MTI and a binary bitmap")
        steps = []
        for number in range(2, max(self.WANTED) + 1):
            layout = spec[str(number)]
            simple = (layout.get("len_enc", "ascii") == "ascii" and layout.get("len_count", "bytes") == "bytes"
                      and layout["data_enc"] in ("ascii", "b"))
            steps.append((number, 1 << (64 - number), layout["len_type"], layout["max_len"], simple))
        self._steps = tuple(steps)

    def read(self, payload: bytes) -> tuple[bytes, bytes, bytes]:
        """(MTI, 11 + 37, 39), each as bytes; b"" for an absent field. ValueError if it does not read."""
        try:
            return self._walk(payload)
        except (ValueError, IndexError):
            return self._decode(payload)

    def _walk(self, payload: bytes) -> tuple[bytes, bytes, bytes]:
        bitmap = int.from_bytes(payload[4:12], "big")
        # The secondary bitmap only concerns fields above 64: skip it.
        position = 20 if bitmap >> 63 else 12
        stan = rrn = code = b""
        for number, mask, len_type, max_len, simple in self._steps:
            if not bitmap & mask:
                continue
            if not simple:
                raise ValueError(f"field {number} is not in a format the fast reader walks")
            if len_type:
                size = int(payload[position:position + len_type])
                position += len_type
            else:
                size = max_len
            end = position + size
            if number == 11:
                stan = payload[position:end]
            elif number == 37:
                rrn = payload[position:end]
            elif number == 39:
                code = payload[position:end]
            position = end
        if position > len(payload):
            raise ValueError("truncated message")
        return payload[:4], stan + rrn, code

    def _decode(self, payload: bytes) -> tuple[bytes, bytes, bytes]:
        try:
            fields = self.dialect.decode(payload)
        except RemoteProtocolError as exc:
            raise ValueError(str(exc)) from None
        return (fields["t"].encode(), (fields.get("11", "") + fields.get("37", "")).encode(),
                fields.get("39", "").encode())


# -- measurement ------------------------------------------------------------------------
@dataclass
class Second:
    """What happened in one second of the run (by the time it happened)."""
    t: int
    offered: int = 0
    sent: int = 0
    answered: int = 0
    approved: int = 0
    codes: Counter = field(default_factory=Counter)    # response codes other than 00
    errors: Counter = field(default_factory=Counter)   # client-side errors
    latencies_us: list[int] = field(default_factory=list)
    in_flight: int = 0

    def summary(self) -> dict:
        ordered = sorted(self.latencies_us)
        percentile = (lambda share: _nearest_rank(ordered, share) / 1000) if ordered else (lambda share: None)
        codes = {"00": self.approved, **{code.decode(): n for code, n in self.codes.items()}} if self.answered \
            else {}
        return {"t": self.t, "offered": self.offered, "sent": self.sent, "answered": self.answered,
                "approved": self.approved, "codes": codes, "errors": dict(self.errors),
                "p50_ms": percentile(0.50), "p99_ms": percentile(0.99),
                "max_ms": ordered[-1] / 1000 if ordered else None, "in_flight": self.in_flight}


class Recorder:
    """Totals, the latency and send-lag histograms, and the per-second series."""

    def __init__(self):
        self.latency = new_histogram()
        self.send_lag = new_histogram()   # scheduled -> written: how far the generator itself fell behind
        self.offered = self.sent = self.answered = self.approved = 0
        self.codes: Counter = Counter()
        self.errors: Counter = Counter()
        self.late_answers = 0     # answers after their request timed out
        self.unexpected = 0       # frames that are not answers to anything we sent
        self.series: list[dict] = []
        self.started = 0.0
        self.last_answer_at = 0.0
        self._current = Second(0)

    def start(self, now: float) -> None:
        self.started = now

    def roll(self, now: float, in_flight: int) -> None:
        """Close every second that has fully passed."""
        if not self.started:
            return   # answers before the clock starts (the sign-on) belong to no second
        current = self._current
        while now - self.started >= current.t + 1:
            current.in_flight = in_flight
            self.series.append(current.summary())
            current = self._current = Second(current.t + 1)

    @property
    def second(self) -> Second:
        return self._current

    def finish(self, now: float, in_flight: int) -> None:
        self.roll(now, in_flight)
        current = self._current
        if current.offered or current.answered or current.errors:
            current.in_flight = in_flight
            self.series.append(current.summary())
        self._current = Second(current.t + 1)

    def error(self, kind: str, count: int = 1) -> None:
        self.errors[kind] += count
        self._current.errors[kind] += count

    def answer(self, code: bytes, latency: float) -> None:
        microseconds = _clamp_us(latency)
        self.latency.record_value(microseconds)
        second = self._current
        second.latencies_us.append(microseconds)
        second.answered += 1
        self.answered += 1
        if code == APPROVED:
            second.approved += 1
            self.approved += 1
        else:
            second.codes[code] += 1
            self.codes[code] += 1


# -- the load -------------------------------------------------------------------------
@dataclass
class LoadSpec:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    rate: float = 1000.0                 # top-ups a second
    duration: float = 10.0               # seconds of sending
    connections: int = DEFAULT_CONNECTIONS
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    answer_timeout: float = DEFAULT_ANSWER_TIMEOUT
    acquirer_id: str = DEFAULT_ACQUIRER_ID
    run_id: str = ""                     # 4 characters; empty: a random one
    label: str = "load"
    progress: bool = True                # a line on stdout every second
    seed: int | None = None

    @property
    def total(self) -> int:
        return int(round(self.rate * self.duration))


class LoadError(Exception):
    """The load could not start (no connection, sign-on refused)."""


class _Connection(asyncio.Protocol):
    """One persistent bank87 connection; its answers go straight to the generator."""

    def __init__(self, generator: LoadGenerator, index: int):
        self.generator = generator
        self.index = index
        self.decoder = FrameDecoder(generator.dialect.header, generator.dialect.max_frame)
        self.waiting: dict[bytes, float] = {}   # 11 + 37 -> scheduled send time, in send order
        self.transport: asyncio.Transport | None = None
        self.alive = False
        self.network_answer: asyncio.Future | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.alive = True

    def connection_lost(self, exc) -> None:
        self.alive = False
        self.generator.connection_lost(self, exc)

    def data_received(self, data: bytes) -> None:
        try:
            frames = self.decoder.feed(data)
        except RemoteProtocolError as exc:
            log.error("connection %d: %s; closing", self.index, exc)
            self.transport.close()
            return
        self.generator.frames_received(self, frames)


class LoadGenerator:
    def __init__(self, spec: LoadSpec):
        if spec.rate <= 0 or spec.duration <= 0:
            raise ValueError("rate and duration must be positive")
        if spec.total >= MAX_REQUESTS:
            raise ValueError(f"at most {MAX_REQUESTS - 1} requests a run (field 37 has {SEQUENCE_DIGITS} digits)")
        self.spec = spec
        self.run_id = spec.run_id or run_id()
        if len(self.run_id) != RUN_ID_LENGTH:
            raise ValueError(f"run id must be {RUN_ID_LENGTH} characters, not {self.run_id!r}")
        self.dialect = load_dialect("bank87")
        self.reader = AnswerReader(self.dialect)
        self.templates = build_templates(self.dialect, spec.acquirer_id, seed=spec.seed)
        self.recorder = Recorder()
        self.connections: list[_Connection] = []
        self.in_flight = 0
        self._closing = False
        self._drained: asyncio.Event | None = None
        self._sending_done = False
        self._printed = 0           # series entries already shown as progress lines
        self.cpu_s = 0.0
        self.started_at = ""        # wall clock, ISO 8601
        self.started_epoch = 0.0

    # -- life cycle -------------------------------------------------------------------
    async def run(self) -> dict:
        loop = asyncio.get_running_loop()
        self._drained = asyncio.Event()
        await self._connect(loop)
        ticker = None
        try:
            await self._sign_on()
            # Everything built so far lives to the end: keep the collector from scanning it again and again.
            gc.collect()
            gc.freeze()
            self.started_epoch = time.time()
            self.started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
            cpu_before = time.process_time()
            self.recorder.start(time.perf_counter())
            ticker = loop.create_task(self._tick())
            await self._send_all()
            await self._drain()
        finally:
            if ticker is not None:
                ticker.cancel()
            self._closing = True
            for connection in self.connections:
                if connection.transport is not None:
                    connection.transport.close()
            gc.unfreeze()
        self.cpu_s = time.process_time() - cpu_before
        self.recorder.finish(time.perf_counter(), self.in_flight)
        self._print_progress()
        return self.result()

    async def _connect(self, loop) -> None:
        for index in range(self.spec.connections):
            try:
                _, connection = await asyncio.wait_for(
                    loop.create_connection(lambda i=index: _Connection(self, i), self.spec.host, self.spec.port),
                    CONNECT_TIMEOUT)
            except (OSError, asyncio.TimeoutError) as exc:
                for opened in self.connections:
                    opened.transport.close()
                raise LoadError(f"cannot connect to {self.spec.host}:{self.spec.port}: {exc!r}") from None
            self.connections.append(connection)

    async def _sign_on(self) -> None:
        loop = asyncio.get_running_loop()
        now = datetime.now(timezone.utc).strftime("%m%d%H%M%S")
        for connection in self.connections:
            connection.network_answer = loop.create_future()
            connection.transport.write(self.dialect.pack(
                {"t": "0800", "7": now, "11": f"{connection.index + 1:06d}", "70": "001"}))
        for connection in self.connections:
            try:
                code = await asyncio.wait_for(connection.network_answer, SIGN_ON_TIMEOUT)
            except asyncio.TimeoutError:
                raise LoadError(f"no answer to the sign-on within {SIGN_ON_TIMEOUT} s") from None
            if code != APPROVED:
                raise LoadError(f"sign-on refused: 39={code.decode(errors='replace')!r}")

    async def _send_all(self) -> None:
        rate, total = self.spec.rate, self.spec.total
        started = self.recorder.started
        clock = time.perf_counter
        sent = 0
        while sent < total:
            now = clock()
            due = min(total, int((now - started) * rate) + 1)
            if due > sent:
                self._send(sent, due, now)
                sent = due
                if sent >= total:
                    break
            # Sleep until the next request is due, but at least one tick: what falls due meanwhile
            # goes out in one batch at the next wake-up.
            await asyncio.sleep(max(SEND_TICK, started + sent / rate - clock()))
        self._sending_done = True

    def _send(self, first: int, last: int, now: float) -> None:
        """Send requests first..last-1 (all due by `now`): one write per connection."""
        recorder = self.recorder
        recorder.roll(now, self.in_flight)
        second = recorder.second
        connections = self.connections
        count = len(connections)
        batches: list[list[bytes]] = [[] for _ in range(count)]
        templates = self.templates
        template_count = len(templates)
        started, rate = recorder.started, self.spec.rate
        cap = self.spec.max_in_flight
        run_prefix = self.run_id.encode("ascii")
        record_lag = recorder.send_lag.record_value
        overloaded = lost = sent = 0
        for n in range(first, last):
            if self.in_flight >= cap:
                overloaded += 1
                continue
            connection = connections[n % count]
            if not connection.alive:
                lost += 1
                continue
            scheduled = started + n / rate
            stan = b"%06d" % (n % STAN_MODULUS + 1)
            rrn = run_prefix + b"%08d" % n
            template = templates[n % template_count]
            batches[n % count] += (template.head, stan, template.middle, rrn, template.tail)
            connection.waiting[stan + rrn] = scheduled
            self.in_flight += 1
            sent += 1
            record_lag(_clamp_us(now - scheduled))
        for connection, batch in zip(connections, batches):
            if batch:
                connection.transport.write(b"".join(batch))
        offered = last - first
        recorder.offered += offered
        recorder.sent += sent
        second.offered += offered
        second.sent += sent
        if overloaded:
            recorder.error(OVERLOAD_CLIENT, overloaded)
        if lost:
            recorder.error(CONNECTION_LOST, lost)

    def frames_received(self, connection: _Connection, frames: list[bytes]) -> None:
        now = time.perf_counter()
        recorder = self.recorder
        recorder.roll(now, self.in_flight)
        waiting = connection.waiting
        read = self.reader.read
        answered = 0
        for frame in frames:
            try:
                mti, key, code = read(frame)
            except ValueError as exc:
                log.warning("connection %d: unreadable answer: %s", connection.index, exc)
                recorder.unexpected += 1
                continue
            if mti != b"0210":
                if mti == b"0810" and connection.network_answer is not None \
                        and not connection.network_answer.done():
                    connection.network_answer.set_result(code)
                else:
                    recorder.unexpected += 1
                continue
            scheduled = waiting.pop(key, None)
            if scheduled is None:
                recorder.late_answers += 1
                continue
            answered += 1
            recorder.answer(code, now - scheduled)
        if answered:
            recorder.last_answer_at = now
            self.in_flight -= answered
            if self._sending_done and not self.in_flight:
                self._drained.set()

    def connection_lost(self, connection: _Connection, exc) -> None:
        if self._closing:
            return
        log.error("connection %d lost (%s): %d requests in flight on it", connection.index, exc or "closed",
                  len(connection.waiting))
        if connection.network_answer is not None and not connection.network_answer.done():
            connection.network_answer.set_exception(LoadError("connection closed before the sign-on answer"))
        self._give_up(connection, list(connection.waiting), CONNECTION_LOST)

    def _give_up(self, connection: _Connection, keys: list[bytes], kind: str) -> None:
        for key in keys:
            del connection.waiting[key]
        self.in_flight -= len(keys)
        if keys:
            self.recorder.error(kind, len(keys))
        if self._sending_done and not self.in_flight:
            self._drained.set()

    def _expire(self, deadline: float) -> None:
        """Requests scheduled before `deadline` and still unanswered are timeouts."""
        for connection in self.connections:
            expired = []
            for key, scheduled in connection.waiting.items():   # in send order: stop at the first young one
                if scheduled > deadline:
                    break
                expired.append(key)
            self._give_up(connection, expired, TIMEOUT)

    async def _drain(self) -> None:
        if self.in_flight:
            try:
                await asyncio.wait_for(self._drained.wait(), self.spec.answer_timeout)
            except asyncio.TimeoutError:
                pass
        for connection in self.connections:
            self._give_up(connection, list(connection.waiting), TIMEOUT)

    async def _tick(self) -> None:
        """Once a second: time out old requests and print the second that just ended."""
        recorder = self.recorder
        while True:
            await asyncio.sleep(recorder.started + len(recorder.series) + 1 + 0.01 - time.perf_counter())
            now = time.perf_counter()
            self._expire(now - self.spec.answer_timeout)
            recorder.roll(now, self.in_flight)
            self._print_progress()

    def _print_progress(self) -> None:
        if self.spec.progress:
            for second in self.recorder.series[self._printed:]:
                print(progress_line(self.spec.label, second), flush=True)
        self._printed = len(self.recorder.series)

    # -- the result -------------------------------------------------------------------
    def result(self) -> dict:
        recorder, spec = self.recorder, self.spec
        answer_window = recorder.last_answer_at - recorder.started if recorder.answered else 0.0
        return {
            "label": spec.label,
            "target": f"{spec.host}:{spec.port}",
            "spec": {key: value for key, value in asdict(spec).items() if key not in ("progress",)},
            "run_id": self.run_id,
            "started_at": self.started_at,
            "started_epoch": self.started_epoch,
            "offered": recorder.offered,
            "sent": recorder.sent,
            "answered": recorder.answered,
            "approved": recorder.approved,
            "codes": ({"00": recorder.approved} if recorder.approved else {})
            | {code.decode(): n for code, n in sorted(recorder.codes.items())},
            "errors": dict(sorted(recorder.errors.items())),
            "late_answers": recorder.late_answers,
            "unexpected": recorder.unexpected,
            "offered_rate": spec.rate,
            "achieved_rate": round(recorder.answered / answer_window, 1) if answer_window > 0 else 0.0,
            "answer_window_s": round(answer_window, 3),
            "cpu_s": round(self.cpu_s, 3),   # the load generator's own CPU time, sending and measuring
            "latency_ms": latency_summary(recorder.latency),
            "send_lag_ms": latency_summary(recorder.send_lag),
            "series": recorder.series,
            "histogram": encode_histogram(recorder.latency),
        }


def progress_line(label: str, second: dict) -> str:
    p99 = f"{second['p99_ms']:7.1f} ms" if second["p99_ms"] is not None else "      - ms"
    refusals = {code: n for code, n in second["codes"].items() if code != "00"}
    problems = ", ".join(f"{kind}={n}" for kind, n in [*refusals.items(), *second["errors"].items()]) or "-"
    return (f"[{label}] {second['t'] + 1:4d}s  offered {second['offered']:6d}/s  answered {second['answered']:6d}/s"
            f"  approved {second['approved']:6d}  p99 {p99}  in flight {second['in_flight']:5d}  errors {problems}")


async def run_load(spec: LoadSpec) -> dict:
    """Run one load and return its result (the JSON the CLI writes)."""
    return await LoadGenerator(spec).run()


# -- command line -----------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--rate", type=float, default=1000.0, help="top-ups a second (default 1000)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of sending (default 10)")
    parser.add_argument("--connections", type=int, default=DEFAULT_CONNECTIONS)
    parser.add_argument("--max-in-flight", type=int, default=DEFAULT_MAX_IN_FLIGHT)
    parser.add_argument("--answer-timeout", type=float, default=DEFAULT_ANSWER_TIMEOUT)
    parser.add_argument("--acquirer-id", default=DEFAULT_ACQUIRER_ID, help="field 32")
    parser.add_argument("--run-id", default="", help=f"{RUN_ID_LENGTH} characters at the head of every field 37")
    parser.add_argument("--label", default="load", help="name of this load in progress lines and the result")
    parser.add_argument("--out", default=None, help="write the result as JSON here")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    return parser


def main(argv: list[str] | None = None) -> int:
    from switch.app.runner import run

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    spec = LoadSpec(host=args.host, port=args.port, rate=args.rate, duration=args.duration,
                    connections=args.connections, max_in_flight=args.max_in_flight,
                    answer_timeout=args.answer_timeout, acquirer_id=args.acquirer_id, run_id=args.run_id,
                    label=args.label, progress=not args.quiet)
    try:
        result = run(run_load(spec))
    except LoadError as exc:
        print(f"loadgen: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    text = json.dumps(result, indent=1)
    if args.out:
        Path(args.out).write_text(text)
    latency = result["latency_ms"]
    print(f"[{spec.label}] offered {result['offered']} sent {result['sent']} answered {result['answered']} "
          f"approved {result['approved']} errors {result['errors'] or '-'}; achieved {result['achieved_rate']}/s; "
          f"p50 {latency['p50']} p99 {latency['p99']} max {latency['max']} ms", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
