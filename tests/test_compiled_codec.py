"""switch.wire.compiled against pyiso8583, the reference: byte for byte, dict for dict, and the same
inputs rejected.

Each dialect is tried with two compiled codecs: the table-driven one alone (specialised_max=0) and
one that generates straight-line code for every bitmap and key sequence it meets (no cap), each
called twice per input so that the second call goes through the generated code.
"""

from __future__ import annotations

import copy
import os
import random

import iso8583
import iso8583.specs
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from switch.wire import load_dialect
from switch.wire.compiled import SPECIALISED_MAX, CompiledCodec, compile_codec

DIALECTS = ("bank87", "opa87", "opb93")
SPECS = {name: load_dialect(name).spec for name in DIALECTS}
# Fields the dialects' messages carry (rules, adapters, simulators), tried more often than the rest.
USED = {
    "bank87": [2, 3, 4, 7, 11, 12, 13, 32, 37, 38, 39, 41, 42, 44, 48, 49, 54, 70, 90, 103],
    "opa87": [2, 3, 4, 7, 11, 12, 13, 32, 37, 38, 39, 41, 49, 62, 70],
    "opb93": [3, 4, 11, 12, 24, 32, 37, 38, 39, 49, 56, 63, 70, 102],
}
ALL_FIELDS = [n for n in range(2, 129) if n != 65]
REJECTED = "rejected"
# AIRSWITCH_CODEC_EXAMPLES=5000 for a deep run; the default keeps the file to ~15 s.
EXAMPLES = int(os.environ.get("AIRSWITCH_CODEC_EXAMPLES", "50"))
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def codecs_for(name: str) -> list[CompiledCodec]:
    spec = SPECS[name]
    return [compile_codec(spec, specialised_max=0), compile_codec(spec, specialised_max=10**9)]


CODECS = {name: codecs_for(name) for name in DIALECTS}


# -- the reference and the comparison ----------------------------------------------------------
def ref_encode(spec: dict, fields: dict):
    try:
        return bytes(iso8583.encode(dict(fields), spec)[0])
    except Exception:   # noqa: BLE001 - any failure is a rejection
        return REJECTED


def ref_decode(spec: dict, payload: bytes):
    try:
        return iso8583.decode(payload, spec)[0]
    except Exception:   # noqa: BLE001 - including the KeyError of a field the spec does not define
        return REJECTED


def attempt(function, argument):
    try:
        return function(argument)
    except Exception:   # noqa: BLE001 - the contract: any exception is a rejection
        return REJECTED


def check_encode(name: str, fields: dict):
    """Every compiled encoder gives pyiso8583's bytes, or rejects with it; returns the reference."""
    expected = ref_encode(SPECS[name], fields)
    before = copy.deepcopy(fields)
    for codec in CODECS[name]:
        for _ in range(2):
            assert attempt(codec.encode, fields) == expected
            assert fields == before and list(fields) == list(before)   # never changed
    return expected


def check_decode(name: str, payload: bytes):
    """Every compiled decoder gives pyiso8583's dict (key order too), or rejects with it."""
    expected = ref_decode(SPECS[name], payload)
    for codec in CODECS[name]:
        for _ in range(2):
            got = attempt(codec.decode, payload)
            assert got == expected, (payload, got, expected)
            if expected is not REJECTED:
                assert list(got) == list(expected)
    return expected


# -- strategies ----------------------------------------------------------------------------------
ASCII = st.characters(max_codepoint=127)
PRINTABLE = st.characters(min_codepoint=32, max_codepoint=126)


def lengths(low: int, high: int):
    """A length in [low, high], often at the edges."""
    edges = [n for n in {low, low + 1, high - 1, high} if low <= n <= high]
    return st.one_of(st.sampled_from(edges), st.integers(low, min(high, low + 40)), st.integers(low, high))


def sized(n: int, alphabet) -> st.SearchStrategy[str]:
    """n characters of `alphabet`; a long value repeats a short random piece (cheaper to generate)."""
    if n <= 24:
        return st.text(alphabet, min_size=n, max_size=n)
    return st.text(alphabet, min_size=1, max_size=12).map(lambda piece: (piece * n)[:n])


def value_for(field_spec: dict):
    """A value pyiso8583 accepts for this field."""
    fixed = field_spec["len_type"] == 0
    longest = min(field_spec["max_len"], 10 ** field_spec["len_type"] - 1)
    size = st.just(field_spec["max_len"]) if fixed else lengths(0, longest)
    if field_spec["data_enc"] == "b":
        case = st.sampled_from([str.upper, str.lower])
        hex_digits = st.sampled_from("0123456789ABCDEF")
        return st.tuples(size.flatmap(lambda n: sized(2 * n, hex_digits)), case).map(lambda pair: pair[1](pair[0]))
    return size.flatmap(lambda n: sized(n, st.one_of(PRINTABLE, ASCII)))


@st.composite
def messages(draw, name: str) -> dict:
    spec = SPECS[name]
    numbers = draw(st.sets(st.sampled_from(USED[name]), max_size=12))
    numbers |= draw(st.sets(st.sampled_from(ALL_FIELDS), max_size=4))
    if draw(st.booleans()):
        numbers |= {64 if draw(st.booleans()) else 128}
    fields = {str(n): draw(value_for(spec[str(n)])) for n in numbers}
    mti = draw(st.one_of(st.sampled_from(["0200", "0210", "0800", "0810", "0400", "1200", "1210"]),
                         st.text(ASCII, min_size=4, max_size=4)))
    items = [("t", mti), *fields.items()]
    draw(st.randoms(use_true_random=False)).shuffle(items)   # any key order
    return dict(items)


# -- compile_codec -----------------------------------------------------------------------------
def test_the_iso_dialects_compile_and_pos87_does_not():
    for name in DIALECTS:
        assert isinstance(compile_codec(SPECS[name]), CompiledCodec)
    assert compile_codec(load_dialect("pos87").spec) is None          # BCD
    assert compile_codec(iso8583.specs.default) is not None
    assert compile_codec(iso8583.specs.default_ascii) is not None


def test_specs_it_cannot_compile_give_none():
    default = iso8583.specs.default
    with_header = {**default, "h": {**default["h"], "max_len": 6, "len_type": 0}}
    mixed_bitmaps = {**default, "1": {**default["1"], "data_enc": "ascii", "max_len": 16}}
    bcd_length = {**default, "35": {**default["35"], "len_enc": "bcd"}}
    nibbles = {**default, "2": {**default["2"], "len_count": "nibbles"}}
    ebcdic = {**default, "43": {**default["43"], "data_enc": "cp500"}}
    tertiary = {**default, "129": dict(default["2"])}
    binary_mti = {**default, "t": {**default["t"], "data_enc": "b"}}
    for spec in (with_header, mixed_bitmaps, bcd_length, nibbles, ebcdic, tertiary, binary_mti):
        assert compile_codec(spec) is None


def simple_value(field_spec: dict) -> str:
    size = field_spec["max_len"] if field_spec["len_type"] == 0 else 1
    return "AB" * size if field_spec["data_enc"] == "b" else "1" * size


def test_generated_code_is_capped():
    spec = SPECS["bank87"]
    codec = compile_codec(spec)
    pool = [3, 4, 11, 32, 37, 41, 70, 103]
    for n in range(1, SPECIALISED_MAX * 2):          # distinct bitmaps and key sequences
        message = {"t": "0800", **{str(f): simple_value(spec[str(f)]) for i, f in enumerate(pool) if n >> i & 1}}
        payload = codec.encode(message)
        assert payload == ref_encode(spec, message)
        assert codec.decode(payload) == iso8583.decode(payload, spec)[0]
    cells = [c.cell_contents for c in codec.decode.__closure__ + codec.encode.__closure__]
    caches = [cell for cell in cells if isinstance(cell, dict) and cell and all(callable(v) for v in cell.values())]
    assert len(caches) == 2 and all(len(cache) == SPECIALISED_MAX for cache in caches)


# -- encode --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", DIALECTS)
@SETTINGS
@given(data=st.data())
def test_encode_is_byte_identical_and_decode_gives_pyiso8583s_dict(name, data):
    message = data.draw(messages(name))
    payload = check_encode(name, message)
    assert payload is not REJECTED
    assert check_decode(name, payload) is not REJECTED


@pytest.mark.parametrize("name", DIALECTS)
@SETTINGS
@given(data=st.data())
def test_invalid_field_values_are_rejected_by_both(name, data):
    spec = SPECS[name]
    message = data.draw(messages(name))
    present = sorted(int(key) for key in message if key != "t")
    number = data.draw(st.sampled_from(present) if present and data.draw(st.booleans())
                       else st.sampled_from(ALL_FIELDS))
    message[str(number)] = data.draw(value_for(spec[str(number)]))
    assert check_encode(name, message) is not REJECTED   # the same keys, valid: generated code learnt
    how = data.draw(st.sampled_from(sorted(invalid_values(spec[str(number)]))))
    message[str(number)] = invalid_values(spec[str(number)])[how]
    check_encode(name, message)


def invalid_values(field_spec: dict) -> dict:
    """Values to try in place of a valid one (pyiso8583 rejects most, not all: "lower hex")."""
    fixed = field_spec["len_type"] == 0
    binary = field_spec["data_enc"] == "b"
    longest = min(field_spec["max_len"], 10 ** field_spec["len_type"] - 1)
    unit = "AB" if binary else "7"
    size = field_spec["max_len"] if fixed else 1
    return {
        "too long": unit * (longest + 1),
        "much too long": unit * (longest + 3),
        "too short": unit * max(field_spec["max_len"] - 1, 0) if fixed else unit,
        "non-ascii": "é" * size,
        "non-ascii, one": "7" * (size - 1) + "\x80" if size else "\x80",
        "int": 7,
        "none": None,
        "bytes": b"AB" * size,
        "str subclass": type("Text", (str,), {})(unit * size),
        "odd hex": "ABC",
        "non-hex": "ZZ" * size,
        "lower hex": "ab" * size,
    }


@pytest.mark.parametrize("name", DIALECTS)
def test_invalid_values_of_each_kind_of_field_in_both_tiers(name):
    spec = SPECS[name]
    # fixed text, LLVAR, LLLVAR, fixed binary (52, 64, 128), LLLVAR binary (55 in the binary-bitmap specs)
    for number in (3, 2, 48, 52, 64, 128, 55, 103):
        field_spec = spec[str(number)]
        for how, value in invalid_values(field_spec).items():
            for place in ("first", "middle", "last"):
                valid = {"t": "0200", "11": "000001", "41": "TERM0001"}
                items = list(valid.items())
                index = {"first": 1, "middle": 2, "last": 3}[place]
                items.insert(index, (str(number), simple_value(field_spec)))
                message = dict(items)
                assert check_encode(name, message) is not REJECTED   # learnt: these keys, this order
                message[str(number)] = value
                check_encode(name, message)


@pytest.mark.parametrize("name", DIALECTS)
@SETTINGS
@given(data=st.data())
def test_odd_keys_are_treated_as_pyiso8583_treats_them(name, data):
    message = data.draw(messages(name))
    odd = data.draw(st.lists(st.sampled_from([
        "p", "1", "65", "h", "foo", "", " 3", "012", "0003", "٣", "١١", "01", "065", "0", "129", "192",
        "193", "½", "²", 3, 11, b"11", None, ("t",), 1.5]), min_size=1, max_size=3))
    for key in odd:
        message[key] = data.draw(st.one_of(st.sampled_from(["", "0000", "7" * 16, "ABCDEF0123456789"]),
                                           st.text(ASCII, max_size=20)))
    if data.draw(st.booleans()):
        message.pop("t", None)
    check_encode(name, message)


@pytest.mark.parametrize("name", DIALECTS)
@SETTINGS
@given(mti=st.one_of(st.sampled_from(["02é0", "020\x80", "020", "02000", "", "\x7f\x00\x01\x02"]),
                    st.text(max_size=6), st.binary(max_size=5), st.integers()), fields=st.data())
def test_any_mti(name, mti, fields):
    message = fields.draw(messages(name))
    assert check_encode(name, message) is not REJECTED   # the same keys, valid: generated code learnt
    message["t"] = mti
    check_encode(name, message)


def test_encode_ignores_the_callers_bitmaps_and_does_not_touch_its_dict():
    for name in DIALECTS:
        message = {"t": "0200", "p": "garbage", "1": "more", "65": "x", "3": "000000", "103": "0912"}
        snapshot = dict(message)
        payload = check_encode(name, message)
        assert payload is not REJECTED and message == snapshot


def test_aliases_of_1_and_65_force_bitmaps_as_pyiso8583_does():
    for name in DIALECTS:
        for alias in ("01", "065", "١", "٦٥"):
            payload = check_encode(name, {"t": "0800", "11": "000001", alias: "ignored"})
            assert payload is not REJECTED
            assert check_decode(name, payload) is not REJECTED


def test_encode_accepts_any_mapping_as_dict_does():
    for name in DIALECTS:
        pairs = [("t", "0800"), ("11", "000001"), ("70", "301")]
        for form in (lambda: pairs, lambda: iter(pairs), lambda: dict(pairs).items()):
            for codec in CODECS[name]:
                assert codec.encode(form()) == ref_encode(SPECS[name], dict(pairs))


# -- decode --------------------------------------------------------------------------------------
def mutate(rng: random.Random, payload: bytes) -> bytes:
    data = bytearray(payload)
    for _ in range(rng.choice([1, 1, 1, 2, 3])):
        how = rng.randrange(7)
        at = rng.randrange(len(data) + 1)
        if how == 0 and data:                       # flip a byte (bitmaps included)
            data[min(at, len(data) - 1)] = rng.randrange(256)
        elif how == 1 and data:                     # a digit for a digit (length prefixes)
            data[min(at, len(data) - 1)] = rng.choice(b"0123456789 +-_")
        elif how == 2:                              # truncate
            del data[at:]
        elif how == 3:                              # extend
            data += bytes(rng.randrange(256) for _ in range(rng.randint(1, 5)))
        elif how == 4:                              # insert
            data[at:at] = bytes(rng.choice(b"0123456789AZ \x80\xff") for _ in range(rng.randint(1, 3)))
        elif how == 5 and data:                     # delete
            del data[at:at + rng.randint(1, 3)]
        elif how == 6 and data:                     # a bit in the bitmaps
            index = 4 + rng.randrange(16)
            if index < len(data):
                data[index] ^= 1 << rng.randrange(8)
    return bytes(data)


@pytest.mark.parametrize("name", DIALECTS)
@SETTINGS
@given(data=st.data())
def test_mutated_messages_are_accepted_exactly_when_pyiso8583_accepts_them(name, data):
    message = data.draw(messages(name))
    payload = ref_encode(SPECS[name], message)
    check_decode(name, payload)                     # the codecs learn this bitmap first
    rng = data.draw(st.randoms(use_true_random=False))
    for _ in range(8):
        check_decode(name, mutate(rng, payload))


@pytest.mark.parametrize("name", DIALECTS)
@SETTINGS
@given(body=st.binary(max_size=80), mti=st.sampled_from([b"0200", b"0800", b"02\x800"]),
       bitmap=st.binary(min_size=8, max_size=24))
def test_structured_garbage(name, body, mti, bitmap):
    spec = SPECS[name]
    if spec["p"]["data_enc"] != "b":
        bitmap = bitmap.hex().encode()[:16 * (len(bitmap) // 8)]
    check_decode(name, mti + bitmap + body)


@pytest.mark.parametrize("name", DIALECTS)
@settings(max_examples=2 * EXAMPLES, deadline=None, derandomize=True)
@given(garbage=st.binary(max_size=120))
def test_garbage(name, garbage):
    check_decode(name, garbage)


def test_lowercase_hex_bitmaps_opa87():
    message = {"t": "0200", "3": "000000", "11": "000123", "41": "TERM0001", "103": "09121234567"}
    payload = ref_encode(SPECS["opa87"], message)
    lowered = payload[:4] + payload[4:36].lower() + payload[36:]
    assert lowered != payload
    decoded = check_decode("opa87", lowered)
    assert decoded["p"] == payload[4:20].decode().lower() and decoded["103"] == "09121234567"
    mixed = payload[:4] + payload[4:12].lower() + payload[12:]
    assert check_decode("opa87", mixed) is not REJECTED


def test_whitespace_in_an_ascii_bitmap_is_what_bytes_fromhex_makes_of_it():
    assert check_decode("opa87", b"0800" + b" " * 16) == {"t": "0800", "p": " " * 16}
    message = {"t": "0800", "7": "1122101010", "11": "000001"}
    payload = ref_encode(SPECS["opa87"], message)   # bitmap 0220000000000000
    for bitmap in (b"0220 00 00 00 00", b"0220 000000 0000", b"\t02200000000000 ", b"02200000000000  "):
        assert check_decode("opa87", payload[:4] + bitmap + payload[20:]) is not REJECTED
    for bitmap in (b"\t0220000000000 0", b"022000000000000 ", b"0220000000000\xa000"):   # an odd digit out
        assert check_decode("opa87", payload[:4] + bitmap + payload[20:]) is REJECTED
    # Seven bytes of primary bitmap, then the secondary: its fields are still 65-128.
    message = {"t": "0800", "7": "1122101010", "11": "000001", "70": "301"}
    payload = ref_encode(SPECS["opa87"], message)   # 8220000000000000 0400000000000000
    assert payload[4:36] == b"82200000000000000400000000000000"
    for bitmap in (b"82200000000000  ", b"82 20 0000000000", b" 82200000000000 "):
        decoded = check_decode("opa87", payload[:4] + bitmap + payload[20:])
        assert decoded is not REJECTED and decoded["70"] == "301"


@pytest.mark.parametrize("name", DIALECTS)
def test_all_zero_secondary_bitmap(name):
    message = {"t": "0800", "7": "1122101010", "11": "000001"}
    payload = ref_encode(SPECS[name], message)
    if SPECS[name]["p"]["data_enc"] == "b":
        primary = bytearray(payload[4:12])
        primary[0] |= 0x80
        with_empty_secondary = payload[:4] + bytes(primary) + bytes(8) + payload[12:]
    else:
        primary = bytearray(bytes.fromhex(payload[4:20].decode()))
        primary[0] |= 0x80
        with_empty_secondary = payload[:4] + primary.hex().upper().encode() + b"0" * 16 + payload[20:]
    decoded = check_decode(name, with_empty_secondary)
    assert decoded["1"] == "0" * 16 and decoded["11"] == "000001"


@pytest.mark.parametrize("name", DIALECTS)
def test_bit_65_with_an_all_zero_tertiary_bitmap_is_accepted_and_with_a_bit_set_is_not(name):
    message = {"t": "0800", "11": "000001", "70": "301"}
    payload = ref_encode(SPECS[name], message)
    binary = SPECS[name]["p"]["data_enc"] == "b"
    width = 8 if binary else 16
    end = 4 + 2 * width
    bitmaps = bytes.fromhex(payload[4:end].decode()) if not binary else payload[4:end]
    with_65 = bytearray(bitmaps)
    with_65[8] |= 0x80
    for tertiary in (bytes(8), b"\x00" * 7 + b"\x01", b"\x80" + bytes(7)):
        raw = bytes(with_65) + tertiary
        encoded = raw if binary else raw.hex().upper().encode()
        decoded = check_decode(name, payload[:4] + encoded + payload[end:])
        assert (decoded is REJECTED) == (tertiary != bytes(8))


@pytest.mark.parametrize("name", DIALECTS)
@SETTINGS
@given(prefix=st.sampled_from([" 5", "5 ", "+5", "-5", "-0", "+0", " 0", "0_5", "5_", "٥", "\t5", "\x0c5", "\x1c5",
                               "\xa05", "0x", "", "5"]), data=st.data())
def test_length_prefixes_as_int_reads_them(name, prefix, data):
    message = {"t": "0200", "11": "000001", "32": "12345", "41": "TERM0001"}
    payload = ref_encode(SPECS[name], message)
    check_decode(name, payload)
    index = payload.index(b"0512345")               # field 32's prefix, then its data
    encoded = prefix.encode("latin-1", errors="replace")[:2].rjust(2, b"0") if prefix else b""
    check_decode(name, payload[:index] + encoded + payload[index + 2:])
    width = data.draw(st.sampled_from([1, 2, 3]))
    check_decode(name, payload[:index] + prefix.encode("utf-8")[:width] + payload[index + 2:])


@pytest.mark.parametrize("name", DIALECTS)
def test_a_negative_length_is_rejected_even_where_the_rest_would_fit(name):
    # pyiso8583 reads "-2" as -2 and then fails on the data; going back 2 bytes would make the rest fit.
    message = {"t": "0200", "11": "000001", "32": "12", "37": "ABCDEFGHIJKL"}
    payload = ref_encode(SPECS[name], message)
    check_decode(name, payload)
    index = payload.index(b"0212ABCDEFGHIJKL")
    tricky = payload[:index] + b"-2" + b"ABCDEFGHIJ"
    assert check_decode(name, tricky) is REJECTED


def test_bytearray_is_accepted_and_other_types_are_not():
    payload = ref_encode(SPECS["bank87"], {"t": "0800", "11": "000001", "70": "301"})
    for codec in CODECS["bank87"]:
        assert codec.decode(bytearray(payload)) == iso8583.decode(payload, SPECS["bank87"])[0]
        for wrong in (payload.decode("latin-1"), memoryview(payload), None):
            with pytest.raises(TypeError):
                codec.decode(wrong)


@pytest.mark.parametrize("name", DIALECTS)
def test_binary_fields_64_128_and_55(name):
    for extra in ({"64": "00112233AABBCCDD"}, {"128": "00112233aabbccdd", "103": "0912"},
                  {"55": "", "64": "0011223344556677"}, {"55": "9F" * 255}, {"52": "ff" * 8, "55": "00"}):
        message = {"t": "0200", "3": "000000", "11": "000001", **extra}
        payload = check_encode(name, message)
        if payload is not REJECTED:
            check_decode(name, payload)
            for cut in (1, 5, 9):
                check_decode(name, payload[:-cut])
            corrupted = bytearray(payload)
            corrupted[-3] = 0xE9                     # binary data may be anything: still accepted
            check_decode(name, bytes(corrupted))
