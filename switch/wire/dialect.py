"""ISO 8583 dialects as data: a file in `codecs/` names its framing, a pyiso8583
base spec and the field overrides, plus the dialect's code tables and rules.

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

from switch.errors import LocalProtocolError, MessageDecodeError
from switch.resources import data_dir
from switch.wire.framing import FrameDecoder, encode_frame

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

    def decode(self, payload: bytes) -> dict[str, str]:
        """Decode one message (one frame's payload, nothing more)."""
        try:
            fields, _ = iso8583.decode(payload, self.spec)
        except iso8583.DecodeError as exc:
            partial = {key: exc.doc_dec[key] for key in MATCHING_FIELDS if key in exc.doc_dec}
            raise MessageDecodeError(f"{self.name}: {exc.msg}: field {exc.field} at byte {exc.pos}",
                                     field=exc.field, position=exc.pos, partial=partial) from None
        return fields

    def encode(self, fields: dict[str, str]) -> bytes:
        """Encode one message (without its length header)."""
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


def dialect_from_file(path: Path) -> Dialect:
    definition = json.loads(path.read_text())
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
                   spec=spec, rules=definition.get("rules", {}))


@functools.cache
def load_dialect(name: str) -> Dialect:
    """The dialect `name` as defined in codecs/<name>.json."""
    path = data_dir("codecs") / f"{name}.json"
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.json"))
        raise LocalProtocolError(f"no dialect {name!r} (known: {', '.join(known)})")
    return dialect_from_file(path)
