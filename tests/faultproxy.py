"""A fault-injecting TCP proxy for adversity tests (in the manner of asyncpg's test
proxy): forwards 127.0.0.1:<port> to a target; `cut()` drops every connection and
refuses new ones, `blackhole()` keeps connections open but stops forwarding, and
`restore()` goes back to normal."""

from __future__ import annotations

import asyncio
import contextlib


class FaultProxy:
    def __init__(self, target_host: str, target_port: int):
        self.target = (target_host, target_port)
        self.mode = "pass"
        self.port = 0
        self._server: asyncio.Server | None = None
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "cut":
            writer.close()
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        pair = (writer, upstream_writer)
        self._pairs.add(pair)
        try:
            await asyncio.gather(self._pipe(reader, upstream_writer), self._pipe(upstream_reader, writer))
        except asyncio.CancelledError:
            pass  # the test's loop is closing: nothing to forward any more
        finally:
            self._pairs.discard(pair)
            for w in pair:
                w.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await reader.read(65536):
                while self.mode == "blackhole":
                    await asyncio.sleep(0.05)
                if self.mode == "cut":
                    break
                writer.write(data)
                await writer.drain()
        writer.close()

    def cut(self) -> None:
        """Drop every connection and refuse new ones (a server that went away)."""
        self.mode = "cut"
        for client, upstream in list(self._pairs):
            client.transport.abort()
            upstream.transport.abort()

    def blackhole(self) -> None:
        """Keep connections but forward nothing (a blocked network or a hung server)."""
        self.mode = "blackhole"

    def restore(self) -> None:
        self.mode = "pass"

    async def stop(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
