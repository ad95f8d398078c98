"""The benchmark's load generator on real sockets: what it reports adds up.

A bare bank87 responder runs as its own process (as in `airswitch bench`); the load generator runs
here for two seconds at a low rate. Nothing here times anything: the numbers of the benchmark are
for bench/, the invariants of its bookkeeping are for the tests.
"""

from __future__ import annotations

import asyncio
import os
import select
import subprocess
import sys
from pathlib import Path

import pytest

from bench import report
from bench.loadgen import (OVERLOAD_CLIENT, TIMEOUT, AnswerReader, LoadSpec, decode_histogram, latency_summary,
                           run_load)
from bench.responder import LISTENING, Responder
from switch.wire import load_dialect

ROOT = Path(__file__).resolve().parents[1]
RATE = 200.0
DURATION = 2.0
START_TIMEOUT = 10.0   # seconds for the responder process to listen
STOP_TIMEOUT = 5.0


@pytest.fixture
def responder_port():
    """A `python -m bench.responder` process on a free port; its port."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    process = subprocess.Popen([sys.executable, "-m", "bench.responder", "--port", "0"], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        ready, _, _ = select.select([process.stdout], [], [], START_TIMEOUT)
        line = process.stdout.readline() if ready else ""
        assert line.startswith(LISTENING), f"the responder did not start: {line!r}"
        yield int(line.rsplit(":", 1)[1])
    finally:
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT)


def assert_adds_up(result: dict) -> None:
    """Every request offered is answered or counted as exactly one error; the histogram holds every answer."""
    assert result["offered"] == result["answered"] + sum(result["errors"].values())
    assert result["sent"] == result["offered"] - result["errors"].get(OVERLOAD_CLIENT, 0)
    assert result["answered"] == sum(result["codes"].values())
    assert decode_histogram(result["histogram"]).get_total_count() == result["answered"]
    assert result["latency_ms"]["count"] == result["answered"]
    series = result["series"]
    for key in ("offered", "sent", "answered", "approved"):
        assert sum(second[key] for second in series) == result[key], key
    errors_by_second: dict[str, int] = {}
    for second in series:
        for kind, count in second["errors"].items():
            errors_by_second[kind] = errors_by_second.get(kind, 0) + count
    assert errors_by_second == result["errors"]


def test_load_against_the_bare_responder_is_all_answered_and_adds_up(responder_port):
    spec = LoadSpec(port=responder_port, rate=RATE, duration=DURATION, connections=2, progress=False)
    result = asyncio.run(run_load(spec))

    assert result["offered"] == int(RATE * DURATION)
    assert result["errors"] == {}
    assert result["sent"] == result["answered"] == result["approved"] == result["offered"]
    assert result["codes"] == {"00": result["offered"]}
    assert result["late_answers"] == result["unexpected"] == 0
    assert_adds_up(result)
    header, row = report.table([report.phase_row(result)])
    assert dict(zip(header, row))["39=00"] == str(result["offered"])


def test_requests_over_the_in_flight_cap_are_not_sent_and_unanswered_ones_time_out():
    class Silent(Responder):
        """Signs on, never answers a top-up."""
        def answer(self, request):
            return super().answer(request) if request.get("t") == "0800" else None

    async def scenario() -> dict:
        silent = Silent()
        port = await silent.start("127.0.0.1", 0)
        try:
            # The answer timeout outlasts the sending, so no slot frees up before the last request is due.
            return await run_load(LoadSpec(port=port, rate=100.0, duration=1.0, connections=2, max_in_flight=10,
                                           answer_timeout=1.5, progress=False))
        finally:
            await silent.stop()

    result = asyncio.run(scenario())

    assert result["offered"] == 100
    assert result["sent"] == 10
    assert result["errors"] == {OVERLOAD_CLIENT: 90, TIMEOUT: 10}
    assert result["answered"] == 0
    assert latency_summary(decode_histogram(result["histogram"]))["p99"] is None
    assert_adds_up(result)


@pytest.mark.parametrize("mti, fields", [
    ("0210", {"2": "6037991234567890", "3": "000000", "4": "000000050000", "7": "1122021500", "11": "004217",
              "12": "021500", "13": "1122", "32": "603799", "37": "ABCD00000042", "38": "123456", "39": "00",
              "41": "BENCH001", "42": "AIRSWITCHBENCH1", "44": "MCI", "48": "OR013MCI0000000001",
              "49": "364", "103": "09121234567"}),
    ("0210", {"11": "000001", "37": "ZZZZ99999999", "39": "91"}),
    ("0810", {"7": "1122021500", "11": "000003", "39": "00", "70": "001"}),
])
def test_the_answer_reader_reads_what_the_full_decode_reads(mti, fields):
    dialect = load_dialect("bank87")
    payload = dialect.encode({"t": mti, **fields})
    expected = (mti.encode(), (fields["11"] + fields.get("37", "")).encode(), fields["39"].encode())

    assert AnswerReader(dialect).read(payload) == expected
    assert AnswerReader(dialect)._decode(payload) == expected
