"""The pure wire layer: framing and dialects, no sockets."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings, strategies as st

from switch.errors import FrameError, MessageDecodeError, RemoteProtocolError
from switch.wire import FrameDecoder, encode_frame, load_dialect

BANK = load_dialect("bank87")
OPA = load_dialect("opa87")

TOP_UP = {"t": "0200", "2": "6037991234567890", "3": "000000", "4": "000000100000", "7": "1122101010",
          "11": "000123", "12": "101010", "13": "1122", "32": "603799", "37": "RUN100000001", "41": "TERM0001",
          "49": "364", "103": "09121234567"}


def test_frames_survive_byte_at_a_time_delivery():
    stream = b"".join(BANK.pack({**TOP_UP, "11": f"{i:06d}"}) for i in range(5))
    decoder = BANK.frame_decoder()
    frames = []
    for i in range(len(stream)):
        frames += decoder.feed(stream[i:i + 1])
    assert [BANK.decode(frame)["11"] for frame in frames] == [f"{i:06d}" for i in range(5)]
    assert not decoder.pending


def test_ascii4_frames_survive_random_slicing():
    stream = b"".join(OPA.pack({**TOP_UP, "11": f"{i:06d}"}) for i in range(20))
    decoder = OPA.frame_decoder()
    frames, i, rng = [], 0, random.Random(7)
    while i < len(stream):
        step = rng.randint(1, 40)
        frames += decoder.feed(stream[i:i + step])
        i += step
    assert len(frames) == 20


def test_zero_length_frame_is_a_keep_alive_and_is_ignored():
    decoder = FrameDecoder("binary2")
    assert decoder.feed(b"\x00\x00" + encode_frame(b"abc", "binary2") + b"\x00\x00") == [b"abc"]


def test_frame_over_the_cap_is_a_frame_error():
    decoder = FrameDecoder("binary2", max_frame=100)
    with pytest.raises(FrameError, match="over the cap"):
        decoder.feed(b"\x00\x65")


def test_ascii_length_header_that_is_not_digits_is_a_frame_error():
    with pytest.raises(FrameError, match="not 4 ASCII digits"):
        FrameDecoder("ascii4").feed(b"00x1hello")


def test_frame_errors_close_the_connection_and_decode_errors_do_not():
    assert FrameError.closes_connection and not MessageDecodeError.closes_connection


def test_encode_does_not_add_the_bitmap_to_the_callers_dict():
    message = dict(TOP_UP)
    BANK.encode(message)
    assert message == TOP_UP


def test_bank87_round_trip_with_binary_bitmap():
    payload = BANK.encode(TOP_UP)
    assert payload[:4] == b"0200" and len(payload) > 20
    decoded = BANK.decode(payload)
    assert {key: decoded[key] for key in TOP_UP} == TOP_UP


def test_opa87_accepts_lowercase_hex_bitmap():
    payload = OPA.encode(TOP_UP)
    lowered = payload[:4] + payload[4:36].lower() + payload[36:]
    assert OPA.decode(lowered)["37"] == "RUN100000001"


def test_all_zero_secondary_bitmap_is_accepted():
    message = {"t": "0800", "7": "1122101010", "11": "000001"}
    body = BANK.encode(message)
    # The same message with the secondary bitmap present but empty: bit 1 set, 8 zero bytes.
    primary = bytearray(body[4:12])
    primary[0] |= 0x80
    with_empty_secondary = body[:4] + bytes(primary) + bytes(8) + body[12:]
    assert BANK.decode(with_empty_secondary)["11"] == "000001"


def test_fields_this_spec_does_not_use_are_decoded_and_harmless():
    decoded = BANK.decode(BANK.encode({**TOP_UP, "43": "SOME MERCHANT NAME AND PLACE   "[:40].ljust(40),
                                       "100": "12345"}))
    assert decoded["100"] == "12345" and decoded["37"] == "RUN100000001"


def test_decode_error_names_field_and_position_and_keeps_what_was_read():
    payload = BANK.encode(TOP_UP)
    truncated = payload[:-5]   # field 103 is cut short
    with pytest.raises(MessageDecodeError) as caught:
        BANK.decode(truncated)
    error = caught.value
    assert error.field == "103" and error.position is not None
    assert "103" in str(error) and str(error.position) in str(error)
    assert error.partial == {"t": "0200", "11": "000123", "37": "RUN100000001"}


def test_leftover_bytes_after_a_message_are_a_decode_error():
    with pytest.raises(MessageDecodeError):
        BANK.decode(BANK.encode(TOP_UP) + b"junk")


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_in_gives_protocol_errors_and_nothing_else(garbage):
    for dialect in (BANK, OPA):
        decoder = dialect.frame_decoder(max_frame=200)
        try:
            frames = decoder.feed(garbage)
        except RemoteProtocolError:
            continue
        for frame in frames:
            try:
                dialect.decode(frame)
            except RemoteProtocolError:
                pass


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=400))
def test_garbage_message_bodies_raise_only_message_decode_errors(body):
    for dialect in (BANK, OPA):
        try:
            dialect.decode(body)
        except MessageDecodeError:
            pass


def test_an_over_long_json_line_is_dropped_byte_at_a_time_and_reported_once_whole():
    decoder = load_dialect("opcjson").frame_decoder(max_frame=10)
    stream = b'{"type":"ping"}' * 2 + b"\n" + b'{"a":1}\n'
    lines, dropped = [], []
    for i in range(len(stream)):
        lines += decoder.feed(stream[i:i + 1])
        dropped += decoder.take_dropped()   # taken after every feed, as a link does
    assert lines == [b'{"a":1}'] and dropped == [30] and not decoder.pending


def test_length_framed_decoders_never_drop_they_raise():
    assert OPA.frame_decoder().take_dropped() == []
