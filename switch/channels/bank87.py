"""The bank87 channel: host-to-host connections from banks and PSPs (INTERFACES.md 1.1).

A thin asyncio protocol over the pure framing and codec: it identifies the
acquirer by the peer's address, cuts frames, decodes, starts one task per
request (many in flight per connection, answers in completion order) and
writes answers back. Sign-on is per connection. The transaction itself is the
core's business (`switch.flow.core`); `switch.channels.iso` translates.

Flow control: above `max_in_flight_per_connection` requests in flight the
connection stops reading until answers drain (uvicorn's high-water mark).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time

from switch.channels.iso import HANDLED, SIGN_OFF, SIGN_ON, IsoTranslator, is_request, undecodable_answer
from switch.app.config import AcquirerConfig, ListenerConfig
from switch.errors import RemoteProtocolError
from switch.flow.codes import ResponseCode
from switch.flow.core import TransactionCore
from switch.flow.messages import Payer, PayerKind
from switch.outbox import Outbox
from switch.wire import Dialect

log = logging.getLogger("airswitch.acquirer")


class AcquirerDirectory:
    """Which acquirer a peer address belongs to."""

    def __init__(self, acquirers: list[AcquirerConfig]):
        self.replace(acquirers)

    def replace(self, acquirers: list[AcquirerConfig]) -> None:
        """New connections are identified against these acquirers from now on."""
        self._networks = [(ipaddress.ip_network(address, strict=False), acquirer)
                          for acquirer in acquirers for address in acquirer.allowed_addresses]

    def for_address(self, host: str) -> AcquirerConfig | None:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return None
        for network, acquirer in self._networks:
            if address in network:
                return acquirer
        return None


class AcquirerConnection(asyncio.Protocol):
    def __init__(self, core: TransactionCore, dialect: Dialect, translator: IsoTranslator,
                 directory: AcquirerDirectory, listener: ListenerConfig, tasks: set[asyncio.Task]):
        self.core = core
        self.dialect = dialect
        self.translator = translator
        self.directory = directory
        self.listener = listener
        self.tasks = tasks  # the switch's, so shutdown can drain every connection's work
        self.decoder = self.dialect.frame_decoder(listener.max_frame)
        self.acquirer: AcquirerConfig | None = None
        self.payer: Payer | None = None
        self.peer = "?"
        self.signed_on = False
        self.in_flight = 0
        self.paused = False
        self.transport: asyncio.Transport | None = None
        self._read_timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol ----------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.outbox = Outbox(transport)
        peername = transport.get_extra_info("peername") or ("?", 0)
        self.peer = f"{peername[0]}:{peername[1]}"
        self.acquirer = self.directory.for_address(peername[0])
        if self.acquirer is None:
            log.warning("%s: no acquirer allows this address; closing", self.peer)
            transport.close()
            return
        self.payer = Payer(kind=PayerKind.ACQUIRER, acquirer=self.acquirer)
        log.info("%s: connected as %s (%s)", self.peer, self.acquirer.name, self.acquirer.institution_id)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_read_timer()
        if self.acquirer is not None:
            log.info("%s: %s disconnected%s", self.peer, self.acquirer.name, f" ({exc})" if exc else "")
        # Requests already taken run to the end and are journaled; their answers have nowhere to go.

    def data_received(self, data: bytes) -> None:
        if self.acquirer is None:
            return
        try:
            frames = self.decoder.feed(data)
        except RemoteProtocolError as exc:
            if exc.closes_connection:   # a broken byte stream: nothing after it can be trusted
                log.warning("%s: %s; closing the connection", self.peer, exc)
                self.transport.close()
            else:
                log.warning("%s: %s", self.peer, exc)
            return
        self._watch_partial_frame(progressed=bool(frames))
        arrived = time.monotonic()
        for frame in frames:
            self._take(frame, arrived)

    # -- messages --------------------------------------------------------------------
    def _take(self, frame: bytes, arrived: float) -> None:
        try:
            message = self.dialect.decode(frame)
        except RemoteProtocolError as exc:
            # One message that does not decode: the frame boundary held, the connection survives.
            reply = undecodable_answer(getattr(exc, "partial", {}))
            if reply is not None:
                log.warning("%s: message does not decode (%s): answering 30", self.peer, exc,
                            extra={"repeat": f"{self.acquirer.name}: messages that do not decode, answered 30"})
                self._send(reply)
            else:
                log.warning("%s: message does not decode and cannot be answered (%s); dropped", self.peer, exc,
                            extra={"repeat": f"{self.acquirer.name}: messages that do not decode, dropped"})
            return
        mti = message["t"]
        if not is_request(mti):
            log.warning("%s: MTI %s is not a request; dropped", self.peer, mti,
                        extra={"repeat": f"{self.acquirer.name}: messages that are not requests, dropped"})
            return
        if mti not in HANDLED:
            log.info("%s: MTI %s not handled: answering 12", self.peer, mti)
            self._send(self.translator.refusal(message, ResponseCode.INVALID_TXN))
            return
        if mti == "0800":
            if message.get("70") in (SIGN_ON, SIGN_OFF):
                self.signed_on = message["70"] == SIGN_ON
            self._send(self.translator.network(message))
            return
        self.in_flight += 1
        if self.in_flight >= self.listener.max_in_flight_per_connection and not self.paused:
            self.paused = True
            self.transport.pause_reading()
        task = asyncio.get_running_loop().create_task(self._process(message, arrived))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _process(self, message: dict, arrived: float) -> None:
        try:
            reply = await self._answer(message, arrived)
        except Exception:
            log.exception("%s: request MTI %s STAN %s failed", self.peer, message.get("t"), message.get("11"))
            reply = self.translator.refusal(message, ResponseCode.MALFUNCTION)
        finally:
            self.in_flight -= 1
            if self.paused and self.in_flight <= self.listener.max_in_flight_per_connection // 2:
                self.paused = False
                if not self.transport.is_closing():
                    self.transport.resume_reading()
        self._send(reply)

    async def _answer(self, message: dict, arrived: float) -> dict:
        if self.acquirer.sign_on_required and not self.signed_on:
            return self.translator.refusal(message, ResponseCode.UNAVAILABLE)
        kind = self.translator.kind_of(message)
        if isinstance(kind, ResponseCode):
            return self.translator.refusal(message, kind)
        request = self.translator.request(message, *kind, self.payer, arrived=arrived)
        return self.translator.answer(message, await self.core.handle(request))

    def _send(self, answer: dict) -> None:
        if self.transport.is_closing():
            log.info("%s: answer MTI %s STAN %s 39=%s not delivered: connection gone", self.peer,
                     answer.get("t"), answer.get("11"), answer.get("39"))
            return
        self.outbox.write(self.dialect.pack(answer))

    # -- read timeout for a frame that started but does not complete ------------------------
    def _watch_partial_frame(self, progressed: bool) -> None:
        """The clock runs from the moment a frame starts; a completed frame restarts it."""
        if progressed or not self.decoder.pending:
            self._cancel_read_timer()
        if self.decoder.pending and self._read_timer is None:
            self._read_timer = asyncio.get_running_loop().call_later(
                self.listener.read_timeout, self._read_timed_out)

    def _cancel_read_timer(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _read_timed_out(self) -> None:
        self._read_timer = None
        log.warning("%s: a frame did not complete within %.0fs; closing", self.peer, self.listener.read_timeout)
        self.transport.close()
