"""An operator host for the demo, the tests and the benchmarks, in any operator dialect and either link direction.

It owns the operator's decisions and its books: each top-up is answered after a
configurable latency, approved, declined at a configurable rate, refused for
unknown or barred subscribers and amounts it does not take, answered as a
duplicate when the switch's reference was already credited, or never answered
at a configurable rate (to exercise the switch's timeouts); a test can also hold
top-up answers until it releases them, to script an answer that comes after the
switch's timeout and its reversal (`hold_top_ups`). It keeps a ledger of
what it credited, keyed by the switch's own reference (opa87: 11 and 7; opb93:
11 and 12; opcjson: `ref`), so an audit can compare it with the switch's
journal, and notes which credits a reversal undid.

In `listen` mode the switch dials it; in `dial` mode it dials the switch's
operator port, opens the link with the dialect's handshake (sign-on, or the
opcjson login) and redials with a capped backoff when the link drops. Either
way it answers what the switch sends and sends nothing unprompted.

What each dialect says is in `simulators.operator_dialects`; this module is the
asyncio side and the decisions.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone

from simulators.operator_dialects import (HandshakeAnswer, Ignored, Outcome, Reply, Reversal, TopUp,
                                          host_dialect)
from switch.errors import LocalProtocolError, RemoteProtocolError

log = logging.getLogger("airswitch.sim.operator")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_INSTITUTION_ID = "99001"     # what the opb93 sign-on carries in 32 when dialing
MODES = ("listen", "dial")
LATENCY_DISTRIBUTIONS = ("uniform", "exponential")
HOLD_MODES = ("answer", "credit")    # see OperatorBehaviour.hold_top_ups
CONNECT_TIMEOUT = 5.0                # seconds to open a TCP connection to the switch
HANDSHAKE_TIMEOUT = 5.0              # seconds for the switch to answer our sign-on or login
RECONNECT_BACKOFF_MIN = 0.1          # seconds before redialing; doubles on each failure in a row
RECONNECT_BACKOFF_MAX = 2.0
APPROVAL_CODE_RANGE = 1_000_000      # six-digit approval codes


@dataclass
class OperatorBehaviour:
    """How the operator answers; mutable while the simulator runs (tests change it mid-test)."""
    latency_ms: float = 5.0          # mean answer delay
    jitter_ms: float = 0.0           # uniform +/- around the mean ("uniform" distribution only)
    decline_rate: float = 0.0        # share of top-ups declined
    no_answer_rate: float = 0.0      # share of top-ups never answered
    unknown_subscribers: frozenset[str] = frozenset()  # MSISDNs (international digits) refused as unknown
    seed: int | None = None
    error_rate: float = 0.0          # share of top-ups answered "operator error"
    barred_subscribers: frozenset[str] = frozenset()   # MSISDNs refused as barred
    invalid_amounts: frozenset[int] = frozenset()      # amounts (minor units) refused as invalid
    # "uniform": latency_ms +/- jitter_ms; "exponential": exponentially distributed with mean latency_ms
    # (a long tail, for timeout studies).
    latency_distribution: str = "uniform"
    # Scripted late answers (tests): top-ups are answered only when `OperatorSimulator.release_held()`
    # is called, so a test decides when the switch's timeout has passed. "answer": the operator credits
    # on receipt and only its answer waits (a reversal before the release finds the credit and reverses
    # it); "credit": it decides and credits only on release (a reversal before the release finds
    # nothing to reverse: the operator credited after the reversal). None: answered after latency_ms.
    hold_top_ups: str | None = None

    def __post_init__(self):
        if self.latency_distribution not in LATENCY_DISTRIBUTIONS:
            raise ValueError(f"latency_distribution {self.latency_distribution!r} is not one of "
                             f"{', '.join(LATENCY_DISTRIBUTIONS)}")
        if self.hold_top_ups is not None and self.hold_top_ups not in HOLD_MODES:
            raise ValueError(f"hold_top_ups {self.hold_top_ups!r} is not one of {', '.join(HOLD_MODES)}")


@dataclass
class Credit:
    msisdn: str
    amount: int
    tracking_code: str
    operator_ref: str


class OperatorSimulator:
    """One operator's host: listens for the switch's links, or dials the switch's operator port."""

    def __init__(self, operator_id: str, behaviour: OperatorBehaviour | None = None,
                 host: str = DEFAULT_HOST, port: int = 0, *, dialect: str = "opa87", mode: str = "listen",
                 switch_host: str = DEFAULT_HOST, switch_port: int | None = None, secret: str | None = None,
                 reconnect: bool = True, institution_id: str = DEFAULT_INSTITUTION_ID, links: int = 1):
        if mode not in MODES:
            raise ValueError(f"mode {mode!r} is not one of {', '.join(MODES)}")
        if mode == "dial" and switch_port is None:
            raise ValueError("dial mode needs switch_port (the switch's operator port)")
        if mode == "dial" and dialect == "opcjson" and secret is None:
            raise ValueError("an opcjson operator dialing the switch logs in: it needs a secret")
        if links < 1:
            raise ValueError(f"links must be at least 1, not {links}")
        self.operator_id = operator_id
        self.behaviour = behaviour if behaviour is not None else OperatorBehaviour()
        self.host = host
        self.port = port
        self.dialect_name = dialect
        self.mode = mode
        self.switch_host = switch_host
        self.switch_port = switch_port
        self.reconnect = reconnect
        self.links = links
        self.dialect = host_dialect(dialect, operator_id, institution_id, secret)
        self.ledger: dict[tuple, Credit] = {}
        self.reversed: dict[tuple, tuple] = {}   # ledger key -> the reversal's own reference
        self.answered: Counter = Counter()       # top-up answers by the dialect's own code
        self.reversal_answers: Counter = Counter()
        # Top-ups held by `hold_top_ups`: the link they came on, the top-up, and its answer when already decided.
        self.held: list[tuple[_OperatorLink, TopUp, dict | None]] = []
        self.connections: set[_OperatorLink] = set()
        self._random = random.Random(self.behaviour.seed)
        self._operator_refs = itertools.count(1)
        self._stans = itertools.count(1)
        self._server: asyncio.Server | None = None
        self._dialers: list[asyncio.Task] = []
        self._linked: asyncio.Event | None = None
        self._stopping = False

    def credits(self) -> Counter:
        """(operator, tracking code, msisdn, amount) of every top-up credited and not reversed."""
        return Counter((self.operator_id, credit.tracking_code, credit.msisdn, credit.amount)
                       for key, credit in self.ledger.items() if key not in self.reversed)

    def __repr__(self) -> str:
        return f"<OperatorSimulator {self.operator_id} {self.dialect_name} {self.mode}>"

    # -- life cycle ----------------------------------------------------------------------
    async def start(self) -> int:
        """Listen (and return the port) or start dialing the switch (and return 0)."""
        self._stopping = False
        self._linked = asyncio.Event()
        loop = asyncio.get_running_loop()
        if self.mode == "dial":
            self._dialers = [loop.create_task(self._dial_forever(index), name=f"{self!r} dialer {index}")
                             for index in range(self.links)]
            log.info("operator simulator %s (%s) dialing the switch at %s:%d", self.operator_id,
                     self.dialect_name, self.switch_host, self.switch_port)
            return 0
        self._server = await loop.create_server(lambda: _OperatorLink(self, dialed=False), self.host, self.port,
                                                reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("operator simulator %s (%s) on %s:%d", self.operator_id, self.dialect_name, self.host, self.port)
        return self.port

    def disconnect_all(self) -> None:
        """Drop every link now (requests in flight included). In dial mode the dialers redial."""
        for connection in list(self.connections):
            connection.close()

    async def stop(self) -> None:
        self._stopping = True
        for dialer in self._dialers:
            dialer.cancel()
        if self._server is not None:
            self._server.close()
        self.disconnect_all()
        if self._dialers:
            await asyncio.gather(*self._dialers, return_exceptions=True)
            self._dialers = []
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    @property
    def signed_on_links(self) -> int:
        """Connections that completed their handshake (sign-on or login; opcjson listen links at once)."""
        return sum(1 for connection in self.connections if connection.signed_on)

    async def wait_linked(self, timeout: float) -> bool:
        """True once at least one connection completed its handshake, False after `timeout` seconds."""
        if self.signed_on_links:
            return True
        if self._linked is None:
            return False
        try:
            await asyncio.wait_for(self._linked.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return self.signed_on_links > 0

    def _link_state_changed(self) -> None:
        if self._linked is None:
            return
        if self.signed_on_links:
            self._linked.set()
        else:
            self._linked.clear()

    # -- dial mode ------------------------------------------------------------------------
    async def _dial_forever(self, index: int) -> None:
        """Keep one link to the switch up: dial, hand-shake, wait for the drop, redial with backoff."""
        loop = asyncio.get_running_loop()
        backoff = RECONNECT_BACKOFF_MIN
        failing = False   # in a run of failures: log the first, not every retry
        while not self._stopping:
            link: _OperatorLink | None = None
            try:
                _, link = await asyncio.wait_for(
                    loop.create_connection(lambda: _OperatorLink(self, dialed=True), self.switch_host,
                                           self.switch_port), CONNECT_TIMEOUT)
                problem = await link.handshake_result(HANDSHAKE_TIMEOUT)
            except (OSError, asyncio.TimeoutError) as exc:
                problem = f"cannot connect: {exc!r}"
            except Exception as exc:  # noqa: BLE001 - the dialer must outlive any one bad attempt
                log.exception("operator simulator %s: link %d attempt failed", self.operator_id, index)
                problem = repr(exc)
            if problem is None:
                failing = False
                backoff = RECONNECT_BACKOFF_MIN
                log.info("operator simulator %s: link %d to the switch is up", self.operator_id, index)
                await link.closed
                if self._stopping:
                    return
                log.info("operator simulator %s: link %d to the switch dropped", self.operator_id, index)
            else:
                if link is not None:
                    link.close()
                if not failing:
                    log.warning("operator simulator %s: link %d to %s:%d failed (%s); retrying with backoff "
                                "up to %.1f s", self.operator_id, index, self.switch_host, self.switch_port,
                                problem, RECONNECT_BACKOFF_MAX)
                else:
                    log.debug("operator simulator %s: link %d retry failed: %s", self.operator_id, index, problem)
                failing = True
            if not self.reconnect or self._stopping:
                return
            await asyncio.sleep(backoff)
            if failing:
                backoff = min(backoff * 2, RECONNECT_BACKOFF_MAX)

    def next_stan(self) -> str:
        return f"{next(self._stans) % 1_000_000 or 1:06d}"

    # -- decisions ------------------------------------------------------------------------
    def decide(self, topup: TopUp) -> Outcome | None:
        """The outcome of a signed-on top-up (credited in the ledger when approved), or None for no answer."""
        behaviour = self.behaviour
        roll = self._random.random()
        if roll < behaviour.no_answer_rate:
            self.answered["no answer"] += 1
            return None
        if topup.reference in self.ledger:
            outcome = Outcome.DUPLICATE
        elif topup.msisdn in behaviour.unknown_subscribers:
            outcome = Outcome.UNKNOWN_SUBSCRIBER
        elif topup.msisdn in behaviour.barred_subscribers:
            outcome = Outcome.BARRED
        elif topup.amount in behaviour.invalid_amounts:
            outcome = Outcome.INVALID_AMOUNT
        elif roll < behaviour.no_answer_rate + behaviour.decline_rate:
            outcome = Outcome.DECLINED
        elif roll < behaviour.no_answer_rate + behaviour.decline_rate + behaviour.error_rate:
            outcome = Outcome.ERROR
        else:
            outcome = Outcome.APPROVED
        self.answered[self.dialect.CODES[outcome]] += 1
        return outcome

    def settle(self, topup: TopUp) -> dict | None:
        """Decide a top-up, book it, and build its answer (None: it is never answered)."""
        outcome = self.decide(topup)
        if outcome is None:
            return None
        approval_code = operator_ref = ""
        if outcome is Outcome.APPROVED:
            operator_ref = f"{self.operator_id}{next(self._operator_refs):010d}"
            approval_code = f"{self._random.randrange(APPROVAL_CODE_RANGE):06d}"
            self.ledger[topup.reference] = Credit(topup.msisdn, topup.amount, topup.tracking_code, operator_ref)
        return self.dialect.answer_top_up(topup, outcome, approval_code, operator_ref)

    def hold(self, link: "_OperatorLink", topup: TopUp) -> None:
        """Keep a top-up's answer until `release_held()` (see OperatorBehaviour.hold_top_ups)."""
        answer = None
        if self.behaviour.hold_top_ups == "answer":
            answer = self.settle(topup)
            if answer is None:
                return   # never answered anyway
        self.held.append((link, topup, answer))

    def release_held(self) -> int:
        """Answer every held top-up now, deciding (and crediting) those not decided yet, on the link
        each came on. Returns how many answers went out (a link that dropped since sends nothing)."""
        held, self.held = self.held, []
        sent = 0
        for link, topup, answer in held:
            answer = answer if answer is not None else self.settle(topup)
            if answer is not None and link.send(answer):
                sent += 1
        return sent

    def reverse(self, reversal: Reversal) -> dict:
        """Undo a credit (repeats included: a reversed credit stays reversed); unknown originals say so."""
        found = reversal.original_reference in self.ledger
        if found:
            self.reversed.setdefault(reversal.original_reference, reversal.reference)
        self.reversal_answers[self.dialect.reversal_code(found)] += 1
        return self.dialect.answer_reversal(reversal, found)

    def delay(self) -> float:
        """Seconds before an answer goes out."""
        behaviour = self.behaviour
        if behaviour.latency_distribution == "exponential":
            if behaviour.latency_ms <= 0:
                return 0.0
            return self._random.expovariate(1.0 / behaviour.latency_ms) / 1000.0
        jitter = self._random.uniform(-behaviour.jitter_ms, behaviour.jitter_ms) if behaviour.jitter_ms else 0.0
        return max(0.0, behaviour.latency_ms + jitter) / 1000.0


class _OperatorLink(asyncio.Protocol):
    """One TCP connection with the switch, whichever side dialed it."""

    def __init__(self, simulator: OperatorSimulator, dialed: bool):
        self.simulator = simulator
        self.dialect = simulator.dialect
        self.wire = simulator.dialect.wire
        self.decoder = self.wire.frame_decoder()
        self.dialed = dialed
        # The link is usable once signed on. opcjson has no sign-on; a dialed opcjson link waits for login_ok.
        self.signed_on = not self.dialect.needs_sign_on and not dialed
        self.transport: asyncio.Transport | None = None
        self.peer = "?"
        loop = asyncio.get_running_loop()
        self._handshake: asyncio.Future[str | None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self._pending: set[asyncio.TimerHandle] = set()

    # -- transport events -------------------------------------------------------------------
    def connection_made(self, transport):
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self.simulator.connections.add(self)
        if self.dialed:
            self.send(self.dialect.handshake(self.simulator.next_stan(), datetime.now(timezone.utc)))
        elif self.signed_on:
            self.simulator._link_state_changed()

    def connection_lost(self, exc):
        self.simulator.connections.discard(self)
        for handle in self._pending:
            handle.cancel()
        self._pending.clear()
        self.signed_on = False
        if not self._handshake.done():
            self._handshake.set_result("closed by the switch before the handshake was answered")
        if not self.closed.done():
            self.closed.set_result(None)
        self.simulator._link_state_changed()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    async def handshake_result(self, timeout: float) -> str | None:
        """None once the switch accepted our handshake; otherwise what went wrong."""
        try:
            return await asyncio.wait_for(asyncio.shield(self._handshake), timeout)
        except asyncio.TimeoutError:
            return f"no answer to the handshake within {timeout} s"

    def data_received(self, data: bytes) -> None:
        try:
            payloads = self.decoder.feed(data)
        except RemoteProtocolError as exc:
            # The byte stream itself is broken: nothing after it can be trusted.
            log.warning("operator sim %s: %s from %s; closing", self.simulator.operator_id, exc, self.peer)
            self.close()
            return
        dropped = self.decoder.take_dropped()
        if dropped:
            log.warning("operator sim %s: dropped over-long line(s) of %s bytes from %s",
                        self.simulator.operator_id, dropped, self.peer)
        for payload in payloads:
            try:
                message = self.wire.decode(payload)
            except RemoteProtocolError as exc:
                log.warning("operator sim %s: dropped undecodable message: %s", self.simulator.operator_id, exc)
                continue
            try:
                self.handle(message)
            except Exception:  # noqa: BLE001 - a message we did not foresee must not end the link
                log.exception("operator sim %s: failed on a message from %s; ignored",
                              self.simulator.operator_id, self.peer)

    # -- messages ---------------------------------------------------------------------------
    def handle(self, message: dict) -> None:
        simulator = self.simulator
        reaction = self.dialect.react(message, self.signed_on)
        if isinstance(reaction, Reply):
            if reaction.signed_on is not None and reaction.signed_on != self.signed_on:
                self.signed_on = reaction.signed_on
                simulator._link_state_changed()
            if reaction.code is not None:
                simulator.answered[reaction.code] += 1
            self.send(reaction.message)
        elif isinstance(reaction, TopUp):
            if simulator.behaviour.hold_top_ups is not None:
                simulator.hold(self, reaction)
                return
            answer = simulator.settle(reaction)
            if answer is not None:
                self.send_later(simulator.delay(), answer)
        elif isinstance(reaction, Reversal):
            self.send_later(simulator.delay(), simulator.reverse(reaction))
        elif isinstance(reaction, HandshakeAnswer):
            self._handshake_answered(reaction)
        elif isinstance(reaction, Ignored):
            log.log(logging.DEBUG if reaction.quiet else logging.WARNING, "operator sim %s: ignored from %s: %s",
                    simulator.operator_id, self.peer, reaction.reason)

    def _handshake_answered(self, answer: HandshakeAnswer) -> None:
        if not self.dialed or self._handshake.done():
            log.warning("operator sim %s: handshake answer from %s that nothing asked for; ignored",
                        self.simulator.operator_id, self.peer)
            return
        if answer.accepted:
            self.signed_on = True
            self._handshake.set_result(None)
            self.simulator._link_state_changed()
        else:
            self._handshake.set_result(f"handshake refused ({answer.detail})")

    def send_later(self, delay: float, message: dict) -> None:
        handle: asyncio.TimerHandle | None = None

        def fire() -> None:
            self._pending.discard(handle)
            self.send(message)

        handle = asyncio.get_running_loop().call_later(delay, fire)
        self._pending.add(handle)

    def send(self, message: dict) -> bool:
        """Write one message; False when the link is closed or the message cannot be packed."""
        if self.transport is None or self.transport.is_closing():
            return False
        try:
            self.transport.write(self.wire.pack(message))
        except LocalProtocolError as exc:
            log.error("operator sim %s: cannot send %r: %s", self.simulator.operator_id, message, exc)
            return False
        return True
