"""The pos87 channel: POS terminals over IP (INTERFACES.md 1.2).

A terminal sends one request at a time, each framed with a 2-byte length and a
TPDU; the answer carries the TPDU with source and destination swapped. Every
message from a terminal except 0800 must carry a retail MAC under the
terminal's key: a wrong or missing MAC is answered 63 (without a MAC), recorded
as a refusal that does not use its (32, 37) (INTERFACES.md 1.5: an unauthenticated
message proves nothing), and never reaches an operator or the float. Answers carry a
MAC except those with 39 = 63. A connection with no request for `idle_timeout`
seconds is closed. The transaction itself is the core's business, the same as for
banks; `switch.channels.iso` translates.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque

from switch.channels.iso import HANDLED, IsoTranslator, is_request, undecodable_answer
from switch.app.config import AcquirerConfig, PosListenerConfig, TerminalConfig
from switch.errors import RemoteProtocolError
from switch.flow.codes import ResponseCode
from switch.flow.core import TransactionCore
from switch.flow.messages import Kind, Payer, PayerKind
from switch.wire import Dialect
from switch.wire import mac, tpdu

log = logging.getLogger("airswitch.pos")

SALES_CHANNEL = "POS"   # 48 CH when the terminal does not say


class PosDirectory:
    """Registered terminals and their keys; replaced as a whole on reload."""

    def __init__(self, terminals: list[TerminalConfig], acquirers: list[AcquirerConfig]):
        self.replace(terminals, acquirers)

    def replace(self, terminals: list[TerminalConfig], acquirers: list[AcquirerConfig]) -> None:
        by_id = {acquirer.institution_id: acquirer for acquirer in acquirers}
        self.terminals = {t.terminal_id: (Payer(kind=PayerKind.TERMINAL, acquirer=by_id[t.acquirer], terminal=t),
                                          mac.key_from_hex(t.key)) for t in terminals}


class PosConnection(asyncio.Protocol):
    def __init__(self, core: TransactionCore, dialect: Dialect, translator: IsoTranslator,
                 directory: PosDirectory, listener: PosListenerConfig, tasks: set[asyncio.Task]):
        self.core = core
        self.dialect = dialect
        self.translator = translator
        self.directory = directory
        self.listener = listener
        self.tasks = tasks
        self.decoder = tpdu.frame_decoder(listener.max_frame)
        self.frames: deque[tuple[bytes, float]] = deque()   # (frame, when it arrived)
        self.busy = False
        self.peer = "?"
        self.transport: asyncio.Transport | None = None
        self._idle_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        host, port = (transport.get_extra_info("peername") or ("?", 0))[:2]
        self.peer = f"{host}:{port}"
        self._arm_idle_timer()

    def connection_lost(self, exc) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()

    def data_received(self, data: bytes) -> None:
        self._arm_idle_timer()
        try:
            arrived = time.monotonic()
            self.frames.extend((frame, arrived) for frame in self.decoder.feed(data))
        except RemoteProtocolError as exc:
            if exc.closes_connection:   # a broken byte stream: nothing after it can be trusted
                log.warning("%s: %s; closing the connection", self.peer, exc)
                self.transport.close()
            else:
                log.warning("%s: %s", self.peer, exc)
            return
        if self.frames and not self.busy:
            self.busy = True
            self.transport.pause_reading()   # one request at a time
            task = asyncio.get_running_loop().create_task(self._serve_frames())
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    def _arm_idle_timer(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        self._idle_timer = asyncio.get_running_loop().call_later(self.listener.idle_timeout, self._idle)

    def _idle(self) -> None:
        if not self.busy:
            log.info("%s: idle for %.0fs; closing", self.peer, self.listener.idle_timeout)
            self.transport.close()

    async def _serve_frames(self) -> None:
        try:
            while self.frames:
                frame, arrived = self.frames.popleft()
                try:
                    await self._serve(frame, arrived)
                except Exception:
                    log.exception("%s: request failed", self.peer)
        finally:
            self.busy = False
            if not self.transport.is_closing():
                self.transport.resume_reading()
                self._arm_idle_timer()

    async def _serve(self, frame: bytes, arrived: float) -> None:
        try:
            header, payload = tpdu.split_tpdu(frame)
        except RemoteProtocolError as exc:
            log.warning("%s: %s; dropped", self.peer, exc)
            return
        try:
            message = self.dialect.decode(payload)
        except RemoteProtocolError as exc:
            reply = undecodable_answer(getattr(exc, "partial", {}))
            if reply is not None:
                log.warning("%s: message does not decode (%s): answering 30", self.peer, exc)
                self._send(header, reply, None)
            else:
                log.warning("%s: message does not decode and cannot be answered (%s); dropped", self.peer, exc)
            return
        mti = message["t"]
        if not is_request(mti):
            log.warning("%s: MTI %s is not a request; dropped", self.peer, mti)
            return
        if mti == "0800":
            self._send(header, self.translator.network(message), None)   # network messages carry no MAC
            return
        registered = self.directory.terminals.get(message.get("41", ""))
        if registered is None:
            log.warning("%s: terminal %r is not registered: 63", self.peer, message.get("41"),
                        extra={"repeat": "unregistered terminals answered 63"})
            self._send(header, self.translator.refusal(message, ResponseCode.SECURITY_VIOLATION), None)
            return
        payer, key = registered
        if mac.mac_required(message) and not mac.verify(self.dialect, payload, message, key):
            log.warning("%s: terminal %s: MAC wrong or missing: 63", self.peer, payer.terminal.terminal_id,
                        extra={"repeat": f"terminal {payer.terminal.terminal_id}: MAC wrong or missing, answered 63"})
            await self._refuse_unauthenticated(message, payer)
            self._send(header, self.translator.refusal(message, ResponseCode.SECURITY_VIOLATION), None)
            return
        if mti not in HANDLED:
            self._send(header, self.translator.refusal(message, ResponseCode.INVALID_TXN), key)
            return
        try:
            reply = await self._answer(message, payer, arrived)
        except Exception:
            log.exception("%s: terminal %s: request MTI %s STAN %s failed: 96", self.peer,
                          payer.terminal.terminal_id, mti, message.get("11"))
            reply = self.translator.refusal(message, ResponseCode.MALFUNCTION)
        self._send(header, reply, key)

    async def _answer(self, message: dict, payer: Payer, arrived: float) -> dict:
        kind = self.translator.kind_of(message)
        if isinstance(kind, ResponseCode):
            return self.translator.refusal(message, kind)
        request = self.translator.request(message, *kind, payer, sales_channel=SALES_CHANNEL, arrived=arrived)
        return self.translator.answer(message, await self.core.handle(request))

    async def _refuse_unauthenticated(self, message: dict, payer: Payer) -> None:
        """A refusal leaves a record and nothing else: no key used, no float, no operator."""
        kind = self.translator.kind_of(message)
        request = self.translator.request(message, Kind.TOP_UP if isinstance(kind, ResponseCode) else kind[0], None,
                                          payer, sales_channel=SALES_CHANNEL)
        await self.core.engine.refuse(request, ResponseCode.SECURITY_VIOLATION)

    def _send(self, header: tpdu.Tpdu, answer: dict, key: bytes | None) -> None:
        if self.transport.is_closing():
            return
        answer = {name: value for name, value in answer.items() if name not in ("64", "128")}
        if key is not None and mac.mac_required(answer):
            message = mac.sign(self.dialect, answer, key)
        else:
            message = self.dialect.encode(answer)
        self.transport.write(tpdu.pack(header.answer(), message))
