"""One write per connection per event-loop turn.

Under load many answers complete in the same turn of the loop; writing each
frame on its own costs a system call apiece. An outbox gathers what is written
to one transport during a turn and hands it over in one write at the end.
"""

from __future__ import annotations

import asyncio


class Outbox:
    __slots__ = ("_transport", "_loop", "_chunks", "_scheduled")

    def __init__(self, transport: asyncio.Transport):
        self._transport = transport
        self._loop = asyncio.get_running_loop()
        self._chunks: list[bytes] = []
        self._scheduled = False

    def write(self, data: bytes) -> None:
        self._chunks.append(data)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        chunks, self._chunks = self._chunks, []
        if not self._transport.is_closing():
            self._transport.write(chunks[0] if len(chunks) == 1 else b"".join(chunks))
