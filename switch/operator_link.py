"""Links to operators: one TCP connection each, and the pool that shares an operator's load.

A link dials the operator (`connect` mode), signs on, echoes when idle, matches
answers to requests, and reconnects with capped exponential backoff and jitter
when it drops. What goes on the wire is the dialect adapter's business
(`switch.operator_dialects`); this module only moves messages and keeps time.

A request whose link drops, or whose answer does not come within the operator's
timeout, ends in `NoAnswer`: its outcome is unknown. A late answer finds no
waiter and is logged, never matched to a newer request.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import time

from switch.config import OperatorConfig, LinkConfig
from switch.errors import RemoteProtocolError
from switch.model import OperatorAnswer, TopUp
from switch.operator_dialects import Opa87Adapter

log = logging.getLogger("airswitch.operator")

BACKOFF_START = 0.2  # seconds before the first reconnect


class NoLiveLink(Exception):
    """Every link of the operator is down or at its in-flight cap: answer 91 at once."""


class NoAnswer(Exception):
    """The request left but no answer came back (timeout or link lost): outcome unknown."""


class OperatorLink(asyncio.Protocol):
    """One connection to an operator. `run()` keeps it connected until `close()`."""

    def __init__(self, operator: OperatorConfig, link: LinkConfig, adapter: Opa87Adapter, index: int):
        self.operator = operator
        self.link = link
        self.adapter = adapter
        self.name = f"{operator.id}#{index} {link.host}:{link.port}"
        self.is_up = False
        self._transport: asyncio.Transport | None = None
        self._decoder = adapter.dialect.frame_decoder()
        self._pending: dict[str, asyncio.Future] = {}
        self._stans = itertools.count(1)
        self._last_received = 0.0
        self._closing = False
        self._lost: asyncio.Future | None = None
        self._task: asyncio.Task | None = None

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    # -- lifecycle ---------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name=f"link {self.name}")

    async def close(self) -> None:
        self._closing = True
        if self._transport is not None:
            self._transport.close()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        failures = 0
        while not self._closing:
            try:
                await asyncio.wait_for(
                    loop.create_connection(lambda: self, self.link.host, self.link.port),
                    self.operator.connect_timeout)
                await self._sign_on()
                failures = 0
                log.info("link %s up", self.name)
                await self._keep_alive()
            except asyncio.CancelledError:
                raise
            except (OSError, asyncio.TimeoutError, NoAnswer, RemoteProtocolError) as exc:
                log.warning("link %s down: %s", self.name, exc or type(exc).__name__)
            finally:
                self._drop()
            if self._closing:
                break
            failures += 1
            delay = min(self.operator.backoff_max, BACKOFF_START * 2 ** min(failures, 16))
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))

    async def _sign_on(self) -> None:
        answer = await self._exchange(self.adapter.sign_on)
        if not self.adapter.network_ok(answer):
            raise RemoteProtocolError(f"sign-on refused: {answer}")
        self.is_up = True

    async def _keep_alive(self) -> None:
        """Echo after `echo_interval` of silence; a missed echo takes the link down."""
        interval = self.operator.echo_interval
        while True:
            idle = time.monotonic() - self._last_received
            if idle < interval:
                done, _ = await asyncio.wait([self._lost], timeout=interval - idle)
                if done:
                    return
                continue
            answer = await self._exchange(self.adapter.echo)
            if not self.adapter.network_ok(answer):
                raise RemoteProtocolError(f"echo refused: {answer}")

    def _drop(self) -> None:
        self.is_up = False
        if self._transport is not None:
            self._transport.close()  # connection_lost fails whatever is still in flight
            self._transport = None

    # -- asyncio.Protocol ----------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._decoder = self.adapter.dialect.frame_decoder()
        self._last_received = time.monotonic()
        self._lost = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        self.is_up = False
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(NoAnswer(f"link {self.name} lost with the request in flight"))
        self._pending.clear()

    def data_received(self, data: bytes) -> None:
        self._last_received = time.monotonic()
        try:
            frames = self._decoder.feed(data)
        except RemoteProtocolError as exc:
            log.error("link %s: %s; closing", self.name, exc)
            self._transport.close()
            return
        for frame in frames:
            try:
                message = self.adapter.dialect.decode(frame)
            except RemoteProtocolError as exc:
                log.error("link %s: dropped a message that does not decode: %s", self.name, exc)
                continue
            self._dispatch(message)

    def _dispatch(self, message: dict) -> None:
        if self.adapter.is_request(message):
            reply = self.adapter.answer_operator_request(message)
            if reply is not None and self._transport is not None:
                self._transport.write(self.adapter.dialect.pack(reply))
            return
        key = self.adapter.match_key(message)
        future = self._pending.pop(key, None)
        if future is None or future.done():
            log.warning("link %s: answer with no waiter (late or unknown): MTI %s key %s 39=%s",
                        self.name, message.get("t"), key, message.get("39"))
            return
        future.set_result(message)

    # -- requests --------------------------------------------------------------
    def _next_stan(self) -> str:
        for _ in range(1000):
            stan = f"{next(self._stans) % 1_000_000 or 1:06d}"
            if stan not in self._pending:
                return stan
        raise NoLiveLink(f"link {self.name}: no free STAN")

    async def _exchange(self, build, *args) -> dict:
        """Send one request built by `build(stan, *args)` and wait for its answer."""
        if self._transport is None or self._transport.is_closing():
            raise NoAnswer(f"link {self.name} is not connected")
        stan = self._next_stan()
        message = build(stan, *args)
        key = stan
        future = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        self._transport.write(self.adapter.dialect.pack(message))
        try:
            return await asyncio.wait_for(future, self.operator.timeout)
        except asyncio.TimeoutError:
            raise NoAnswer(f"operator {self.operator.id} did not answer within {self.operator.timeout}s") from None
        finally:
            if self._pending.get(key) is future:
                del self._pending[key]

    async def top_up(self, topup: TopUp) -> OperatorAnswer:
        answer = await self._exchange(self.adapter.top_up, topup)
        return self.adapter.parse_answer(answer, topup)


class OperatorPool:
    """All links of one operator; requests go to the live link with the fewest in flight."""

    def __init__(self, operator: OperatorConfig, institution_id: str, terminal_id: str):
        self.operator = operator
        adapter = Opa87Adapter(institution_id, terminal_id)
        self.links = [OperatorLink(operator, link, adapter, i) for i, link in enumerate(operator.links)]

    def start(self) -> None:
        for link in self.links:
            link.start()

    async def close(self) -> None:
        await asyncio.gather(*(link.close() for link in self.links))

    @property
    def is_up(self) -> bool:
        return any(link.is_up for link in self.links)

    async def wait_up(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.is_up and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return self.is_up

    def pick(self) -> OperatorLink:
        best: OperatorLink | None = None
        cap = self.operator.max_in_flight
        for link in self.links:
            if link.is_up and link.in_flight < cap and (best is None or link.in_flight < best.in_flight):
                best = link
        if best is None:
            raise NoLiveLink(f"operator {self.operator.id}: no live link with room")
        return best
