"""The acquirer listener: bank87 connections from banks and PSPs.

A thin asyncio protocol over the pure framing and codec: it identifies the
acquirer by the peer's address, cuts frames, decodes, starts one task per
request (many in flight per connection, answers in completion order) and
writes answers back. The transaction itself is `TopUpFlow`'s business.

Flow control: above `max_in_flight_per_connection` requests in flight the
connection stops reading until answers drain (uvicorn's high-water mark).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging

from switch.config import AcquirerConfig, ListenerConfig
from switch.errors import RemoteProtocolError
from switch.outbox import Outbox
from switch.topup import FORMAT_ERROR, INVALID_TXN, TopUpFlow, is_request, response_mti

log = logging.getLogger("airswitch.acquirer")

HANDLED = frozenset({"0800", "0100", "0200", "0201", "0400", "0420", "0421"})


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
    def __init__(self, flow: TopUpFlow, directory: AcquirerDirectory, listener: ListenerConfig,
                 tasks: set[asyncio.Task]):
        self.flow = flow
        self.directory = directory
        self.listener = listener
        self.tasks = tasks  # the switch's, so shutdown can drain every connection's work
        self.dialect = flow.dialect
        self.decoder = self.dialect.frame_decoder(listener.max_frame)
        self.acquirer: AcquirerConfig | None = None
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
            log.warning("%s: %s; closing the connection", self.peer, exc)
            self.transport.close()
            return
        self._watch_partial_frame(progressed=bool(frames))
        for frame in frames:
            self._take(frame)

    # -- messages --------------------------------------------------------------------
    def _take(self, frame: bytes) -> None:
        try:
            request = self.dialect.decode(frame)
        except RemoteProtocolError as exc:
            partial = getattr(exc, "partial", {})
            if all(key in partial for key in ("t", "11", "37")) and is_request(partial["t"]):
                log.warning("%s: message does not decode (%s): answering 30", self.peer, exc)
                self._send({"t": response_mti(partial["t"]), "11": partial["11"], "37": partial["37"],
                            "39": FORMAT_ERROR})
            else:
                log.warning("%s: message does not decode and cannot be answered (%s); dropped", self.peer, exc)
            return
        mti = request["t"]
        if not is_request(mti):
            log.warning("%s: MTI %s is not a request; dropped", self.peer, mti)
            return
        if mti not in HANDLED:
            log.info("%s: MTI %s not handled: answering 12", self.peer, mti)
            self._send(self.flow.answer(request, INVALID_TXN))
            return
        if mti == "0800" and request.get("70") in ("001", "002"):
            self.signed_on = request["70"] == "001"
        self.in_flight += 1
        if self.in_flight >= self.listener.max_in_flight_per_connection and not self.paused:
            self.paused = True
            self.transport.pause_reading()
        task = asyncio.get_running_loop().create_task(self._process(request))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _process(self, request: dict) -> None:
        try:
            answer = await self.flow.handle(request, self.acquirer, self.signed_on)
        except Exception:
            log.exception("%s: request MTI %s STAN %s failed", self.peer, request.get("t"), request.get("11"))
            answer = self.flow.answer(request, "96")
        finally:
            self.in_flight -= 1
            if self.paused and self.in_flight <= self.listener.max_in_flight_per_connection // 2:
                self.paused = False
                if not self.transport.is_closing():
                    self.transport.resume_reading()
        if answer is not None:
            self._send(answer)

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
