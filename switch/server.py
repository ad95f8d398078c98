"""A running switch: configuration in, listener and operator links up, journal open.

Start-up order: journal (schema migrated), routing, dedupe, operator links, then
the acquirer listener last, so nothing is accepted before it can be served.
Shutdown is the reverse: stop listening, let in-flight transactions finish
within a bound, close links, flush and close the journal.
"""

from __future__ import annotations

import asyncio
import logging

from routing import Router
from switch.acquirer import AcquirerConnection, AcquirerDirectory
from switch.config import SwitchConfig
from switch.dedupe import DedupeWindow
from switch.journal import Journal, PostgresJournal, SQLiteJournal
from switch.operator_link import OperatorPool
from switch.topup import TopUpFlow
from switch.wire import load_dialect

log = logging.getLogger("airswitch")

DRAIN_TIMEOUT = 15.0  # seconds in-flight transactions get to finish at shutdown


def open_journal(config: SwitchConfig) -> Journal:
    journal = config.journal
    if journal.backend == "sqlite":
        return SQLiteJournal(config.path(journal.path), batch_max=journal.batch_max)
    return PostgresJournal(journal.dsn, schema=journal.schema, batch_max=journal.batch_max)


def load_router(config: SwitchConfig) -> Router:
    routing = config.routing
    ported = config.path(routing.ported) if routing.ported else None
    return Router.from_files(config.path(routing.routes), ported, routing.carrier_fallback)


class Switch:
    def __init__(self, config: SwitchConfig, journal: Journal | None = None):
        self.config = config
        self.journal = journal or open_journal(config)
        self.operators = {op.id: OperatorPool(op, config.institution_id, config.terminal_id)
                          for op in config.operators}
        self.dedupe = DedupeWindow(config.dedupe.window, config.dedupe.backend, config.dedupe.redis_url)
        self.flow: TopUpFlow | None = None
        self.tasks: set[asyncio.Task] = set()
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        return self._server.sockets[0].getsockname()[1]

    async def start(self) -> None:
        await self.journal.start()
        router = load_router(self.config)
        self.flow = TopUpFlow(self.config, load_dialect("bank87"), router, self.journal, self.dedupe,
                              self.operators)
        for pool in self.operators.values():
            pool.start()
        directory = AcquirerDirectory(self.config.acquirers)
        listener = self.config.listener
        self._server = await asyncio.get_running_loop().create_server(
            lambda: AcquirerConnection(self.flow, directory, listener, self.tasks),
            listener.host, listener.port, reuse_address=True)
        log.info("airswitch listening for acquirers on %s:%d", listener.host, self.port)

    async def wait_operators_up(self, timeout: float = 10.0) -> bool:
        results = await asyncio.gather(*(pool.wait_up(timeout) for pool in self.operators.values()))
        return all(results)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        if self.tasks:
            log.info("draining %d in-flight requests", len(self.tasks))
            _, late = await asyncio.wait(self.tasks, timeout=DRAIN_TIMEOUT)
            for task in late:
                task.cancel()
        await asyncio.gather(*(pool.close() for pool in self.operators.values()))
        await self.journal.close()
        await self.dedupe.close()
        log.info("airswitch stopped")
