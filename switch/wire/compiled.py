"""A fast path for pyiso8583: an encoder and a decoder compiled once per spec.

pyiso8583 stays the reference codec. `compile_codec(spec)` reads a pyiso8583 spec dict at start-up
and, when every field of it is of a kind this module knows, returns a `CompiledCodec` whose
`decode` and `encode` walk precomputed tables instead of looking the spec up field by field:

- MTI: 4 ASCII characters (`t`, `data_enc` "ascii"); no message header (`h` `max_len` 0);
- bitmaps `p` and `1`: binary (`data_enc` "b", 8 bytes each) or ASCII hex (16 characters);
- fields 2-128: fixed or variable length (any `len_type`, length in ASCII digits), data
  ASCII text or binary (`data_enc` "b": given and returned as upper-case hex, like pyiso8583).

Anything else (a header, BCD or binary lengths, nibble counts, EBCDIC, fields 129-192, as in
pos87) gives None: the caller keeps pyiso8583 for that spec.

The contract, which tests/test_compiled_codec.py checks against pyiso8583 with hypothesis:

- `decode(payload)` returns exactly `iso8583.decode(payload, spec)[0]` (same keys, values and key
  order) for every payload pyiso8583 accepts, and raises for every payload pyiso8583 rejects;
- `encode(fields)` returns exactly `bytes(iso8583.encode(dict(fields), spec)[0])` for every mapping
  pyiso8583 accepts, raises where pyiso8583 raises, and never changes `fields`.

What it raises is unspecified (CompiledCodecError, UnicodeDecodeError, KeyError, ValueError...):
a raise only means "this message is bad". The caller then runs pyiso8583 on the same input, which
raises the precise DecodeError/EncodeError with the field and the position:

    try:
        return codec.decode(payload)
    except Exception:
        fields, _ = iso8583.decode(payload, spec)   # raises the error to report

(and, should the two ever disagree, pyiso8583's answer is the one that counts). The tables are a
snapshot of the spec: compile again after changing the spec.

pyiso8583 behaviours reproduced on purpose (all checked by the tests):

- encode computes both bitmaps from the fields present and ignores the caller's "p", "1" and "65";
  the secondary bitmap is there exactly when a field 65-128 is;
- encode ignores keys that are not numeric strings ("t" aside); a numeric key that is not the
  canonical spelling of a field ("012", "٣") is an alias: its value is ignored, but the canonical key
  must be present too, and an alias of 1 forces an (empty) secondary bitmap, an alias of 65 a
  secondary bitmap with bit 65 set and an all-zero tertiary bitmap after it;
- decode keeps an ASCII bitmap as received (lower case stays lower case) and reads it with
  `bytes.fromhex`, which skips ASCII whitespace: "0200" followed by 16 spaces is a valid message
  without fields;
- decode reads variable lengths with `int()`, which also takes " 7", "+7", "-0" and "0_7";
- decode accepts bit 65 (a tertiary bitmap) when the tertiary bitmap is all zero, and then returns
  the secondary and tertiary bitmaps together in "1" (32 hex digits or 32 characters);
- a set bitmap bit for a field the spec does not define is an error (pyiso8583: KeyError).
"""

from __future__ import annotations

import binascii
import codecs
from typing import Any, Callable

__all__ = ["CompiledCodec", "CompiledCodecError", "compile_codec"]


class CompiledCodecError(ValueError):
    """The compiled codec rejects the message; run pyiso8583 on it for the precise error."""


# Field kinds (the same numbers in the decoder and the encoder tables).
_FIXED_TEXT, _VAR_TEXT, _FIXED_BIN, _VAR_BIN, _UNDEFINED = range(5)

_BIT1 = 1 << 127            # field n is bit 1 << (128 - n) of one 128-bit integer
_BIT65 = 1 << 63
_SECONDARY = (1 << 64) - 1  # fields 65-128


class CompiledCodec:
    """`decode(payload) -> dict` and `encode(fields) -> bytes` for one pyiso8583 spec.

    Both are plain functions stored on the instance (no method binding, no `self` lookups)."""

    __slots__ = ("spec", "decode", "encode")

    def __init__(self, spec: dict, decode: Callable[[bytes], dict[str, str]],
                 encode: Callable[[Any], bytes]):
        self.spec = spec
        self.decode = decode
        self.encode = encode

    def __repr__(self) -> str:
        return f"<CompiledCodec of {len(self.spec)} spec entries>"


def _is_ascii(encoding: Any) -> bool:
    try:
        return isinstance(encoding, str) and codecs.lookup(encoding).name == "ascii"
    except LookupError:
        return False


def _bitmap_kind(field_spec: Any) -> str | None:
    if not isinstance(field_spec, dict):
        return None
    if field_spec.get("data_enc") == "b":
        return "b"
    if _is_ascii(field_spec.get("data_enc")):
        return "ascii"
    return None


def _field_kind(field_spec: Any) -> tuple[int, int, int] | None:
    """(kind, len_type, max_len) for a field this module can compile, else None."""
    if not isinstance(field_spec, dict):
        return None
    len_type, max_len = field_spec.get("len_type"), field_spec.get("max_len")
    if type(len_type) is not int or type(max_len) is not int or len_type < 0 or max_len < 0:
        return None
    if field_spec.get("len_count", "bytes") != "bytes":
        return None
    if len_type and not _is_ascii(field_spec.get("len_enc")):
        return None
    data_enc = field_spec.get("data_enc")
    if data_enc == "b":
        return (_VAR_BIN if len_type else _FIXED_BIN), len_type, max_len
    if _is_ascii(data_enc):
        return (_VAR_TEXT if len_type else _FIXED_TEXT), len_type, max_len
    return None


def compile_codec(spec: dict) -> CompiledCodec | None:
    """Compile `spec` (a pyiso8583 spec dict), or None when it uses something not compiled here."""
    try:
        header = spec["h"]
        if header.get("max_len", 0) > 0 or not _is_ascii(spec["t"].get("data_enc")):
            return None
        p_kind, s_kind = _bitmap_kind(spec["p"]), _bitmap_kind(spec.get("1"))
    except (KeyError, AttributeError, TypeError):
        return None
    if p_kind is None or p_kind != s_kind:
        return None   # (a binary primary and an ASCII secondary bitmap, or the reverse: not compiled)
    fields: dict[int, tuple[int, int, int]] = {}
    for key, field_spec in spec.items():
        if key in ("h", "t", "p", "1", "65") or not (isinstance(key, str) and key.isnumeric()):
            continue   # never looked up by pyiso8583 as a field
        try:
            number = int(key)
        except ValueError:
            return None
        if key != str(number) or not 2 <= number <= 128:
            return None   # fields 129-192 (tertiary bitmap) or odd keys: leave them to pyiso8583
        kind = _field_kind(field_spec)
        if kind is None:
            return None
        fields[number] = kind
    return CompiledCodec(spec, _make_decoder(p_kind, fields), _make_encoder(p_kind, fields))


# -- decoder -----------------------------------------------------------------------------------
def _length_table(len_type: int, max_len: int) -> dict[str, int]:
    """Canonical length prefixes "00".."max" -> int; anything else goes the slow way (int())."""
    top = min(max_len, 10 ** len_type - 1)
    return {f"{n:0{len_type}d}": n for n in range(top + 1)}


def _slow_length(raw: str, len_type: int, max_len: int) -> int:
    """A length prefix that is not canonical: read it as pyiso8583 does, with int().

    `raw` comes from the latin-1 text of the message; a non-ASCII character in it is caught by the
    decoder's final ASCII check, which rejects the message whatever int() made of it."""
    if len(raw) != len_type:
        raise CompiledCodecError("length prefix cut short")
    length = int(raw)
    if length > max_len or length < 0:
        raise CompiledCodecError("length out of range")
    return length


def _make_decoder(bitmap_kind: str, fields: dict[int, tuple[int, int, int]]):
    # One entry per defined field: (key, kind, width or len_type, length table, max_len).
    entries: dict[int, tuple] = {}
    for number in range(2, 129):
        if number == 65:
            continue
        if number in fields:
            kind, len_type, max_len = fields[number]
            if kind in (_FIXED_TEXT, _FIXED_BIN):
                entries[number] = (str(number), kind, max_len, None, max_len)
            else:
                entries[number] = (str(number), kind, len_type, _length_table(len_type, max_len), max_len)
        else:
            entries[number] = (str(number), _UNDEFINED, 0, None, 0)
    # tables[j][v]: the entries of the fields that value v of bitmap byte j announces, in field order
    # (bits 1 and 65 announce bitmaps, not fields: the decoder deals with them itself).
    tables: list[list[tuple]] = []
    for j in range(16):
        tables.append([tuple(entries[j * 8 + bit + 1] for bit in range(8)
                             if value & (0x80 >> bit) and (j * 8 + bit + 1) in entries)
                       for value in range(256)])
    tables_p, tables_s, tables_ps = tables[:8], tables[8:], tables

    binary = bitmap_kind == "b"
    width = 8 if binary else 16
    fromhex = bytes.fromhex
    slow_length = _slow_length
    Error = CompiledCodecError

    def decode(s: bytes) -> dict[str, str]:
        if s.__class__ is not bytes:
            if not isinstance(s, (bytes, bytearray)):
                raise TypeError(f"Encoded ISO8583 data must be bytes or bytearray, not {s.__class__.__name__}")
            s = bytes(s)
        total = len(s)
        i = 4 + width
        if total < i:
            raise Error("message cut short in MTI or primary bitmap")
        # Text fields are sliced from the latin-1 text of the whole message (one byte, one character);
        # that they are ASCII, as pyiso8583 requires, is checked once at the end.
        t = s.decode("latin-1")
        if binary:
            bitmap = s[4:12]
            doc = {"t": s[:4].decode("ascii"), "p": bitmap.hex().upper()}
        else:
            text = t[4:20]
            doc = {"t": t[:4], "p": text}
            bitmap = fromhex(text)
        if bitmap and bitmap[0] & 0x80:
            e = i + width
            if total < e:
                raise Error("message cut short in secondary bitmap")
            if binary:
                second = s[i:e]
                doc["1"] = second.hex().upper()
            else:
                text = t[i:e]
                doc["1"] = text
                second = fromhex(text)
            i = e
            if second and second[0] & 0x80:
                # Bit 65: a tertiary bitmap follows. No compiled spec defines 129-192: it must be all zero.
                e = i + width
                if total < e:
                    raise Error("message cut short in tertiary bitmap")
                if binary:
                    third = s[i:e]
                    doc["1"] += third.hex().upper()
                else:
                    text = t[i:e]
                    doc["1"] += text
                    third = fromhex(text)
                if third.count(0) != len(third):
                    raise Error("field 129-192 announced, not in this spec")
                i = e
            if len(bitmap) == 8 and len(second) == 8:
                walk = zip(tables_ps, bitmap + second)
            else:   # an ASCII bitmap with whitespace in it (bytes.fromhex skips it): fewer bytes
                walk = [*zip(tables_p, bitmap), *zip(tables_s, second)]
        else:
            walk = zip(tables_p, bitmap)
        text_from = i if binary else 0      # where the part that must be ASCII starts (MTI aside)
        binary_spans = None
        for table, value in walk:
            if value:
                for key, kind, size, lengths, max_len in table[value]:
                    if kind == 1:          # _VAR_TEXT
                        e = i + size
                        length = lengths.get(t[i:e])
                        if length is None:
                            length = slow_length(t[i:e], size, max_len)
                        i = e
                        e = i + length
                        if e > total:
                            raise Error(f"field {key} cut short")
                        doc[key] = t[i:e]
                    elif kind == 0:        # _FIXED_TEXT
                        e = i + size
                        if e > total:
                            raise Error(f"field {key} cut short")
                        doc[key] = t[i:e]
                    elif kind == 2 or kind == 3:     # _FIXED_BIN, _VAR_BIN
                        if kind == 2:
                            e = i + size
                        else:
                            e = i + size
                            length = lengths.get(t[i:e])
                            if length is None:
                                length = slow_length(t[i:e], size, max_len)
                            i = e
                            e = i + length
                        if e > total:
                            raise Error(f"field {key} cut short")
                        doc[key] = s[i:e].hex().upper()
                        if binary_spans is None:
                            binary_spans = []
                        binary_spans.append((i, e))
                    else:
                        raise Error(f"field {key} is not in this spec")
                    i = e
        if i != total:
            raise Error("extra data after the last field")
        if binary_spans is None:
            if not (s[text_from:] if text_from else s).isascii():
                raise Error("non-ASCII text")
        else:
            for a, b in binary_spans:
                if not s[text_from:a].isascii():
                    raise Error("non-ASCII text")
                text_from = b
            if not s[text_from:].isascii():
                raise Error("non-ASCII text")
        return doc

    return decode


# -- encoder -----------------------------------------------------------------------------------
def _make_encoder(bitmap_kind: str, fields: dict[int, tuple[int, int, int]]):
    # key -> (field number, bit, kind, width or longest length, length prefixes as str, as bytes)
    by_key: dict[str, tuple] = {}
    for number, (kind, len_type, max_len) in fields.items():
        bit = 1 << (128 - number)
        if kind in (_FIXED_TEXT, _FIXED_BIN):
            by_key[str(number)] = (number, bit, kind, max_len, None, None)
        else:
            top = min(max_len, 10 ** len_type - 1)   # a longer value's length does not fit its prefix
            prefixes = tuple(f"{n:0{len_type}d}" for n in range(top + 1))
            by_key[str(number)] = (number, bit, kind, top, prefixes, tuple(p.encode("ascii") for p in prefixes))
    lookup = by_key.get
    binary = bitmap_kind == "b"
    tertiary_zero = bytes(8) if binary else b"0" * 16
    Error = CompiledCodecError
    a2b_hex = binascii.a2b_hex

    def other_key(key: Any, doc: dict) -> int:
        """Bits a key that is not a canonical field key adds (0 if none); raises where pyiso8583 does."""
        if key == "1" or key == "65" or key == "t":
            return 0                        # pyiso8583 pops "1" and "65": bitmaps are recomputed
        if not key.isnumeric():             # AttributeError for a key that is not a str, as pyiso8583
            return 0
        number = int(key)                   # ValueError for "½", as pyiso8583
        if number == 1:
            return _BIT1
        if number == 65:
            return _BIT65
        if not 1 <= number <= 128:
            raise Error(f"field {key!r} outside 1-128")
        canonical = str(number)
        if canonical not in by_key or canonical not in doc:
            raise Error(f"field {key!r}: {canonical} not in the spec or not in the message")
        return 0

    def bitmaps(bits: int) -> bytes:
        if bits & _SECONDARY:
            bits |= _BIT1
        if bits & _BIT1:
            encoded = bits.to_bytes(16, "big") if binary else b"%032X" % bits
            return encoded + tertiary_zero if bits & _BIT65 else encoded
        return (bits >> 64).to_bytes(8, "big") if binary else b"%016X" % (bits >> 64)

    def encode_with_binary_fields(mti: bytes, bits: int, present: list) -> bytes:
        chunks = [mti, bitmaps(bits)]
        append = chunks.append
        for _, (_, _, kind, width, _, prefixes), value in present:
            if kind == 1:                  # _VAR_TEXT
                data = value.encode("ascii")
                length = len(data)
                if length > width:
                    raise Error("value too long")
                append(prefixes[length])
            elif kind == 0:                # _FIXED_TEXT
                data = value.encode("ascii")
                if len(data) != width:
                    raise Error("value of the wrong length")
            elif kind == 2:                # _FIXED_BIN
                data = a2b_hex(value)
                if len(data) != width:
                    raise Error("value of the wrong length")
            else:                          # _VAR_BIN
                data = a2b_hex(value)
                length = len(data)
                if length > width:
                    raise Error("value too long")
                append(prefixes[length])
            append(data)
        return b"".join(chunks)

    def encode(doc: Any) -> bytes:
        if doc.__class__ is not dict:
            doc = dict(doc)
        mti = doc["t"].encode("ascii")
        if len(mti) != 4:
            raise Error("MTI is not 4 characters")
        present = []
        bits = 0
        for key, value in doc.items():
            entry = lookup(key)
            if entry is None:
                bits |= other_key(key, doc)
            else:
                bits |= entry[1]
                present.append((entry[0], entry, value))
        present.sort()
        # All text (the common case): join str and encode once, which also checks every value is ASCII.
        parts = []
        append = parts.append
        for _, (_, _, kind, width, prefixes, _), value in present:
            if value.__class__ is not str:
                break   # (let pyiso8583's own value.encode() decide about str subclasses and non-str)
            if kind == 1:                  # _VAR_TEXT
                length = len(value)
                if length > width:
                    raise Error("value too long")
                append(prefixes[length])
            elif kind == 0:                # _FIXED_TEXT
                if len(value) != width:
                    raise Error("value of the wrong length")
            else:
                break
            append(value)
        else:
            return mti + bitmaps(bits) + "".join(parts).encode("ascii")
        return encode_with_binary_fields(mti, bits, present)

    return encode
