"""The pure POS wire layer: the pos87 dialect, the TPDU and the retail MAC. No sockets."""

from __future__ import annotations

import iso8583
import pytest
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes
from hypothesis import given, settings, strategies as st

from switch.errors import LocalProtocolError, MessageDecodeError, RemoteProtocolError
from switch.wire import load_dialect
from switch.wire.mac import key_from_hex, mac_field_for, mac_input, mac_required, retail_mac, sign, verify
from switch.wire.tpdu import TPDU_LENGTH, Tpdu, frame_decoder, join_tpdu, pack, split_tpdu

POS = load_dialect("pos87")
KEY = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
OTHER_KEY = bytes.fromhex("0123456789ABCDEFFEDCBA9876543212")   # 0x11 would differ in a parity bit only

TOP_UP = {"t": "0200", "2": "6037991234567890", "3": "000000", "4": "000000100000", "7": "1122101010",
          "11": "000123", "12": "101010", "13": "1122", "32": "603799", "37": "RUN100000001", "41": "TERM0001",
          "42": "MERCHANT0000001", "48": "CH003POS", "49": "364", "103": "09121234567"}
BALANCE = {"t": "0200", "3": "310000", "7": "1122101010", "11": "000124", "32": "603799", "37": "RUN100000002",
           "41": "TERM0001"}


def ascii_hex(text: str) -> str:
    return text.encode("ascii").hex()


# -- pos87: every field we use, packed as a terminal packs it ------------------------------------
# (field, value, length prefix as hex, data as hex). Lengths of n fields count digits, of an/ans
# characters; odd digit counts get a leading zero nibble. Values of 10+ digits or characters tell
# a BCD length (0x16 for 16) from a binary one (0x10), which agree below 10.
FIELD_LAYOUTS = [
    ("2", "6037991234567890", "16", "6037991234567890"),
    ("2", "6037991234567890123", "19", "06037991234567890123"),
    ("2", "4123456789012", "13", "04123456789012"),
    ("3", "310000", "", "310000"),
    ("4", "000000100000", "", "000000100000"),
    ("7", "1122101010", "", "1122101010"),
    ("11", "000123", "", "000123"),
    ("12", "235959", "", "235959"),
    ("13", "1231", "", "1231"),
    ("32", "603799", "06", "603799"),
    ("32", "60379", "05", "060379"),
    ("32", "12345678901", "11", "012345678901"),
    ("37", "RUN100000001", "", ascii_hex("RUN100000001")),
    ("38", "A1B2C3", "", ascii_hex("A1B2C3")),
    ("39", "00", "", ascii_hex("00")),
    ("41", "TERM 001", "", ascii_hex("TERM 001")),
    ("42", "MERCHANT0000001", "", ascii_hex("MERCHANT0000001")),
    ("44", "IRANCELL", "08", ascii_hex("IRANCELL")),
    ("44", "OPERATOR-CODE-OF-25-CHARS", "25", ascii_hex("OPERATOR-CODE-OF-25-CHARS")),
    ("48", "CH003POS", "0008", ascii_hex("CH003POS")),
    ("48", "OR150" + "x" * 150, "0155", ascii_hex("OR150" + "x" * 150)),
    ("49", "364", "", "0364"),
    ("54", "1001364C000000500000", "0020", ascii_hex("1001364C000000500000")),
    ("54", "A" * 120, "0120", ascii_hex("A" * 120)),
    ("64", "0123456789ABCDEF", "", "0123456789abcdef"),
    ("70", "301", "", "0301"),
    ("90", "020000012311221010100000060379900000000000", "", "020000012311221010100000060379900000000000"),
    ("103", "09121234567", "11", ascii_hex("09121234567")),
    ("103", "+989121234567", "13", ascii_hex("+989121234567")),
    ("103", "0098912123456712345678901234", "28", ascii_hex("0098912123456712345678901234")),
    ("128", "FEDCBA9876543210", "", "fedcba9876543210"),
]


@pytest.mark.parametrize(("field", "value", "length_hex", "data_hex"), FIELD_LAYOUTS,
                         ids=[f"{f}-{len(v)}" for f, v, _, _ in FIELD_LAYOUTS])
def test_every_pos87_field_packs_as_specified_and_round_trips(field, value, length_hex, data_hex):
    message = {"t": "0200", field: value}
    _, encoded = iso8583.encode(dict(message), POS.spec)
    assert encoded[field]["len"].hex() == length_hex
    assert encoded[field]["data"].hex() == data_hex
    decoded = POS.decode(POS.encode(message))
    assert decoded[field] == value


def test_a_top_up_is_laid_out_byte_for_byte_as_a_terminal_sends_it():
    message = {**TOP_UP, "128": "00" * 8}
    expected = b"".join([
        bytes.fromhex("0200"),                           # MTI, 2 bytes BCD
        bytes.fromhex("F238000108C18000"),               # primary: 1 2 3 4 7 11 12 13 32 37 41 42 48 49
        bytes.fromhex("0000000002000001"),               # secondary: 103 128
        bytes.fromhex("16") + bytes.fromhex("6037991234567890"),   # 2: BCD length 16, 8 bytes
        bytes.fromhex("000000"),                         # 3
        bytes.fromhex("000000100000"),                   # 4: n12 as 6 BCD bytes
        bytes.fromhex("1122101010"),                     # 7
        bytes.fromhex("000123"), bytes.fromhex("101010"), bytes.fromhex("1122"),  # 11 12 13
        bytes.fromhex("06") + bytes.fromhex("603799"),   # 32: 6 digits
        b"RUN100000001", b"TERM0001", b"MERCHANT0000001",          # 37 41 42 ASCII
        bytes.fromhex("0008") + b"CH003POS",             # 48: LLLVAR, 2-byte BCD length
        bytes.fromhex("0364"),                           # 49: n3 with a leading zero nibble
        bytes.fromhex("11") + b"09121234567",            # 103: 11 characters
        bytes(8),                                        # 128
    ])
    assert POS.encode(message) == expected
    assert POS.decode(expected) == {**message, "p": "F238000108C18000", "1": "0000000002000001"}


@settings(max_examples=200, deadline=None)
@given(pan=st.text("0123456789", max_size=19), acquirer=st.text("0123456789", min_size=1, max_size=11))
def test_variable_numeric_fields_round_trip_at_every_length(pan, acquirer):
    decoded = POS.decode(POS.encode({"t": "0200", "2": pan, "32": acquirer}))
    assert decoded["2"] == pan and decoded["32"] == acquirer


@pytest.mark.parametrize(("field", "value"), [("2", "6" * 20), ("32", "1" * 12), ("49", "0364"), ("4", "100000"),
                                              ("44", "x" * 26), ("54", "x" * 121), ("103", "9" * 29)])
def test_values_that_do_not_fit_their_field_are_refused_on_encode(field, value):
    with pytest.raises(LocalProtocolError):
        POS.encode({"t": "0200", field: value})


def test_odd_numeric_field_whose_pad_nibble_is_not_zero_does_not_decode():
    good = POS.encode({"t": "0200", "49": "364"})
    assert good.endswith(bytes.fromhex("0364"))
    with pytest.raises(MessageDecodeError) as caught:
        POS.decode(good[:-2] + bytes.fromhex("1364"))
    assert caught.value.field == "49"


def test_bcd_length_that_is_not_bcd_does_not_decode():
    good = POS.encode({"t": "0200", "2": "6037991234567890"})
    with pytest.raises(MessageDecodeError):
        POS.decode(good.replace(bytes.fromhex("16"), bytes.fromhex("1A"), 1))


def test_decode_error_keeps_mti_stan_and_rrn_for_the_format_error_answer():
    payload = POS.encode(TOP_UP)
    with pytest.raises(MessageDecodeError) as caught:
        POS.decode(payload[:-3])
    assert caught.value.partial == {"t": "0200", "11": "000123", "37": "RUN100000001"}


def test_a_tertiary_bitmap_is_a_decode_error_not_a_crash():
    # Bits 1 (secondary) and 65 (tertiary) set, then a tertiary bitmap naming field 129.
    payload = bytes.fromhex("0800") + bytes([0x80]) + bytes(7) + bytes([0x80]) + bytes(7) + bytes([0x80]) + bytes(7)
    with pytest.raises(MessageDecodeError, match="129"):
        POS.decode(payload)


# -- TPDU ------------------------------------------------------------------------------------------
def test_tpdu_splits_from_the_message_and_joins_back():
    payload = bytes.fromhex("6000010002") + b"message"
    tpdu, message = split_tpdu(payload)
    assert tpdu == Tpdu(destination=0x0001, source=0x0002) and message == b"message"
    assert join_tpdu(tpdu, message) == payload


def test_tpdu_answer_swaps_destination_and_source():
    tpdu = Tpdu(destination=0x0001, source=0x1234)
    assert tpdu.answer() == Tpdu(destination=0x1234, source=0x0001)
    assert bytes(tpdu.answer()) == bytes.fromhex("6012340001")
    assert tpdu.answer().answer() == tpdu


@pytest.mark.parametrize("payload", [b"", b"\x60", bytes.fromhex("60000100")])
def test_tpdu_too_short_is_a_decode_error(payload):
    with pytest.raises(MessageDecodeError, match="TPDU"):
        split_tpdu(payload)


def test_tpdu_not_starting_with_0x60_is_a_decode_error():
    with pytest.raises(MessageDecodeError, match="0x68"):
        split_tpdu(bytes.fromhex("6800010002") + POS.encode(BALANCE))


def test_nii_that_does_not_fit_two_bytes_is_refused():
    with pytest.raises(LocalProtocolError):
        Tpdu(destination=0x10000, source=0)


def test_frame_length_counts_tpdu_and_message_and_survives_byte_at_a_time_delivery():
    tpdu = Tpdu(destination=1, source=2)
    messages = [sign(POS, {**TOP_UP, "11": f"{i:06d}"}, KEY) for i in range(3)]
    stream = b"".join(pack(tpdu, message) for message in messages)
    assert int.from_bytes(stream[:2], "big") == TPDU_LENGTH + len(messages[0])
    decoder = frame_decoder()
    frames = []
    for i in range(len(stream)):
        frames += decoder.feed(stream[i:i + 1])
    assert not decoder.pending
    for frame, message in zip(frames, messages, strict=True):
        got_tpdu, got_message = split_tpdu(frame)
        assert got_tpdu == tpdu and got_message == message
        assert verify(POS, got_message, POS.decode(got_message), KEY)


# -- MAC: ISO 9797-1 algorithm 3 ---------------------------------------------------------------
def test_retail_mac_matches_the_bouncy_castle_known_answer():
    # bc-java core/src/test/java/org/bouncycastle/crypto/test/ISO9797Alg3MacTest.java
    key = bytes.fromhex("7CA110454A1A6E570131D9619DC1376E")
    assert retail_mac(key, b"Hello World !!!!") == bytes.fromhex("F09B856213BAB83B")


@pytest.mark.parametrize(("data", "mac"), [
    ("72C29C2371CC9BDB65B779B8E8D37B29ECC154AA56A8799FAE2F498F76ED92F2", "5F1448EEA8AD90A7"),
    ("46B9342A41396CD7386BF5803104D7CEDC122B9132139BAF2EEDC94EE178534F", "2F2D235D074D7449"),
])
def test_retail_mac_matches_the_icao_9303_known_answers(data, mac):
    # ICAO Doc 9303 Part 11, Appendix D.3 (BAC): MAC algorithm 3 over E_IFD / E_IC with padding method 2,
    # applied here by hand so that our padding method 1 adds nothing.
    key = bytes.fromhex("7962D9ECE03D1ACD4C76089DCE131543")
    assert retail_mac(key, bytes.fromhex(data) + b"\x80" + bytes(7)) == bytes.fromhex(mac)


def _des_block(key8: bytes, block: bytes, decrypt: bool = False) -> bytes:
    cipher = Cipher(TripleDES(key8 * 3), modes.ECB())
    step = cipher.decryptor() if decrypt else cipher.encryptor()
    return step.update(block) + step.finalize()


def _retail_mac_by_hand(key: bytes, data: bytes) -> bytes:
    """The algorithm written out block by block, one DES call at a time, as ISO 9797-1 describes it."""
    k1, k2 = key[:8], key[8:]
    padded = data + bytes(-len(data) % 8) if data else bytes(8)
    state = bytes(8)
    for i in range(0, len(padded), 8):
        state = _des_block(k1, bytes(a ^ b for a, b in zip(state, padded[i:i + 8])))
    return _des_block(k1, _des_block(k2, state, decrypt=True))


@pytest.mark.parametrize("size", [0, 1, 7, 8, 9, 15, 16, 17, 100, 1000])
def test_retail_mac_agrees_with_the_algorithm_written_out_at_every_padding(size):
    data = bytes((i * 37 + 11) % 256 for i in range(size))
    assert retail_mac(KEY, data) == _retail_mac_by_hand(KEY, data)


def test_padding_method_1_adds_zeros_only_when_needed_and_one_zero_block_for_empty_data():
    assert retail_mac(KEY, b"") == retail_mac(KEY, bytes(8))
    assert retail_mac(KEY, b"abc") == retail_mac(KEY, b"abc" + bytes(5))
    assert retail_mac(KEY, b"12345678") != retail_mac(KEY, b"12345678" + bytes(8))


def test_retail_mac_uses_both_halves_of_the_key():
    assert retail_mac(KEY, b"data") != retail_mac(KEY[:8] + KEY[:8], b"data")
    assert retail_mac(KEY, b"data") != retail_mac(OTHER_KEY, b"data")


def test_des_parity_bits_of_the_key_do_not_count():
    # The low bit of every DES key byte is parity: keys that differ only there are the same key.
    assert retail_mac(KEY, b"data") == retail_mac(bytes(byte ^ 0x01 for byte in KEY), b"data")


def test_a_key_that_is_not_16_bytes_is_refused():
    with pytest.raises(LocalProtocolError):
        retail_mac(KEY[:8], b"data")


def test_key_from_hex_reads_32_hex_digits_and_nothing_else():
    assert key_from_hex("0123456789abcdefFEDCBA9876543210") == KEY
    for bad in ("0123", "zz23456789ABCDEFFEDCBA9876543210", "0123456789ABCDEFFEDCBA987654321000"):
        with pytest.raises(ValueError, match="32 hex digits"):
            key_from_hex(bad)


def test_a_message_with_a_secondary_bitmap_is_signed_in_128():
    signed = sign(POS, TOP_UP, KEY)
    decoded = POS.decode(signed)
    assert "128" in decoded and "64" not in decoded
    assert signed[-8:] == retail_mac(KEY, signed[:-8]) == bytes.fromhex(decoded["128"])
    assert verify(POS, signed, decoded, KEY)


def test_a_message_without_a_secondary_bitmap_is_signed_in_64():
    signed = sign(POS, BALANCE, KEY)
    decoded = POS.decode(signed)
    assert "64" in decoded and "1" not in decoded and "128" not in decoded
    assert signed[-8:] == retail_mac(KEY, signed[:-8])
    assert verify(POS, signed, decoded, KEY)


def test_the_mac_covers_mti_and_bitmaps_with_the_mac_bit_set():
    signed = sign(POS, BALANCE, KEY)
    covered = mac_input(signed, "64")
    assert covered[:2] == bytes.fromhex("0200")
    assert covered[2 + 7] & 0x01   # bit 64, the last bit of the primary bitmap
    assert covered == POS.encode({**BALANCE, "64": "00" * 8})[:-8]


def test_signing_replaces_a_mac_already_in_the_fields():
    answer = {**POS.decode(sign(POS, BALANCE, OTHER_KEY)), "t": "0210", "39": "00"}
    signed = sign(POS, answer, KEY)
    assert verify(POS, signed, POS.decode(signed), KEY)
    assert mac_field_for({**TOP_UP, "64": "00" * 8}) == "128"


def test_verify_fails_under_another_key():
    signed = sign(POS, TOP_UP, KEY)
    assert not verify(POS, signed, POS.decode(signed), OTHER_KEY)


@pytest.mark.parametrize("message", [TOP_UP, BALANCE], ids=["field-128", "field-64"])
def test_one_flipped_bit_anywhere_in_a_signed_message_fails_verification(message):
    signed = sign(POS, message, KEY)
    for bit in range(len(signed) * 8):
        tampered = bytearray(signed)
        tampered[bit // 8] ^= 0x80 >> (bit % 8)
        try:
            decoded = POS.decode(bytes(tampered))
        except MessageDecodeError:
            continue
        assert not verify(POS, bytes(tampered), decoded, KEY), f"bit {bit} flipped and the MAC still verifies"


def test_verify_fails_when_the_mac_is_missing():
    unsigned = POS.encode(TOP_UP)
    assert not verify(POS, unsigned, POS.decode(unsigned), KEY)


def test_verify_fails_when_the_mac_is_not_the_last_field():
    # A top-up has a secondary bitmap (103), so its MAC belongs in 128; here a right MAC sits in 64.
    covered = POS.encode({**TOP_UP, "64": "00" * 8})
    mac = retail_mac(KEY, covered)
    misplaced = POS.encode({**TOP_UP, "64": mac.hex()})
    assert not verify(POS, misplaced, POS.decode(misplaced), KEY)


def test_verify_fails_when_the_fields_are_not_those_of_the_message():
    signed = sign(POS, TOP_UP, KEY)
    other = POS.decode(sign(POS, {**TOP_UP, "11": "000999"}, KEY))
    assert not verify(POS, signed, other, KEY)


def test_mac_is_required_on_all_but_network_management_and_security_refusals():
    assert mac_required(TOP_UP) and mac_required(BALANCE)
    assert mac_required({"t": "0210", "39": "00"}) and mac_required({"t": "0110", "39": "14"})
    assert not mac_required({"t": "0800", "70": "301"})
    assert not mac_required({"t": "0810", "39": "00"})
    assert not mac_required({"t": "0210", "39": "63"})


# -- garbage in ----------------------------------------------------------------------------------
@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_garbage_in_gives_protocol_errors_and_nothing_else(garbage):
    decoder = frame_decoder(max_frame=200)
    try:
        frames = decoder.feed(garbage)
    except RemoteProtocolError:
        return
    for frame in frames:
        try:
            _, message = split_tpdu(frame)
            fields = POS.decode(message)
        except RemoteProtocolError:
            continue
        assert verify(POS, message, fields, KEY) in (True, False)


@settings(max_examples=400, deadline=None)
@given(st.binary(min_size=1, max_size=400))
def test_garbage_message_bodies_raise_only_message_decode_errors(body):
    try:
        fields = POS.decode(body)
    except MessageDecodeError:
        return
    assert verify(POS, body, fields, KEY) in (True, False)


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=64))
def test_garbage_after_a_valid_tpdu_raises_only_message_decode_errors(body):
    _, message = split_tpdu(bytes.fromhex("6000010002") + body)
    try:
        POS.decode(message)
    except MessageDecodeError:
        pass
