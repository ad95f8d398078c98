"""pyiso8583 against the compiled codec (switch.wire.compiled), with pytest-benchmark.

    python -m pytest bench/test_codec_speed.py --benchmark-only

Three implementations of the same operation on the same message: pyiso8583 (the reference, called as
Dialect does: a copy of the dict in, bytes out), the compiled codec's table-driven tier alone
(specialised_max=0) and the compiled codec as the switch would run it (straight-line code generated
for the bitmap / key sequence after the first message). The speed-ups (pyiso8583's median over the
compiled one's) are printed after pytest-benchmark's table, in the "target vs measured" lines of
bench/conftest.py.

Not part of the normal test run (pyproject's testpaths is tests/); tests/test_compiled_codec.py is
what proves the compiled codec byte-identical to pyiso8583.
"""

from __future__ import annotations

import iso8583
import pytest

from switch.wire import load_dialect
from switch.wire.compiled import compile_codec

SPEED_UP_GOAL = 3.0   # what makes the compiled path worth its code

# A bank87 top-up request as the acquirers send it, and an opa87 approval as the operators answer.
MESSAGES = {
    "bank87 0200": ("bank87", {
        "t": "0200", "2": "6037991234567890", "3": "000000", "4": "000000050000", "7": "1122030704",
        "11": "004217", "12": "030704", "13": "1122", "32": "603799", "37": "ABCD00000042", "41": "BENCH001",
        "42": "AIRSWITCHBENCH1", "48": "CH003WEB", "49": "364", "103": "09121234567"}),
    "opa87 0210": ("opa87", {
        "2": "989121234567", "3": "000000", "4": "000000050000", "7": "1122030704", "11": "004217",
        "32": "99001", "37": "ABCD00000042", "41": "AIRSW001", "49": "364", "t": "0210", "39": "00",
        "38": "123456", "62": "MCI0000000001"}),
}
IMPLEMENTATIONS = ("pyiso8583", "compiled-tables", "compiled")
_medians: dict[tuple[str, str, str], float] = {}   # (operation, message, implementation) -> seconds


def _codec(message: str, implementation: str):
    """(encode, decode) for that message's dialect, as `implementation` does them."""
    spec = load_dialect(MESSAGES[message][0]).spec
    if implementation == "pyiso8583":
        return (lambda fields: bytes(iso8583.encode(dict(fields), spec)[0]),
                lambda payload: iso8583.decode(payload, spec)[0])
    codec = compile_codec(spec, specialised_max=0 if implementation == "compiled-tables" else 64)
    assert codec is not None
    return codec.encode, codec.decode


def _record(benchmark, targets, operation: str, message: str, implementation: str) -> None:
    """Keep the median; once pyiso8583 and a compiled implementation are both measured (in whichever
    order they ran), record the speed-up against SPEED_UP_GOAL."""
    stats = getattr(benchmark, "stats", None)
    if stats is None:   # --benchmark-disable
        return
    _medians[(operation, message, implementation)] = stats.stats.median
    reference = _medians.get((operation, message, "pyiso8583"))
    if reference is None:
        return
    for compiled in ([implementation] if implementation != "pyiso8583" else IMPLEMENTATIONS[1:]):
        median = _medians.get((operation, message, compiled))
        if median is not None:
            targets.record(f"{operation} {message}: {compiled} speed-up", reference / median, SPEED_UP_GOAL,
                           "x", higher_is_better=True,
                           detail=f"pyiso8583 {reference * 1e6:.2f} us, {compiled} {median * 1e6:.2f} us")


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("message", MESSAGES)
def test_encode(benchmark, targets, message, implementation):
    spec = load_dialect(MESSAGES[message][0]).spec
    fields = MESSAGES[message][1]
    encode, _ = _codec(message, implementation)
    assert encode(fields) == bytes(iso8583.encode(dict(fields), spec)[0])   # (and the compiled one learns)
    benchmark.group = f"encode {message}"
    benchmark(encode, fields)
    _record(benchmark, targets, "encode", message, implementation)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
@pytest.mark.parametrize("message", MESSAGES)
def test_decode(benchmark, targets, message, implementation):
    spec = load_dialect(MESSAGES[message][0]).spec
    payload = bytes(iso8583.encode(dict(MESSAGES[message][1]), spec)[0])
    _, decode = _codec(message, implementation)
    assert decode(payload) == iso8583.decode(payload, spec)[0]
    benchmark.group = f"decode {message}"
    benchmark(decode, payload)
    _record(benchmark, targets, "decode", message, implementation)

