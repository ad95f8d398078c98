"""Links to operators: one TCP connection each, and the pool that shares an operator's load
and is the operator's `Provider` to the transaction core (`switch.providers.base`).

A link in `connect` mode dials the operator, signs on, and redials with capped
exponential backoff and jitter when it drops. A link in `accept` mode listens on
its own operator port: the operator's host dials in from an allowed address and
its first message must be a valid sign-on (ISO dialects) or login (opcjson);
anything else closes the connection. Either way the link then
echoes when idle (a missed echo takes it down), matches answers to requests by
the dialect's reference, and signs off when the switch shuts down. What goes on
the wire is the adapter's business (`switch.providers.adapters`).

A request that finds no live link with room, or no free reference, ends in
`NotSent`: nothing left the switch. A request whose link drops, or whose answer
does not come within the operator's timeout, ends in `NoAnswer`: its outcome is
unknown. Its reference is kept for a while so that a late answer is reported
against the transaction it belongs to (`on_late_answer`), never matched to a
newer request.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import logging
import random
import time
from collections import OrderedDict
from typing import Callable, Iterator

from switch.app.config import LinkConfig, OperatorConfig
from switch.errors import RemoteProtocolError
from switch.providers.adapters import OperatorAdapter, adapter_for
from switch.providers.adapters.iso import stan
from switch.providers.base import (NoAnswer, NotSent, OperatorAnswer, OperatorReversal, ProviderError,
                                   ReversalAnswer, TopUp)
from switch.outbox import Outbox

log = logging.getLogger("airswitch.operator")

BACKOFF_START = 0.2          # seconds before the first redial
SIGN_OFF_TIMEOUT = 1.0       # seconds a sign-off may take at shutdown
EXPIRED_REFERENCES = 10_000  # timed-out references remembered per link, for late answers
STAN_ATTEMPTS = 1000         # tries to find a STAN not in flight on a link
HANDSHAKE_TIMEOUT = 10.0     # seconds an accepted connection has to sign on or log in

LateAnswerHandler = Callable[[str, TopUp, OperatorAnswer], None]


class _Expired(Exception):
    """The operator's timeout passed with the request still waiting."""


def _expire(future: asyncio.Future) -> None:
    if not future.done():
        future.set_exception(_Expired())


class OperatorLink(asyncio.Protocol):
    """One connection to an operator."""

    def __init__(self, operator: OperatorConfig, adapter: OperatorAdapter, name: str,
                 on_late_answer: LateAnswerHandler | None = None, link: LinkConfig | None = None,
                 on_accepted: Callable[["OperatorLink", tuple], None] | None = None,
                 counter: Iterator[int] | None = None):
        self.operator = operator
        self.on_accepted = on_accepted  # accept mode: the pool vets the peer and starts serving
        self.link = link              # the configured link (connect mode); None for an accepted one
        self.adapter = adapter
        self.name = name
        self.on_late_answer = on_late_answer
        self._signed_on = False
        self._draining = False
        self.transport: asyncio.Transport | None = None
        self._decoder = adapter.dialect.frame_decoder()
        self._pending: dict[str, tuple[asyncio.Future, TopUp | None]] = {}
        self._expired: OrderedDict[str, TopUp] = OrderedDict()
        # Shared by all links of an operator: an operator knows a request by its STAN and time, whichever
        # link brought it, so a new or redialled link must not start again at STAN 1.
        self._counter = counter if counter is not None else stan_counter()
        self._last_received = 0.0
        self._closing = False
        self._lost: asyncio.Future | None = None
        self._task: asyncio.Task | None = None
        self._handshake_done: asyncio.Future | None = None  # accept mode: set once authenticated

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    @property
    def is_up(self) -> bool:
        """Signed on and taking new requests."""
        return self._signed_on and not self._draining

    # -- connect mode ---------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.create_task(self._dial_forever(), name=f"link {self.name}")

    async def _dial_forever(self) -> None:
        loop = asyncio.get_running_loop()
        failures = 0
        while not self._closing:
            try:
                await asyncio.wait_for(loop.create_connection(lambda: self, self.link.host, self.link.port),
                                       self.operator.connect_timeout)
                await self._sign_on()
                failures = 0
                log.info("link %s up", self.name)
                await self._keep_alive()
            except asyncio.CancelledError:
                raise
            except (OSError, asyncio.TimeoutError, ProviderError, RemoteProtocolError) as exc:
                log.warning("link %s down: %s", self.name, exc or type(exc).__name__)
            finally:
                self._drop()
            if self._closing:
                break
            failures += 1
            delay = min(self.operator.backoff_max, BACKOFF_START * 2 ** min(failures, 16))
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))

    async def _sign_on(self) -> None:
        if self.adapter.signs_on:
            answer = await self._network(self.adapter.sign_on)
            if not self.adapter.network_ok(answer):
                raise RemoteProtocolError(f"sign-on refused: {answer}")
        self._signed_on = True

    # -- accept mode ------------------------------------------------------------------
    def expect_handshake(self) -> None:
        """From now on the first message must be a sign-on or login (set before any byte is read)."""
        self._handshake_done = asyncio.get_running_loop().create_future()

    async def serve_accepted(self, handshake_timeout: float) -> None:
        """Run an accepted connection: wait for its handshake, then keep it alive until it drops."""
        try:
            await asyncio.wait([self._handshake_done, self._lost], timeout=handshake_timeout,
                               return_when=asyncio.FIRST_COMPLETED)
            if not self._handshake_done.done():
                if not self._lost.done():
                    log.warning("link %s: no valid handshake within %.0fs; closing", self.name, handshake_timeout)
                return
            self._signed_on = True
            log.info("link %s up (accepted)", self.name)
            await self._keep_alive()
        except (ProviderError, RemoteProtocolError, ConnectionError) as exc:
            log.warning("link %s down: %s", self.name, exc)
        finally:
            self._drop()

    def _accept_handshake(self, message: dict) -> None:
        reply = self.adapter.handshake(message)
        if reply is None:
            log.warning("link %s: first message is not a valid sign-on or login (%s); closing",
                        self.name, message.get("t") or message.get("type"))
            self.transport.close()
            return
        self._send(reply)
        self._handshake_done.set_result(None)

    # -- both modes ---------------------------------------------------------------------
    async def _keep_alive(self) -> None:
        """Echo after `echo_interval` of silence; a missed or refused echo takes the link down."""
        interval = self.operator.echo_interval
        while True:
            idle = time.monotonic() - self._last_received
            if idle < interval:
                done, _ = await asyncio.wait([self._lost], timeout=interval - idle)
                if done:
                    raise ConnectionError("connection closed")
                continue
            answer = await self._network(self.adapter.echo)
            if not self.adapter.network_ok(answer):
                raise RemoteProtocolError(f"echo refused: {answer}")

    async def close(self) -> None:
        """Sign off (where the dialect has it), then close for good."""
        self._closing = True
        if self._signed_on and self.adapter.signs_on:
            try:
                await asyncio.wait_for(self._network(self.adapter.sign_off), SIGN_OFF_TIMEOUT)
            except (ProviderError, asyncio.TimeoutError):
                pass
        self._signed_on = False
        if self.transport is not None:
            self.transport.close()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def drain(self, timeout: float) -> None:
        """Take no new requests; wait (bounded) for those in flight, then close."""
        self._draining = True
        deadline = time.monotonic() + timeout
        while self._pending and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await self.close()

    def _drop(self) -> None:
        self._signed_on = False
        if self.transport is not None:
            self.transport.close()  # connection_lost fails whatever is still in flight

    # -- asyncio.Protocol ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._outbox = Outbox(transport)
        self._decoder = self.adapter.dialect.frame_decoder()
        self._last_received = time.monotonic()
        self._lost = asyncio.get_running_loop().create_future()
        if self.on_accepted is not None:
            self.on_accepted(self, transport.get_extra_info("peername") or ("?", 0))

    def connection_lost(self, exc: Exception | None) -> None:
        self._signed_on = False
        self.transport = None
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)
        for reference, (future, topup) in self._pending.items():
            if topup is not None:
                self._remember_expired(reference, topup)
            if not future.done():
                future.set_exception(NoAnswer(f"link {self.name} lost with the request in flight"))
        self._pending.clear()

    def data_received(self, data: bytes) -> None:
        self._last_received = time.monotonic()
        try:
            frames = self._decoder.feed(data)
        except RemoteProtocolError as exc:
            if exc.closes_connection:   # a broken byte stream: nothing after it can be trusted
                log.error("link %s: %s; closing", self.name, exc)
                self.transport.close()
            else:
                log.error("link %s: %s", self.name, exc)
            return
        dropped = self._decoder.take_dropped()
        if dropped:
            log.error("link %s: dropped %d line(s) over the %d-byte cap", self.name, len(dropped),
                      self._decoder.max_frame)
        for frame in frames:
            try:
                message = self.adapter.dialect.decode(frame)
            except RemoteProtocolError as exc:   # one message (closes_connection False): the link stays
                log.error("link %s: ignored a message that does not decode: %s", self.name, exc)
                continue
            self._dispatch(message)

    def _dispatch(self, message: dict) -> None:
        if self._handshake_done is not None and not self._handshake_done.done():
            self._accept_handshake(message)
            return
        reply = self.adapter.operator_request(message)
        if reply is not None:
            self._send(reply)
            return
        key = self.adapter.answer_key(message)
        waiting = self._pending.pop(key, None) if key is not None else None
        if waiting is None:
            self._late_or_unknown(key, message)
            return
        future, _ = waiting
        if not future.done():
            future.set_result(message)

    def _late_or_unknown(self, key: str | None, message: dict) -> None:
        topup = self._expired.pop(key, None) if key is not None else None
        if topup is None:
            log.warning("link %s: answer with an unknown reference %r (%s); ignored", self.name, key,
                        message.get("t") or message.get("type"),
                        extra={"repeat": f"{self.operator.id}: answers with an unknown reference, ignored"})
            return
        answer = self.adapter.parse_answer(message, topup)
        log.warning("link %s: late answer %s for txn %s (acquirer already got 91)", self.name,
                    answer.operator_code, topup.txn_id,
                    extra={"repeat": f"{self.operator.id}: late answers (the acquirer already got 91)"})
        if self.on_late_answer is not None:
            self.on_late_answer(self.operator.id, topup, answer)

    def _remember_expired(self, reference: str, topup: TopUp) -> None:
        self._expired[reference] = topup
        if len(self._expired) > EXPIRED_REFERENCES:
            self._expired.popitem(last=False)

    def _send(self, message: dict) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self._outbox.write(self.adapter.dialect.pack(message))

    # -- requests -------------------------------------------------------------------------
    def _fresh_reference(self, reference_for: Callable[[int], str]) -> str:
        """A reference not in flight on this link for a message the switch originates (network, reversal)."""
        previous = None
        for _ in range(STAN_ATTEMPTS):
            reference = reference_for(next(self._counter))
            if reference not in self._pending:
                self._expired.pop(reference, None)  # a reused STAN no longer names the old request
                return reference
            if reference == previous:
                break  # derived, not counted (opcjson's "<txn_id>-R", "ping"): another try gives the same
            previous = reference
        raise NotSent(f"link {self.name}: no free reference")

    async def _network(self, build: Callable[[str], dict]) -> dict:
        reference = self._fresh_reference(self.adapter.reference)
        return await self._exchange(build(reference), reference)

    async def _exchange(self, message: dict, reference: str, topup: TopUp | None = None) -> dict:
        """Send one request and wait for the answer that carries `reference`."""
        if self.transport is None or self.transport.is_closing():
            raise NotSent(f"link {self.name} is not connected")
        if reference in self._pending:
            raise NotSent(f"link {self.name}: reference {reference} is still in flight")
        self._expired.pop(reference, None)
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending[reference] = (future, topup)
        self._send(message)
        # A timer on the future rather than asyncio.wait_for: no task or timeout context per request.
        timer = loop.call_later(self.operator.timeout, _expire, future)
        try:
            return await future
        except _Expired:
            if topup is not None:
                self._remember_expired(reference, topup)
            raise NoAnswer(f"operator {self.operator.id} did not answer within {self.operator.timeout}s") from None
        finally:
            timer.cancel()
            waiting = self._pending.get(reference)
            if waiting is not None and waiting[0] is future:
                del self._pending[reference]

    async def top_up(self, topup: TopUp) -> OperatorAnswer:
        answer = await self._exchange(self.adapter.top_up(topup), self.adapter.reference_of(topup), topup)
        return self.adapter.parse_answer(answer, topup)

    async def reverse(self, reversal: OperatorReversal) -> ReversalAnswer:
        """Send one reversal (or its repeat) and read the operator's answer."""
        reference = self._fresh_reference(lambda counter: self.adapter.reversal_reference(reversal, counter))
        answer = await self._exchange(self.adapter.reversal(reference, reversal), reference)
        return self.adapter.reversal_answer(answer)


class OperatorPool:
    """All links of one operator, and its `Provider`: requests go to the live link with the fewest in flight."""

    def __init__(self, operator: OperatorConfig, institution_id: str, terminal_id: str,
                 on_late_answer: LateAnswerHandler | None = None, reuse_port: bool = False,
                 stan_share: tuple[int, int] = (0, 1)):
        self.id = operator.id
        self.operator = operator
        self.reuse_port = reuse_port
        self.on_late_answer = on_late_answer
        self.adapter = adapter_for(operator.dialect, operator.id, institution_id, terminal_id, operator.secret)
        self.dialed: dict[LinkConfig, OperatorLink] = {}
        self.servers: dict[LinkConfig, asyncio.Server] = {}
        self.accepted: dict[OperatorLink, LinkConfig] = {}
        self._tasks: set[asyncio.Task] = set()
        self._counter = stan_counter(*stan_share)

    @property
    def links(self) -> list[OperatorLink]:
        return [*self.dialed.values(), *self.accepted]

    def next_reference(self) -> str:
        """The STAN of the next top-up to this operator (fixed before it is journaled and sent)."""
        return stan(next(self._counter))

    def accept_port(self, index: int = 0) -> int:
        """The port the index-th accept link listens on (useful when configured as 0)."""
        return list(self.servers.values())[index].sockets[0].getsockname()[1]

    async def start(self) -> None:
        for link in self.operator.links:
            await self._open(link)

    async def _open(self, link: LinkConfig) -> None:
        if link.mode == "connect":
            dialed = OperatorLink(self.operator, self.adapter, f"{self.operator.id} -> {link.host}:{link.port}",
                                  self.on_late_answer, link, counter=self._counter)
            self.dialed[link] = dialed
            dialed.start()
        else:
            self.servers[link] = await asyncio.get_running_loop().create_server(
                lambda: OperatorLink(self.operator, self.adapter, f"{self.operator.id} <- ?", self.on_late_answer,
                                     on_accepted=lambda accepted, peer: self._accepted(accepted, peer, link),
                                     counter=self._counter),
                link.host, link.port, reuse_address=True, reuse_port=self.reuse_port or None)
            log.info("operator %s: accepting %s links on %s:%d", self.operator.id, self.operator.dialect,
                     link.host, self.servers[link].sockets[0].getsockname()[1])

    def _accepted(self, link: OperatorLink, peer: tuple, config: LinkConfig) -> None:
        link.name = f"{self.operator.id} <- {peer[0]}:{peer[1]}"
        if not _address_allowed(peer[0], config.allowed_addresses):
            log.warning("operator %s: connection from %s, which is not an allowed address; closing",
                        self.operator.id, peer[0])
            link.transport.close()
            return
        self.accepted[link] = config
        link.expect_handshake()
        task = asyncio.get_running_loop().create_task(link.serve_accepted(HANDSHAKE_TIMEOUT))
        self._tasks.add(task)
        task.add_done_callback(lambda _: (self._tasks.discard(task), self.accepted.pop(link, None)))

    def stop_accepting(self) -> None:
        """Close the operator ports of accept links; links already up keep running."""
        for server in self.servers.values():
            server.close()

    async def drain(self, timeout: float) -> None:
        """Retire the whole operator: no new requests, in-flight ones finish (bounded), then close."""
        self.stop_accepting()
        await asyncio.gather(*(link.drain(timeout) for link in self.links))
        await self.close()

    async def close(self) -> None:
        self.stop_accepting()
        await asyncio.gather(*(link.close() for link in self.links))
        for task in list(self._tasks):
            task.cancel()

    @property
    def is_up(self) -> bool:
        return any(link.is_up for link in self.links)

    async def wait_up(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.is_up and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        return self.is_up

    async def top_up(self, topup: TopUp) -> OperatorAnswer:
        """Send on the least busy live link and wait for the answer; NotSent or NoAnswer otherwise."""
        return await self._least_busy().top_up(topup)

    async def reverse(self, reversal: OperatorReversal) -> ReversalAnswer:
        """Send one reversal (or its repeat) on the least busy live link; NotSent or NoAnswer otherwise."""
        return await self._least_busy().reverse(reversal)

    def is_nothing_to_reverse(self, operator_code: str) -> bool:
        return self.adapter.is_nothing_to_reverse(operator_code)

    def _least_busy(self) -> OperatorLink:
        best: OperatorLink | None = None
        cap = self.operator.max_in_flight
        for link in self.links:
            if link.is_up and link.in_flight < cap and (best is None or link.in_flight < best.in_flight):
                best = link
        if best is None:
            raise NotSent(f"operator {self.operator.id}: no live link with room")
        return best

    async def reconfigure(self, operator: OperatorConfig, drain_timeout: float) -> None:
        """Apply a reloaded configuration: unchanged links stay up, removed ones drain, new ones open."""
        self.operator = operator
        wanted = set(operator.links)
        removed: list[OperatorLink] = []
        for config in [c for c in self.dialed if c not in wanted]:
            removed.append(self.dialed.pop(config))
        for config in [c for c in self.servers if c not in wanted]:
            self.servers.pop(config).close()
            removed.extend(link for link, origin in self.accepted.items() if origin == config)
        for config in operator.links:
            if config not in self.dialed and config not in self.servers:
                await self._open(config)
        for link in self.links:
            link.operator = operator  # timeouts, caps and echo intervals apply from now on
        await asyncio.gather(*(link.drain(drain_timeout) for link in removed))


def stan_counter(share: int = 0, shares: int = 1) -> Iterator[int]:
    """The running counter STANs are made from, in this process's share of 1..999,999: process `share`
    of `shares` (`serve --workers`) cycles through its own slice from a random point, so that two
    processes on one operator never send the same STAN at the same time (opa87 and opb93 operators
    know a request by its STAN and time)."""
    size = 999_999 // shares
    low = 1 + share * size
    start = random.randrange(size)
    return (low + (start + n) % size for n in itertools.count())


def _address_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(network, strict=False) for network in allowed)
