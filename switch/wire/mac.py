"""The MAC of `pos87` messages (INTERFACES.md 1.2): ISO 9797-1 MAC algorithm 3.

Algorithm 3 is the "retail MAC" (ANSI X9.19): single-DES CBC with K1 and a zero IV
over the data padded with method 1 (zeros, none when the length is already a
multiple of 8, one zero block for empty data), then the last block decrypted with
K2 and encrypted with K1. The key is K1||K2, 16 bytes a terminal.

The MAC is the message's last field: 128 when the message has a secondary bitmap,
64 when it has none. It covers every byte from the MTI up to the MAC field, bitmaps
included with the MAC field's bit set; so a message is signed by encoding it with
8 zero bytes in the MAC field and MACing all but those 8 bytes. The TPDU is not
covered. Every message from a terminal carries one except 0800, and every answer
except 0810 and answers with 39 = 63.

Pure: no I/O, no asyncio. DES comes from `cryptography` (TripleDES with one 8-byte
key three times is single DES).
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from cryptography.hazmat.primitives.ciphers import Cipher, modes

try:  # cryptography >= 43 keeps DES among the "decrepit" algorithms
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
except ImportError:  # pragma: no cover - older cryptography
    from cryptography.hazmat.primitives.ciphers.algorithms import TripleDES

from switch.errors import LocalProtocolError
from switch.flow.codes import ResponseCode

MAC_LENGTH = 8
KEY_LENGTH = 16
BLOCK = 8
MAC_FIELDS = ("64", "128")
UNSIGNED_MTIS = frozenset({"0800", "0810"})   # network management carries no MAC
_ZERO_MAC = "00" * MAC_LENGTH                   # pyiso8583 carries binary fields as hex text


def key_from_hex(text: str) -> bytes:
    """A terminal key as configured: 32 hex digits (K1 then K2)."""
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise ValueError("a MAC key is 32 hex digits (K1 then K2); this one is not hex") from None
    if len(key) != KEY_LENGTH:
        raise ValueError(f"a MAC key is 32 hex digits (K1 then K2), not {len(text.strip())}")
    return key


def _single_des(key8: bytes) -> TripleDES:
    return TripleDES(key8 * 3)


def retail_mac(key: bytes, data: bytes) -> bytes:
    """ISO 9797-1 MAC algorithm 3 with padding method 1 over `data`, under K1||K2: 8 bytes."""
    if len(key) != KEY_LENGTH:
        raise LocalProtocolError(f"a retail MAC key is {KEY_LENGTH} bytes (K1||K2), not {len(key)}")
    k1, k2 = key[:BLOCK], key[BLOCK:]
    remainder = len(data) % BLOCK
    if remainder or not data:
        data = bytes(data) + bytes(BLOCK - remainder)
    chain = Cipher(_single_des(k1), modes.CBC(bytes(BLOCK))).encryptor()
    last = (chain.update(data) + chain.finalize())[-BLOCK:]
    unwrap = Cipher(_single_des(k2), modes.ECB()).decryptor()
    middle = unwrap.update(last) + unwrap.finalize()
    wrap = Cipher(_single_des(k1), modes.ECB()).encryptor()
    return wrap.update(middle) + wrap.finalize()


def _field_numbers(fields: Mapping[str, str]) -> list[int]:
    # "1" in a pyiso8583 dict is the secondary bitmap, not a data field.
    return [int(key) for key in fields if key.isdigit() and key != "1"]


def mac_field_for(fields: Mapping[str, str]) -> str:
    """Where the MAC goes: "128" when any field above 64 (hence a secondary bitmap) is present, else "64"."""
    return "128" if any(number > 64 for number in _field_numbers(fields) if number not in (64, 128)) else "64"


def mac_required(fields: Mapping[str, str]) -> bool:
    """Whether this message must carry a MAC: all but 0800/0810 and answers with 39 = 63."""
    return fields.get("t") not in UNSIGNED_MTIS and fields.get("39") != ResponseCode.SECURITY_VIOLATION   # not signed


def mac_input(message: bytes, mac_field: str) -> bytes:
    """The bytes a MAC covers: from the MTI up to, not including, the MAC field's 8 bytes.

    `message` is the ISO 8583 message (no TPDU, no length header) whose last field is
    `mac_field` (64 or 128); being the last fixed 8-byte field, it is the last 8 bytes.
    """
    if mac_field not in MAC_FIELDS:
        raise LocalProtocolError(f"field {mac_field} is not a MAC field (64 or 128)")
    if len(message) <= MAC_LENGTH:
        raise LocalProtocolError(f"a message of {len(message)} bytes cannot end in an {MAC_LENGTH}-byte MAC")
    return message[:-MAC_LENGTH]


def _check_dialect(dialect, mac_field: str) -> None:
    spec = dialect.spec[mac_field]
    if not (spec["data_enc"] == "b" and spec["len_type"] == 0 and spec["max_len"] == MAC_LENGTH):
        raise LocalProtocolError(f"{dialect.name}: field {mac_field} is not an {MAC_LENGTH}-byte binary MAC")


def sign(dialect, fields: Mapping[str, str], key: bytes) -> bytes:
    """Encode `fields` with `dialect` and the right MAC in field 64 or 128 (a MAC already there is replaced)."""
    unsigned = {name: value for name, value in fields.items() if name not in MAC_FIELDS}
    mac_field = mac_field_for(unsigned)
    _check_dialect(dialect, mac_field)
    unsigned[mac_field] = _ZERO_MAC
    covered = mac_input(dialect.encode(unsigned), mac_field)
    return covered + retail_mac(key, covered)


def verify(dialect, message: bytes, fields: Mapping[str, str], key: bytes) -> bool:
    """True when `message` (decoded as `fields`) ends in a correct MAC under `key`.

    False when the last field is not a MAC field (missing, or not last), or the MAC is wrong.
    """
    numbers = _field_numbers(fields)
    if not numbers:
        return False
    mac_field = str(max(numbers))
    if mac_field not in MAC_FIELDS:
        return False
    _check_dialect(dialect, mac_field)
    received = message[-MAC_LENGTH:]
    if len(message) <= MAC_LENGTH or fields[mac_field].upper() != received.hex().upper():
        return False   # `fields` were not decoded from this message
    return hmac.compare_digest(retail_mac(key, mac_input(message, mac_field)), received)
