"""Cutting a TCP byte stream into messages, and the reverse.

Two length headers exist on our links: `binary2` (2-byte unsigned big-endian,
bank87/pos87/opb93) and `ascii4` (4 ASCII digits, opa87). Neither counts itself.
The decoder is a pure state machine in the manner of h11: feed it bytes in any
slicing, get whole frames back; a frame over the cap or a header that is not a
length raises `FrameError`, after which the connection must be closed.

`json-lines` dialects (opcjson) are framed by a newline instead: `LineDecoder`
cuts lines with a cap, and an over-long line is dropped (counted, for the I/O
layer to log) while the link stays up, as INTERFACES.md 2.3 asks.

Both decoders answer the same three calls (`feed`, `pending`, `take_dropped`) and
carry `max_frame`, so a link holds either without asking which it has.
"""

from __future__ import annotations

from switch.errors import FrameError, LocalProtocolError

DEFAULT_MAX_FRAME = 8192
HEADERS = {"binary2": 2, "ascii4": 4}


class FrameDecoder:
    """Buffers received bytes and yields complete frame payloads."""

    __slots__ = ("_buffer", "_header", "_header_len", "max_frame")

    def __init__(self, header: str, max_frame: int = DEFAULT_MAX_FRAME):
        if header not in HEADERS:
            raise LocalProtocolError(f"unknown frame header {header!r}")
        self._header = header
        self._header_len = HEADERS[header]
        self.max_frame = max_frame
        self._buffer = bytearray()

    @property
    def pending(self) -> bool:
        """True while a partial frame waits for the rest of its bytes."""
        return bool(self._buffer)

    @staticmethod
    def take_dropped() -> list[int]:
        """Sizes of frames dropped since the last call: none here, a frame over the cap raises."""
        return []

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return every frame they complete (keep-alives dropped)."""
        buffer = self._buffer
        buffer += data
        frames: list[bytes] = []
        header_len = self._header_len
        start = 0
        end = len(buffer)
        while end - start >= header_len:
            size = self._length(buffer, start)
            if size > self.max_frame:
                raise FrameError(f"frame of {size} bytes is over the cap of {self.max_frame}")
            if end - start - header_len < size:
                break
            body_start = start + header_len
            if size:  # a zero length is a keep-alive
                frames.append(bytes(buffer[body_start:body_start + size]))
            start = body_start + size
        if start:
            del buffer[:start]
        return frames

    def _length(self, buffer: bytearray, start: int) -> int:
        if self._header_len == 2:
            return (buffer[start] << 8) | buffer[start + 1]
        digits = bytes(buffer[start:start + 4])
        if not digits.isdigit():
            raise FrameError(f"length header {digits!r} is not 4 ASCII digits")
        return int(digits)


def encode_frame(payload: bytes, header: str) -> bytes:
    """Prefix one message with its length header."""
    size = len(payload)
    if header == "binary2":
        if size > 0xFFFF:
            raise LocalProtocolError(f"message of {size} bytes does not fit a 2-byte length")
        return size.to_bytes(2, "big") + payload
    if header == "ascii4":
        if size > 9999:
            raise LocalProtocolError(f"message of {size} bytes does not fit a 4-digit length")
        return b"%04d" % size + payload
    raise LocalProtocolError(f"unknown frame header {header!r}")


class LineDecoder:
    """Newline-delimited messages; a line over `max_line` bytes (newline not counted) is dropped."""

    __slots__ = ("_buffer", "_discarding", "max_frame", "_dropped")

    def __init__(self, max_line: int):
        self.max_frame = max_line
        self._buffer = bytearray()
        self._discarding = False   # inside an over-long line: skip to its newline
        self._dropped: list[int] = []  # sizes of dropped lines, until the caller takes them to log

    @property
    def pending(self) -> bool:
        return bool(self._buffer) or self._discarding

    def take_dropped(self) -> list[int]:
        """Sizes of the over-long lines dropped whole since the last call.

        A line still being skipped stays behind (its size is still growing) until its newline comes.
        """
        if self._discarding:
            dropped, self._dropped = self._dropped[:-1], self._dropped[-1:]
        else:
            dropped, self._dropped = self._dropped, []
        return dropped

    def feed(self, data: bytes) -> list[bytes]:
        lines: list[bytes] = []
        buffer = self._buffer
        buffer += data
        start = 0
        while True:
            end = buffer.find(b"\n", start)
            if end < 0:
                break
            if self._discarding:
                self._discarding = False
                self._dropped[-1] += end - start
            elif end - start > self.max_frame:
                self._dropped.append(end - start)
            elif end > start:
                lines.append(bytes(buffer[start:end]).rstrip(b"\r"))
            start = end + 1
        del buffer[:start]
        if len(buffer) > self.max_frame:
            if not self._discarding:
                self._dropped.append(0)
                self._discarding = True
            self._dropped[-1] += len(buffer)
            buffer.clear()
        return lines
