"""A fast path for pyiso8583: an encoder and a decoder compiled once per spec.

pyiso8583 stays the reference codec. `compile_codec(spec)` reads a pyiso8583 spec dict at start-up
and, when every field of it is of a kind this module knows, returns a `CompiledCodec`:

- MTI: 4 ASCII characters (`t`, `data_enc` "ascii"); no message header (`h` `max_len` 0);
- bitmaps `p` and `1`: both binary (`data_enc` "b", 8 bytes each) or both ASCII hex (16 characters);
- fields 2-128: fixed or variable length (any `len_type`, length in ASCII digits), data ASCII text
  or binary (`data_enc` "b": given and returned as upper-case hex, as pyiso8583 does).

Anything else (a header, BCD or binary lengths, nibble counts, EBCDIC, fields 129-192, as in pos87)
gives None: the caller keeps pyiso8583 for that spec.

How it is fast. Two tiers, both pure Python:

1. a table-driven codec built at compile time: the decoder walks the bitmap a byte at a time through
   precomputed tuples of (key, kind, width, length table) for the bits set in that byte value; text
   fields are sliced from one latin-1 decoding of the message and their ASCII-ness is checked once
   at the end; the encoder looks each key up once, sorts, and encodes all text with one join;
2. straight-line code generated (exec) for each bitmap the decoder meets and each key sequence the
   encoder meets, once the table-driven codec accepted a message with it: constant offsets folded,
   one bounds check at the end, the result built as one dict display, the bitmap a constant. At most
   `SPECIALISED_MAX` of each per codec (only valid messages add one; past the cap the first tier
   serves), so a peer cannot make it compile without bound.

The contract, which tests/test_compiled_codec.py checks against pyiso8583 with hypothesis:

- `decode(payload)` returns exactly `iso8583.decode(payload, spec)[0]` (same keys, values and key
  order) for every payload pyiso8583 accepts, and raises for every payload pyiso8583 rejects;
- `encode(fields)` returns exactly `bytes(iso8583.encode(dict(fields), spec)[0])` for every mapping
  pyiso8583 accepts, raises where pyiso8583 raises, and never changes `fields`. (Field values are
  str, as pyiso8583 expects; a str subclass that overrides `encode` or `__len__` is not supported.)

What it raises is unspecified (CompiledCodecError, UnicodeError, KeyError, TypeError...): a raise
only means "this message is bad". The caller then runs pyiso8583 on the same input, which raises
the precise DecodeError/EncodeError with the field and the position (and whose answer would count,
should the two ever disagree):

    try:
        return codec.decode(payload)
    except Exception:
        return iso8583.decode(payload, spec)[0]     # raises the error to report

    try:
        return codec.encode(fields)
    except Exception:
        return bytes(iso8583.encode(dict(fields), spec)[0])

The tables are a snapshot of the spec: compile again after changing the spec.

pyiso8583 behaviours reproduced on purpose (all checked by the tests):

- encode computes both bitmaps from the fields present and ignores the caller's "p", "1" and "65"
  (and any key that is not a numeric string); the secondary bitmap is there exactly when a field
  65-128 is;
- a numeric key that is not the canonical spelling of a field ("012", "٣") is an alias: its value is
  ignored, but the canonical key must be present too; an alias of 1 forces an (empty) secondary
  bitmap, an alias of 65 a secondary bitmap with bit 65 set and an all-zero tertiary bitmap after it;
- decode keeps an ASCII bitmap as received (lower case stays lower case) and reads it with
  `bytes.fromhex`, which skips ASCII whitespace: "0200" and 16 spaces is a valid message, no fields;
- decode reads variable lengths with `int()` of the ASCII text, which also takes " 7", "+7", "-0"
  and "0_7";
- decode accepts bit 65 (a tertiary bitmap) when the tertiary bitmap is all zero, and then returns
  the secondary and tertiary bitmaps together in "1" (32 hex digits, or 32 characters);
- a bitmap bit for a field the spec does not define is an error (pyiso8583: KeyError).
"""

from __future__ import annotations

import binascii
import codecs
import functools
from typing import Any, Callable

__all__ = ["CompiledCodec", "CompiledCodecError", "SPECIALISED_MAX", "compile_codec"]

SPECIALISED_MAX = 64   # straight-line decoders (per bitmap) and encoders (per key sequence) per codec


class CompiledCodecError(ValueError):
    """The compiled codec rejects the message; run pyiso8583 on it for the precise error."""


# Field kinds (the same numbers in the tables and in the generated code).
_FIXED_TEXT, _VAR_TEXT, _FIXED_BIN, _VAR_BIN, _UNDEFINED = range(5)

_BIT1 = 1 << 127            # field n is bit 1 << (128 - n) of one 128-bit integer
_BIT65 = 1 << 63
_SECONDARY = (1 << 64) - 1  # fields 65-128
_LONGEST_PREFIX_TABLE = 99_999


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


# -- reading the spec --------------------------------------------------------------------------
class _Field:
    """What the codec needs of one field, precomputed."""

    __slots__ = ("number", "key", "kind", "len_type", "max_len", "top", "lengths", "prefixes",
                 "byte_prefixes", "bit")

    def __init__(self, number: int, kind: int, len_type: int, max_len: int):
        self.number, self.key, self.kind = number, str(number), kind
        self.len_type, self.max_len = len_type, max_len
        self.bit = 1 << (128 - number)
        if kind in (_VAR_TEXT, _VAR_BIN):
            # A length that does not fit in len_type digits cannot be encoded, nor decoded.
            self.top = min(max_len, 10 ** len_type - 1)
            self.prefixes, self.byte_prefixes, self.lengths = _prefix_tables(len_type, self.top)
        else:
            self.top, self.prefixes, self.byte_prefixes, self.lengths = max_len, None, None, None

    @property
    def binary(self) -> bool:
        return self.kind in (_FIXED_BIN, _VAR_BIN)


@functools.lru_cache(maxsize=None)
def _prefix_tables(len_type: int, top: int) -> tuple[tuple[str, ...], tuple[bytes, ...], dict[str, int]]:
    """Length prefixes 0..top as str and bytes, and canonical prefix -> length (shared, never changed)."""
    prefixes = tuple(f"{n:0{len_type}d}" for n in range(top + 1))
    return prefixes, tuple(p.encode("ascii") for p in prefixes), {p: n for n, p in enumerate(prefixes)}


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


def _field(number: int, field_spec: Any) -> _Field | None:
    if not isinstance(field_spec, dict):
        return None
    len_type, max_len = field_spec.get("len_type"), field_spec.get("max_len")
    if type(len_type) is not int or type(max_len) is not int or len_type < 0 or max_len < 0:
        return None
    if field_spec.get("len_count", "bytes") != "bytes":
        return None
    if len_type and not _is_ascii(field_spec.get("len_enc")):
        return None
    if len_type > 9 or (len_type and min(max_len, 10 ** len_type - 1) > _LONGEST_PREFIX_TABLE):
        return None   # (length tables that big are not worth building)
    data_enc = field_spec.get("data_enc")
    if data_enc == "b":
        return _Field(number, _VAR_BIN if len_type else _FIXED_BIN, len_type, max_len)
    if _is_ascii(data_enc):
        return _Field(number, _VAR_TEXT if len_type else _FIXED_TEXT, len_type, max_len)
    return None


def compile_codec(spec: dict, *, specialised_max: int = SPECIALISED_MAX) -> CompiledCodec | None:
    """Compile `spec` (a pyiso8583 spec dict), or None when it uses something not compiled here.

    `specialised_max` caps the straight-line decoders and encoders generated as messages come (each);
    0 keeps the table-driven codec only."""
    try:
        header_len = spec["h"]["max_len"]
        if type(header_len) is not int or header_len > 0 or not _is_ascii(spec["t"]["data_enc"]):
            return None
        bitmap_kind = _bitmap_kind(spec["p"])
        if bitmap_kind is None or bitmap_kind != _bitmap_kind(spec["1"]):
            return None   # (one binary and one ASCII bitmap: not compiled)
    except (KeyError, TypeError, AttributeError):
        return None
    fields: dict[int, _Field] = {}
    for key, field_spec in spec.items():
        if key in ("h", "t", "p", "1", "65") or not (isinstance(key, str) and key.isnumeric()):
            continue   # never looked up as a field by pyiso8583
        try:
            number = int(key)
        except ValueError:
            return None
        if key != str(number) or not 2 <= number <= 128:
            return None   # fields 129-192 (tertiary bitmap), odd keys: left to pyiso8583
        field = _field(number, field_spec)
        if field is None:
            return None
        fields[number] = field
    binary = bitmap_kind == "b"
    return CompiledCodec(spec, _make_decoder(binary, fields, specialised_max),
                         _make_encoder(binary, fields, specialised_max))


# -- decoder -----------------------------------------------------------------------------------
def _slow_length(raw: str, len_type: int, max_len: int) -> int:
    """A length prefix that is not canonical: read it as pyiso8583 does, with int().

    `raw` comes from the latin-1 or ASCII text of the message; a non-ASCII character in it is caught
    by the decoder's ASCII check, which rejects the message whatever int() made of it."""
    if len(raw) != len_type:
        raise CompiledCodecError("length prefix cut short")
    length = int(raw)
    if length > max_len or length < 0:
        raise CompiledCodecError("length out of range")
    return length


def _make_decoder(binary: bool, fields: dict[int, _Field], specialised_max: int):
    width = 8 if binary else 16          # one bitmap, in bytes of the message
    # tables[j][v]: (key, kind, width or len_type, length table, max_len) of each field that value v
    # of bitmap byte j announces, in field order. Bits 1 and 65 announce bitmaps, not fields.
    entries = {}
    for number in range(2, 129):
        if number != 65:
            f = fields.get(number)
            entries[number] = ((f.key, f.kind, f.len_type or f.max_len, f.lengths, f.max_len) if f
                               else (str(number), _UNDEFINED, 0, None, 0))
    tables = [[tuple(entries[j * 8 + bit + 1] for bit in range(8)
                     if value & (0x80 >> bit) and (j * 8 + bit + 1) in entries)
               for value in range(256)]
              for j in range(16)]
    tables_p, tables_s, tables_ps = tables[:8], tables[8:], tables
    fromhex = bytes.fromhex
    slow_length = _slow_length
    Error = CompiledCodecError

    def walk_tables(s: bytes) -> dict[str, str]:
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
        # Positions only grow (lengths are >= 0), so one check at the end (i == total) covers every
        # slice; a length prefix cut short does not match the table and fails in slow_length.
        for table, value in walk:
            if value:
                for key, kind, size, lengths, max_len in table[value]:
                    if kind == 0:          # _FIXED_TEXT
                        e = i + size
                        doc[key] = t[i:e]
                    elif kind == 1:        # _VAR_TEXT
                        e = i + size
                        length = lengths.get(t[i:e])
                        if length is None:
                            length = slow_length(t[i:e], size, max_len)
                        i = e
                        e = i + length
                        doc[key] = t[i:e]
                    elif kind == 2 or kind == 3:     # _FIXED_BIN, _VAR_BIN
                        e = i + size
                        if kind == 3:
                            length = lengths.get(t[i:e])
                            if length is None:
                                length = slow_length(t[i:e], size, max_len)
                            i = e
                            e = i + length
                        doc[key] = s[i:e].hex().upper()
                        if binary_spans is None:
                            binary_spans = []
                        binary_spans.append((i, e))
                    else:
                        raise Error(f"field {key} is not in this spec")
                    i = e
        if i != total:
            raise Error("message cut short, or extra data after the last field")
        if binary_spans is None:
            if not (s[text_from:] if text_from else s).isascii():
                raise Error("non-ASCII text")
        else:
            for start, end in binary_spans:
                if not s[text_from:start].isascii():
                    raise Error("non-ASCII text")
                text_from = end
            if not s[text_from:].isascii():
                raise Error("non-ASCII text")
        return doc

    # bitmap bytes as received -> straight-line decoder for messages with exactly that bitmap.
    specialised: dict[bytes, Callable[[bytes], dict[str, str]]] = {}
    specialised_get = specialised.get
    hex_high = frozenset(b"89ABCDEFabcdef")
    # has_secondary[b]: the first byte of the bitmap region says a secondary bitmap follows.
    has_secondary = tuple((b & 0x80 if binary else b in hex_high) != 0 for b in range(256))
    one, two = 4 + width, 4 + 2 * width

    def learn(s: bytes, doc: dict[str, str]) -> None:
        """`s` decoded to `doc` through the tables: generate the decoder for its bitmap."""
        region = s[4:two] if "1" in doc else s[4:one]
        if len(doc.get("1", "")) > 16 or has_secondary[region[0]] != ("1" in doc):
            return   # tertiary bitmap, or whitespace in an ASCII bitmap: the tables only
        if not binary and len(fromhex(region.decode("ascii"))) * 2 != len(region):
            return
        numbers = [int(key) for key in doc if key not in ("t", "p", "1")]
        specialised[region] = _generate_decoder(binary, len(region), [fields[n] for n in numbers],
                                                doc["p"], doc.get("1"))

    def decode(s: bytes) -> dict[str, str]:
        if s.__class__ is not bytes:
            if not isinstance(s, (bytes, bytearray)):
                raise TypeError(f"Encoded ISO8583 data must be bytes or bytearray, not {s.__class__.__name__}")
            s = bytes(s)
        if len(s) > 4:
            decoder = specialised_get(s[4:two] if has_secondary[s[4]] else s[4:one])
            if decoder is not None:
                return decoder(s)
        doc = walk_tables(s)
        if len(specialised) < specialised_max:
            learn(s, doc)
        return doc

    return decode


def _generate_decoder(binary: bool, bitmaps_len: int, fields: list[_Field], p: str, second: str | None):
    """Straight-line decoder for messages whose bitmaps (`bitmaps_len` bytes after the MTI) announce
    exactly `fields`; the caller has checked the bitmap bytes. Only field numbers (ints) and
    constants from the namespace go into the source."""
    base = 4 + bitmaps_len
    has_binary = any(f.binary for f in fields)
    namespace: dict[str, Any] = {"E": CompiledCodecError, "slow": _slow_length, "P": p, "S": second}
    lines = ["def decode(s):"]
    if has_binary:
        # Binary fields come from s, text from its latin-1 text t (same offsets); ASCII checked at the end.
        lines.append("    t = s.decode('latin-1')")
        start = base
    elif binary:
        lines.append(f"    t = s[{base}:].decode('ascii')")   # offsets relative to the end of the bitmaps
        start = 0
    else:
        lines.append("    t = s.decode('ascii')")
        start = base
    lines.append("    total = len(t)")
    mti = "s[:4].decode('ascii')" if binary else "t[:4]"

    # The position is `var + offset`: var is None (a constant) until the first variable field.
    var, offset = None, start

    def at(delta: int) -> str:
        if var is None:
            return str(offset + delta)
        return f"{var} + {offset + delta}" if offset + delta else var

    values, spans = [], []
    for f in fields:
        n = f.number
        if f.kind in (_FIXED_TEXT, _FIXED_BIN):
            if f.kind == _FIXED_TEXT:
                lines.append(f"    f{n} = t[{at(0)}:{at(f.max_len)}]")
            else:
                lines.append(f"    a{n} = {at(0)}")
                lines.append(f"    e{n} = {at(f.max_len)}")
                lines.append(f"    f{n} = s[a{n}:e{n}].hex().upper()")
                spans.append(n)
            offset += f.max_len
        else:
            namespace[f"T{n}"] = f.lengths
            lines.append(f"    a = {at(0)}")
            lines.append(f"    e = a + {f.len_type}")
            lines.append(f"    n = T{n}.get(t[a:e])")
            lines.append("    if n is None:")
            lines.append(f"        n = slow(t[a:e], {f.len_type}, {f.max_len})")
            lines.append("    i = e + n")
            if f.kind == _VAR_TEXT:
                lines.append(f"    f{n} = t[e:i]")
            else:
                lines.append(f"    a{n} = e")
                lines.append(f"    e{n} = i")
                lines.append(f"    f{n} = s[e:i].hex().upper()")
                spans.append(n)
            var, offset = "i", 0
        values.append(f"'{n}': f{n}")
    lines.append(f"    if {at(0)} != total:")
    lines.append("        raise E('message cut short, or extra data after the last field')")
    if has_binary:
        text_from = str(base) if binary else "0"
        for n in spans:
            lines.append(f"    if not s[{text_from}:a{n}].isascii():")
            lines.append("        raise E('non-ASCII text')")
            text_from = f"e{n}"
        lines.append(f"    if not s[{text_from}:].isascii():")
        lines.append("        raise E('non-ASCII text')")
    bitmaps = "'p': P, '1': S" if second is not None else "'p': P"
    lines.append(f"    return {{'t': {mti}, {bitmaps}{''.join(', ' + v for v in values)}}}")
    source = "\n".join(lines)
    exec(compile(source, f"<compiled decoder {p}{second or ''}>", "exec"), namespace)
    namespace["decode"].source = source   # for whoever debugs it
    return namespace["decode"]


# -- encoder -----------------------------------------------------------------------------------
def _bitmaps(binary: bool, bits: int) -> bytes:
    """The encoded bitmaps for `bits` (field n = 1 << (128 - n)), as pyiso8583 computes them."""
    if bits & _SECONDARY:
        bits |= _BIT1
    if bits & _BIT1:
        encoded = bits.to_bytes(16, "big") if binary else b"%032X" % bits
        if bits & _BIT65:   # only from an alias of 65 ("065"): an all-zero tertiary bitmap
            encoded += bytes(8) if binary else b"0" * 16
        return encoded
    return (bits >> 64).to_bytes(8, "big") if binary else b"%016X" % (bits >> 64)


def _make_encoder(binary: bool, fields: dict[int, _Field], specialised_max: int):
    by_key = {f.key: f for f in fields.values()}
    # key -> (field number, bit, kind, width or longest length, prefixes as str, as bytes)
    entries = {f.key: (f.number, f.bit, f.kind, f.top, f.prefixes, f.byte_prefixes) for f in fields.values()}
    lookup = entries.get
    Error = CompiledCodecError
    a2b_hex = binascii.a2b_hex

    def other_key(key: Any, doc: dict) -> int:
        """Bits a key that is not a canonical field key adds (0 if none); raises where pyiso8583 does."""
        if key == "t" or key == "1" or key == "65":
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
        if canonical not in entries or canonical not in doc:
            raise Error(f"field {key!r}: {canonical} not in the spec or not in the message")
        return 0

    def encode_with_binary_fields(mti: bytes, bits: int, present: list) -> bytes:
        chunks = [mti, _bitmaps(binary, bits)]
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

    def walk_tables(doc: dict) -> bytes:
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
                break   # (value.encode() decides, as in pyiso8583)
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
            return mti + _bitmaps(binary, bits) + "".join(parts).encode("ascii")
        return encode_with_binary_fields(mti, bits, present)

    # key sequence (the caller's dict order) -> straight-line encoder for dicts with exactly those keys.
    specialised: dict[tuple, Callable[[dict], bytes]] = {}
    specialised_get = specialised.get

    def learn(keys: tuple) -> None:
        names, numbers = [], []
        for key in keys:
            if key == "t":
                names.append("mt")
            elif key in by_key and key.__class__ is str:
                names.append(f"f{key}")
                numbers.append(int(key))
            elif key.__class__ is str and (key in ("1", "65") or not key.isnumeric()):
                names.append("_")          # ignored by pyiso8583
            else:
                return                     # an alias of a field: the tables only
        specialised[keys] = _generate_encoder(binary, names, [fields[n] for n in sorted(numbers)])

    def encode(doc: Any) -> bytes:
        if doc.__class__ is not dict:
            doc = dict(doc)
        keys = tuple(doc)
        encoder = specialised_get(keys)
        if encoder is not None:
            return encoder(doc)
        payload = walk_tables(doc)
        if len(specialised) < specialised_max:
            learn(keys)
        return payload

    return encode


def _generate_encoder(binary: bool, names: list[str], fields: list[_Field]):
    """Straight-line encoder for dicts whose keys, in order, are those `names` stand for (mt: "t",
    fN: field N, _: ignored); `fields` in field order. Only field numbers go into the source."""
    bitmaps = _bitmaps(binary, sum(f.bit for f in fields))
    namespace: dict[str, Any] = {"E": CompiledCodecError, "a2b_hex": binascii.a2b_hex, "BM": bitmaps,
                                 "BMT": bitmaps.decode("ascii") if not binary else None}
    unpack = ", ".join(names) + ("," if len(names) == 1 else "")
    lines = ["def encode(doc):", f"    {unpack} = doc.values()"]
    # segments: ("text", expression of a str) or ("bytes", expression of bytes), in message order
    if binary:
        lines.append("    mb = mt.encode('ascii')")
        lines.append("    if len(mb) != 4:")
        lines.append("        raise E('MTI is not 4 characters')")
        segments = [("bytes", "mb"), ("bytes", "BM")]
    else:
        lines.append("    if len(mt) != 4:")        # a str: joined and encoded below
        lines.append("        raise E('MTI is not 4 characters')")
        segments = [("text", "mt"), ("text", "BMT")]
    for f in fields:
        n = f.number
        if f.kind == _FIXED_TEXT:
            lines.append(f"    if len(f{n}) != {f.max_len}:")
            lines.append("        raise E('value of the wrong length')")
            segments.append(("text", f"f{n}"))
        elif f.kind == _VAR_TEXT:
            namespace[f"P{n}"] = f.prefixes
            lines.append(f"    n{n} = len(f{n})")
            lines.append(f"    if n{n} > {f.top}:")
            lines.append("        raise E('value too long')")
            segments += [("text", f"P{n}[n{n}]"), ("text", f"f{n}")]
        elif f.kind == _FIXED_BIN:
            lines.append(f"    b{n} = a2b_hex(f{n})")
            lines.append(f"    if len(b{n}) != {f.max_len}:")
            lines.append("        raise E('value of the wrong length')")
            segments.append(("bytes", f"b{n}"))
        else:
            namespace[f"P{n}"] = f.prefixes
            lines.append(f"    b{n} = a2b_hex(f{n})")
            lines.append(f"    n{n} = len(b{n})")
            lines.append(f"    if n{n} > {f.top}:")
            lines.append("        raise E('value too long')")
            segments += [("text", f"P{n}[n{n}]"), ("bytes", f"b{n}")]
    # Consecutive text is joined and encoded at once ("".join refuses what is not a str; encode
    # refuses what is not ASCII, as pyiso8583's value.encode("ascii") does).
    parts, run = [], []
    for kind, expression in segments + [("end", "")]:
        if kind == "text":
            run.append(expression)
            continue
        if run:
            parts.append(f"''.join(({', '.join(run)},)).encode('ascii')")
            run = []
        if kind == "bytes":
            parts.append(expression)
    joined = " + ".join(parts) if len(parts) <= 3 else f"b''.join(({', '.join(parts)},))"
    lines.append(f"    return {joined}")
    source = "\n".join(lines)
    exec(compile(source, f"<compiled encoder {bitmaps.hex()}>", "exec"), namespace)
    namespace["encode"].source = source   # for whoever debugs it
    return namespace["encode"]
