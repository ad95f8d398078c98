"""The TPDU that POS terminals put before every `pos87` message (INTERFACES.md 1.2).

A `pos87` frame is a 2-byte big-endian length N of what follows, then the 5-byte
TPDU (0x60, destination NII 2 bytes, source NII 2 bytes), then the message. The
length header is the plain `binary2` one, so `FrameDecoder("binary2")` cuts the
frames; this module only splits a frame's payload into TPDU and message and puts
them back together. The answer carries the TPDU with destination and source swapped.
"""

from __future__ import annotations

from dataclasses import dataclass

from switch.errors import LocalProtocolError, MessageDecodeError
from switch.wire.framing import DEFAULT_MAX_FRAME, FrameDecoder, encode_frame

TPDU_ID = 0x60       # first byte of every TPDU: "transaction TPDU" in the usual terminal specs
TPDU_LENGTH = 5
FRAME_HEADER = "binary2"


@dataclass(frozen=True)
class Tpdu:
    """Network international identifiers (NII) of the two ends, as 16-bit numbers."""

    destination: int
    source: int

    def __post_init__(self) -> None:
        for name in ("destination", "source"):
            value = getattr(self, name)
            if not 0 <= value <= 0xFFFF:
                raise LocalProtocolError(f"TPDU {name} NII {value!r} does not fit 2 bytes")

    def answer(self) -> Tpdu:
        """The TPDU of the answer: destination and source swapped."""
        return Tpdu(destination=self.source, source=self.destination)

    def __bytes__(self) -> bytes:
        return bytes((TPDU_ID,)) + self.destination.to_bytes(2, "big") + self.source.to_bytes(2, "big")

    def __repr__(self) -> str:
        return f"Tpdu(destination=0x{self.destination:04X}, source=0x{self.source:04X})"


def split_tpdu(payload: bytes) -> tuple[Tpdu, bytes]:
    """One frame's payload -> (its TPDU, the ISO 8583 message after it)."""
    if len(payload) < TPDU_LENGTH:
        raise MessageDecodeError(f"pos87: frame of {len(payload)} bytes is shorter than a {TPDU_LENGTH}-byte TPDU",
                                 field="tpdu", position=0)
    if payload[0] != TPDU_ID:
        raise MessageDecodeError(f"pos87: TPDU starts with 0x{payload[0]:02X}, not 0x{TPDU_ID:02X}",
                                 field="tpdu", position=0)
    tpdu = Tpdu(destination=int.from_bytes(payload[1:3], "big"), source=int.from_bytes(payload[3:5], "big"))
    return tpdu, bytes(payload[TPDU_LENGTH:])


def join_tpdu(tpdu: Tpdu, message: bytes) -> bytes:
    """A frame's payload: the TPDU, then the message (no length header)."""
    return bytes(tpdu) + message


def pack(tpdu: Tpdu, message: bytes) -> bytes:
    """A whole frame, ready to write: length header, TPDU, message."""
    return encode_frame(join_tpdu(tpdu, message), FRAME_HEADER)


def frame_decoder(max_frame: int = DEFAULT_MAX_FRAME) -> FrameDecoder:
    """Cuts a terminal's byte stream into frame payloads (TPDU + message each); N counts the TPDU."""
    return FrameDecoder(FRAME_HEADER, max_frame)
