"""The POS listener: pos87 terminals (INTERFACES.md 1.2).

A terminal sends one request at a time, each framed with a 2-byte length and a
TPDU; the answer carries the TPDU with source and destination swapped. Every
message from a terminal except 0800 must carry a retail MAC under the
terminal's key: a wrong or missing MAC is answered 63 (without a MAC), recorded
as a refusal, and never reaches an operator or the float. Answers carry a MAC
except those with 39 = 63. A connection with no request for `idle_timeout`
seconds is closed. The transaction itself is `TopUpFlow`'s business, the same
as for banks.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import deque

from switch.clock import utcnow
from switch.config import AcquirerConfig, PosListenerConfig, TerminalConfig
from switch.errors import RemoteProtocolError
from switch.topup import FORMAT_ERROR, TopUpFlow, is_request, response_mti
from switch.wire import load_dialect
from switch.wire import mac, tpdu

log = logging.getLogger("airswitch.pos")

SECURITY_VIOLATION = "63"
HANDLED = frozenset({"0800", "0100", "0200", "0201", "0400", "0420", "0421"})


class PosDirectory:
    """Registered terminals and their keys; replaced as a whole on reload."""

    def __init__(self, terminals: list[TerminalConfig], acquirers: list[AcquirerConfig]):
        self.replace(terminals, acquirers)

    def replace(self, terminals: list[TerminalConfig], acquirers: list[AcquirerConfig]) -> None:
        by_id = {acquirer.institution_id: acquirer for acquirer in acquirers}
        self.terminals = {t.terminal_id: (t, by_id[t.acquirer], mac.key_from_hex(t.key)) for t in terminals}


class PosConnection(asyncio.Protocol):
    def __init__(self, flow: TopUpFlow, directory: PosDirectory, listener: PosListenerConfig,
                 tasks: set[asyncio.Task]):
        self.flow = flow
        self.directory = directory
        self.listener = listener
        self.tasks = tasks
        self.dialect = load_dialect("pos87")
        self.decoder = tpdu.frame_decoder(listener.max_frame)
        self.frames: deque[bytes] = deque()
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
            self.frames.extend(self.decoder.feed(data))
        except RemoteProtocolError as exc:
            log.warning("%s: %s; closing the connection", self.peer, exc)
            self.transport.close()
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
                frame = self.frames.popleft()
                try:
                    await self._serve(frame)
                except Exception:
                    log.exception("%s: request failed", self.peer)
        finally:
            self.busy = False
            if not self.transport.is_closing():
                self.transport.resume_reading()
                self._arm_idle_timer()

    async def _serve(self, frame: bytes) -> None:
        try:
            header, message = tpdu.split_tpdu(frame)
        except RemoteProtocolError as exc:
            log.warning("%s: %s; dropped", self.peer, exc)
            return
        try:
            request = self.dialect.decode(message)
        except RemoteProtocolError as exc:
            partial = getattr(exc, "partial", {})
            if all(key in partial for key in ("t", "11", "37")) and is_request(partial["t"]):
                log.warning("%s: message does not decode (%s): answering 30", self.peer, exc)
                self._send(header, {"t": response_mti(partial["t"]), "11": partial["11"], "37": partial["37"],
                                    "39": FORMAT_ERROR}, None)
            else:
                log.warning("%s: message does not decode and cannot be answered (%s); dropped", self.peer, exc)
            return
        mti = request["t"]
        if not is_request(mti):
            log.warning("%s: MTI %s is not a request; dropped", self.peer, mti)
            return
        if mti == "0800":
            self._send(header, self.flow.network(request), None)   # network messages carry no MAC
            return
        registered = self.directory.terminals.get(request.get("41", ""))
        if registered is None:
            log.warning("%s: terminal %r is not registered: 63", self.peer, request.get("41"))
            self._send(header, self.flow.answer(request, SECURITY_VIOLATION), None)
            return
        terminal, acquirer, key = registered
        if mac.mac_required(request) and not mac.verify(self.dialect, message, request, key):
            log.warning("%s: terminal %s: MAC wrong or missing: 63", self.peer, terminal.terminal_id)
            await self._refuse(request, SECURITY_VIOLATION)
            self._send(header, self.flow.answer(request, SECURITY_VIOLATION), None)
            return
        if mti not in HANDLED:
            self._send(header, self.flow.answer(request, "12"), key)
            return
        request = {**request, "48": request.get("48") or "CH003POS"}
        try:
            answer = await self.flow.handle(request, acquirer, True, terminal)
        except Exception:
            log.exception("%s: terminal %s: request MTI %s STAN %s failed: 96", self.peer, terminal.terminal_id,
                          mti, request.get("11"))
            answer = self.flow.answer(request, "96")
        if answer is not None:
            self._send(header, answer, key)

    async def _refuse(self, request: dict, code: str) -> None:
        """A refusal leaves a record and nothing else (no key, no float, no operator)."""
        received_at = utcnow()
        await self.flow.refuse(request, uuid.uuid4().hex, received_at, self.flow.calendar.day_of(received_at),
                               time.perf_counter(), code, None)

    def _send(self, header: tpdu.Tpdu, answer: dict, key: bytes | None) -> None:
        if self.transport.is_closing():
            return
        answer = {name: value for name, value in answer.items() if name not in ("64", "128")}
        if key is not None and mac.mac_required(answer):
            message = mac.sign(self.dialect, answer, key)
        else:
            message = self.dialect.encode(answer)
        self.transport.write(tpdu.pack(header.answer(), message))
