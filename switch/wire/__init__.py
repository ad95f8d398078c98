"""The wire layer, pure (no asyncio): framing and ISO 8583 dialects read from `codecs/`."""

from switch.wire.dialect import Dialect, load_dialect
from switch.wire.framing import FrameDecoder, encode_frame

__all__ = ["Dialect", "FrameDecoder", "encode_frame", "load_dialect"]
