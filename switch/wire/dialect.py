"""Wire dialects as data: a file in `codecs/` names its framing, a pyiso8583
base spec and the field overrides, plus the dialect's code tables and rules.
A `json-lines` file (opcjson) names no spec: its messages are JSON objects.

pyiso8583 is the codec. This module only adds what pyiso8583 leaves to its
caller: it decodes exactly one framed message, encodes from a copy (pyiso8583
adds the bitmap to the dict it is given), and turns codec errors into our error
tree with the field and position named.
"""

from __future__ import annotations

import copy
import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import iso8583
import iso8583.specs
import orjson

from switch.errors import LocalProtocolError, MessageDecodeError
from switch.resources import data_dir
from switch.wire.compiled import CompiledCodec, compile_codec
from switch.wire.framing import FrameDecoder, LineDecoder, encode_frame

# Fields we try to recover from a message that does not decode, so that it can
# still be answered (the acquirer matches answers by MTI, 11 and 37).
MATCHING_FIELDS = ("t", "11", "37")


@dataclass(frozen=True)
class Dialect:
    name: str
    header: str
    max_frame: int
    spec: dict
    rules: dict[str, Any] = field(default_factory=dict)
    # The same codec compiled for this spec (switch.wire.compiled), byte-identical to pyiso8583 and
    # several times faster; None where the spec has kinds it does not compile (pos87's BCD).
    compiled: CompiledCodec | None = None

    def decode(self, payload: bytes) -> dict[str, str]:
        """Decode one message (one frame's payload, nothing more)."""
        if self.compiled is not None:
            try:
                return self.compiled.decode(payload)
            except Exception:
                pass  # a bad message: pyiso8583 below says precisely what is wrong with it
        try:
            fields, _ = iso8583.decode(payload, self.spec)
        except iso8583.DecodeError as exc:
            partial = {key: exc.doc_dec[key] for key in MATCHING_FIELDS if key in exc.doc_dec}
            raise MessageDecodeError(f"{self.name}: {exc.msg}: field {exc.field} at byte {exc.pos}",
                                     field=exc.field, position=exc.pos, partial=partial) from None
        except KeyError as exc:
            # Bit 65 set announces a tertiary bitmap, whose fields (129-192) no 1987 spec defines:
            # pyiso8583 then looks them up in the spec and fails with a bare KeyError.
            raise MessageDecodeError(f"{self.name}: field {exc.args[0]} is not in this dialect",
                                     field=str(exc.args[0])) from None
        return fields

    def encode(self, fields: dict[str, str]) -> bytes:
        """Encode one message (without its length header)."""
        if self.compiled is not None:
            try:
                return self.compiled.encode(fields)
            except Exception:
                pass  # pyiso8583 below names the field it cannot carry
        try:
            payload, _ = iso8583.encode(dict(fields), self.spec)
        except iso8583.EncodeError as exc:
            raise LocalProtocolError(f"{self.name}: cannot encode: {exc}") from None
        return bytes(payload)

    def pack(self, fields: dict[str, str]) -> bytes:
        """Encode one message and put its length header in front."""
        return encode_frame(self.encode(fields), self.header)

    def frame_decoder(self, max_frame: int | None = None) -> FrameDecoder:
        return FrameDecoder(self.header, max_frame or self.max_frame)


@dataclass(frozen=True)
class JsonLinesDialect:
    """One JSON object a line. A line that is not an object with a string `type` does not decode."""
    name: str
    max_frame: int
    rules: dict[str, Any] = field(default_factory=dict)
    header: str = "line"

    def decode(self, payload: bytes) -> dict:
        try:
            message = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise MessageDecodeError(f"{self.name}: not JSON: {exc}", position=getattr(exc, "pos", None)) from None
        if not isinstance(message, dict):
            raise MessageDecodeError(f"{self.name}: a {type(message).__name__}, not a JSON object")
        if not isinstance(message.get("type"), str):
            raise MessageDecodeError(f"{self.name}: object without a string 'type'", field="type")
        return message

    def encode(self, message: dict) -> bytes:
        payload = orjson.dumps(message)
        if len(payload) > self.max_frame:
            raise LocalProtocolError(f"{self.name}: message of {len(payload)} bytes is over the line cap")
        return payload

    def pack(self, message: dict) -> bytes:
        return self.encode(message) + b"\n"

    def frame_decoder(self, max_frame: int | None = None) -> LineDecoder:
        return LineDecoder(max_frame or self.max_frame)


def dialect_from_file(path: Path) -> Dialect | JsonLinesDialect:
    definition = json.loads(path.read_text())
    if definition.get("format") == "json-lines":
        return JsonLinesDialect(name=definition["name"], max_frame=definition["framing"]["max_frame"],
                                rules=definition.get("rules", {}))
    base_name = definition["base_spec"]
    try:
        base = getattr(iso8583.specs, base_name)
    except AttributeError:
        raise LocalProtocolError(f"{path}: base_spec {base_name!r} is not a pyiso8583 spec") from None
    spec = copy.deepcopy(base)
    for key, overrides in definition.get("fields", {}).items():
        spec[key] = {**spec.get(key, {}), **overrides}
    framing = definition["framing"]
    return Dialect(name=definition["name"], header=framing["header"], max_frame=framing["max_frame"],
                   spec=spec, rules=definition.get("rules", {}), compiled=compile_codec(spec))


@functools.cache
def load_dialect(name: str) -> Dialect | JsonLinesDialect:
    """The dialect `name` as defined in codecs/<name>.json."""
    path = data_dir("codecs") / f"{name}.json"
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.json"))
        raise LocalProtocolError(f"no dialect {name!r} (known: {', '.join(known)})")
    return dialect_from_file(path)
