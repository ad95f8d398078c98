"""The wire layer, pure (no asyncio): framing and the dialects (ISO 8583 and JSON lines) read from `codecs/`."""

from switch.wire.dialect import Dialect, JsonLinesDialect, load_dialect
from switch.wire.framing import FrameDecoder, LineDecoder, encode_frame

__all__ = ["Dialect", "FrameDecoder", "JsonLinesDialect", "LineDecoder", "encode_frame", "load_dialect"]
