"""A running switch: configuration in, listener and operator links up, journal open.

Start-up order: journal (schema migrated), operator links, then the acquirer
listener last, so nothing is accepted before it can be served. Shutdown is the
reverse: stop listening, let in-flight transactions finish within a bound, sign
off and close links, flush and close the journal.

With `[admin]` configured, the admin HTTP server (switch/admin/) starts last and
stops first, on the same event loop.

`reload()` applies a changed configuration without a restart: routes, amount
rules, acquirers, operator links and the admin server's users. Links that did not change stay up; removed
links take no new requests and close once their in-flight requests finish.
A configuration that does not validate is refused and the running one stays.
"""

from __future__ import annotations

import asyncio
import logging

from routing import Router, RoutingConfigError
from switch.accounts import FloatLedger
from switch.admin.metrics import RequestMetrics
from switch.admin.server import AdminServer
from switch.channels.bank87 import AcquirerConnection, AcquirerDirectory
from switch.channels.iso import IsoTranslator
from switch.channels.pos87 import PosConnection, PosDirectory
from switch.app.config import SwitchConfig, load_config
from switch.errors import ConfigError
from switch.flow.core import TransactionCore
from switch.flow.late_answers import LateAnswers
from switch.flow.participants.dedupe import DedupeWindow
from switch.flow.participants.float_hold import FloatHold
from switch.flow.store_and_forward import ReversalForwarder
from switch.journal import Journal, PostgresJournal, SQLiteJournal
from switch.providers.link import OperatorPool
from switch.wire import load_dialect

log = logging.getLogger("airswitch")

DRAIN_TIMEOUT = 15.0     # seconds in-flight transactions get to finish at shutdown or when a link is removed
NEW_OPERATOR_WAIT = 5.0  # seconds a reload waits for a new operator's links before routing to it

# What a reload cannot change in a running process.
RESTART_ONLY = ("institution_id", "terminal_id", "listener", "pos_listener", "journal", "dedupe", "business_day")


def open_journal(config: SwitchConfig) -> Journal:
    journal = config.journal
    if journal.backend == "sqlite":
        return SQLiteJournal(config.path(journal.path), batch_max=journal.batch_max)
    return PostgresJournal(journal.dsn, schema=journal.schema, batch_max=journal.batch_max,
                           spill_dir=config.path(journal.spill_dir) if journal.spill_dir else None,
                           spill_max_seconds=journal.spill_max_seconds)


def open_ledger(config: SwitchConfig, journal: Journal) -> FloatLedger | None:
    """The float ledger, beside the journal in its Postgres schema, when any payer is prepaid."""
    if not (any(a.prepaid for a in config.acquirers) or any(t.account for t in config.terminals)):
        return None
    if not isinstance(journal, PostgresJournal):
        raise ConfigError(f"{config.source}: prepaid float accounts need the Postgres journal")
    return FloatLedger(journal.dsn, schema=journal.schema)


def load_router(config: SwitchConfig) -> Router:
    routing = config.routing
    ported = config.path(routing.ported) if routing.ported else None
    try:
        return Router.from_files(config.path(routing.routes), ported, routing.carrier_fallback)
    except RoutingConfigError as exc:
        raise ConfigError(str(exc)) from None


def open_admin(switch: "Switch", metrics: RequestMetrics | None, share: tuple[int, int] | None) -> AdminServer | None:
    """The admin server when `[admin]` is configured and enabled; worker i of `serve --workers N`
    binds the configured port + i (docs/decisions.md)."""
    admin = switch.config.admin
    if admin is None or not admin.enabled:
        return None
    index = share[0] if share is not None else 0
    port = admin.port + index if admin.port else admin.port
    return AdminServer(switch, admin.host, port, metrics, supervised=share is not None)


def _admin_socket(config: SwitchConfig) -> tuple | None:
    admin = config.admin
    return None if admin is None or not admin.enabled else (admin.host, admin.port)


class Switch:
    def __init__(self, config: SwitchConfig, journal: Journal | None = None, reuse_port: bool = False,
                 share: tuple[int, int] | None = None):
        self.config = config
        self.reuse_port = reuse_port  # several worker processes share the listening ports
        # This worker's index and the worker count under `serve --workers` (None: a lone process): its
        # slice of the operator STANs, and its admin port.
        self.share = share
        self.journal = journal or open_journal(config)
        self.ledger = open_ledger(config, self.journal)
        self.dedupe = DedupeWindow(config.dedupe.window, config.dedupe.backend, config.dedupe.redis_url)
        # Operator link pools by operator id; filled at start and on reload, read by the core as it goes.
        self.providers: dict[str, OperatorPool] = {}
        float_hold = FloatHold(self.ledger, config.pricing)
        self.forwarder = ReversalForwarder(self.journal, self.providers, config.reversals,
                                           on_reversed=float_hold.refund)
        self.late_answers = LateAnswers(self.journal, self.providers, on_reversal_stored=self.forwarder.wake)
        # The figures only an observer of each request can count (switch/admin/metrics.py), when the
        # admin server is on: one call as each answer leaves.
        metrics = RequestMetrics() if config.admin is not None and config.admin.enabled else None
        self.core = TransactionCore(config, load_router(config), self.journal, self.dedupe, self.providers,
                                    float_hold, on_reversal_stored=self.forwarder.wake,
                                    on_end=metrics.on_end if metrics is not None else None)
        self.bank87 = load_dialect("bank87")
        self.pos87 = load_dialect("pos87")
        self.directory = AcquirerDirectory(config.acquirers)
        self.terminals = PosDirectory(config.terminals, config.acquirers)
        self._pos_server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task] = set()
        self._server: asyncio.Server | None = None
        self._reloading = asyncio.Lock()
        self.admin = open_admin(self, metrics, share)

    @property
    def port(self) -> int:
        return self._server.sockets[0].getsockname()[1]

    @property
    def pos_port(self) -> int:
        return self._pos_server.sockets[0].getsockname()[1]

    def _pool(self, operator) -> OperatorPool:
        return OperatorPool(operator, self.config.institution_id, self.config.terminal_id,
                            self.late_answers, reuse_port=self.reuse_port, stan_share=self.share or (0, 1))

    async def start(self) -> None:
        await self.journal.start()
        if self.ledger is not None:
            await self.ledger.start()
        for operator in self.config.operators:
            pool = self.providers[operator.id] = self._pool(operator)
            await pool.start()
        self.forwarder.start()
        listener = self.config.listener
        bank87 = IsoTranslator(self.bank87, "bank87")
        self._server = await asyncio.get_running_loop().create_server(
            lambda: AcquirerConnection(self.core, self.bank87, bank87, self.directory, listener, self.tasks),
            listener.host, listener.port, reuse_address=True, reuse_port=self.reuse_port or None)
        log.info("airswitch listening for acquirers on %s:%d", listener.host, self.port)
        pos = self.config.pos_listener
        if pos is not None:
            pos87 = IsoTranslator(self.pos87, "pos87")
            self._pos_server = await asyncio.get_running_loop().create_server(
                lambda: PosConnection(self.core, self.pos87, pos87, self.terminals, pos, self.tasks), pos.host, pos.port,
                reuse_address=True, reuse_port=self.reuse_port or None)
            log.info("airswitch listening for POS terminals on %s:%d", pos.host, self.pos_port)
        if self.admin is not None:
            await self.admin.start()

    async def wait_operators_up(self, timeout: float = 10.0) -> bool:
        results = await asyncio.gather(*(pool.wait_up(timeout) for pool in self.providers.values()))
        return all(results)

    async def reload(self) -> bool:
        """Re-read the configuration file and apply it; False (and nothing changed) if it does not validate."""
        async with self._reloading:
            try:
                config = load_config(self.config.source)
                router = load_router(config)
            except (ConfigError, OSError) as exc:
                log.error("reload refused, the running configuration stays: %s", exc)
                return False
            for key in RESTART_ONLY:
                if getattr(config, key) != getattr(self.config, key):
                    log.warning("reload: %s changed; it takes effect only after a restart", key)
            if _admin_socket(config) != _admin_socket(self.config):
                log.warning("reload: admin enabled, host or port changed; it takes effect only after a restart"
                            " (its users and roles apply now)")
            old = {op.id: op for op in self.config.operators}
            new = {op.id: op for op in config.operators}
            replaced = [op_id for op_id in new if op_id in old and
                        (new[op_id].dialect, new[op_id].secret) != (old[op_id].dialect, old[op_id].secret)]
            retired = [self.providers.pop(op_id) for op_id in [*[i for i in old if i not in new], *replaced]]
            for pool in retired:
                pool.stop_accepting()  # its operator ports are free for a replacement pool
            for op_id, operator in new.items():
                if op_id in self.providers:
                    await self.providers[op_id].reconfigure(operator, DRAIN_TIMEOUT)
                else:
                    pool = self.providers[op_id] = self._pool(operator)
                    try:
                        await pool.start()
                    except OSError as exc:
                        log.error("reload: operator %s cannot open its links (%s); it gets 91 until fixed", op_id, exc)
                        continue
                    if not await pool.wait_up(NEW_OPERATOR_WAIT):
                        log.warning("reload: new operator %s has no live link yet", op_id)
            self.config = config
            self.directory.replace(config.acquirers)
            self.terminals.replace(config.terminals, config.acquirers)
            self.core.reconfigure(config, router)
            self.forwarder.reconfigure(config.reversals)
            await asyncio.gather(*(pool.drain(DRAIN_TIMEOUT) for pool in retired))
            log.info("configuration reloaded from %s", config.source)
            return True

    async def stop(self) -> None:
        if self.admin is not None:
            await self.admin.stop()
        for server in (self._server, self._pos_server):
            if server is not None:
                server.close()
        if self.tasks:
            log.info("draining %d in-flight requests", len(self.tasks))
            _, late = await asyncio.wait(self.tasks, timeout=DRAIN_TIMEOUT)
            for task in late:
                task.cancel()
        await self.forwarder.stop()
        await self.late_answers.stop()
        await asyncio.gather(*(pool.close() for pool in self.providers.values()))
        await self.journal.close()
        if self.ledger is not None:
            await self.ledger.close()
        await self.dedupe.close()
        log.info("airswitch stopped")
