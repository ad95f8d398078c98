"""Shared pieces of the component and end-to-end tests: a switch with operator
simulators on real sockets, and a minimal bank87 client."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import uuid
from datetime import datetime, timezone
from pathlib import Path

import asyncpg

from simulators.operator import OperatorBehaviour, OperatorSimulator
from switch.app.config import parse_config
from switch.journal import PostgresJournal
from switch.app.server import Switch
from switch.wire import load_dialect

DEMO_CONF = Path(__file__).resolve().parents[1] / "conf" / "demo" / "airswitch.toml"
BANK87 = load_dialect("bank87")
MELLI = "603799"          # acquirer of 127.0.0.1 in the test configuration
NOVIN = "627412"          # acquirer of 127.0.0.2
OPERATORS = ("MCI", "IRANCELL", "RIGHTEL")
DEFAULT_LINK = ("opa87", "connect")


SECRET = "test-secret"


def link_config(dialect: str, mode: str, port: int) -> dict:
    if mode == "accept":
        return {"mode": "accept", "host": "127.0.0.1", "port": 0, "allowed_addresses": ["127.0.0.1/32"]}
    return {"mode": "connect", "host": "127.0.0.1", "port": port}


def switch_config(operator_ports: dict[str, int], dialects: dict[str, tuple[str, str]] | None = None,
                  **overrides) -> object:
    """The test switch; `dialects` maps an operator id to (dialect, link mode); default opa87 connect."""
    dialects = dialects or {}
    operator_timeout = overrides.pop("operator_timeout", 1.0)
    overrides.setdefault("reversals", {"orphan_age": max(60.0, operator_timeout * 2)})
    echo_interval = overrides.pop("echo_interval", 30.0)
    # These tests send bursts that queue by design on a busy machine; overload shedding (91 at once) has
    # its own tests (tests/test_flow_participants.py), so here it only guards against a stuck journal.
    overrides.setdefault("max_queue_delay", 10.0)
    raw = {
        "institution_id": "99001",
        "terminal_id": "AIRSW001",
        "listener": {"host": "127.0.0.1", "port": 0, "read_timeout": overrides.pop("read_timeout", 30.0)},
        "routing": {"routes": "routes.toml", "ported": "ported.csv", "carrier_fallback": True},
        "acquirers": [
            {"institution_id": MELLI, "name": "Bank Melli Iran", "allowed_addresses": ["127.0.0.1/32"]},
            {"institution_id": NOVIN, "name": "Eghtesad Novin PSP", "allowed_addresses": ["127.0.0.2/32"]},
        ],
        "operators": [
            {"id": op_id, "name": op_id, "dialect": dialects.get(op_id, DEFAULT_LINK)[0], "secret": SECRET,
             "timeout": operator_timeout, "echo_interval": echo_interval, "backoff_max": 0.5,
             "links": [link_config(*dialects.get(op_id, DEFAULT_LINK), port)]}
            for op_id, port in operator_ports.items()
        ],
        **overrides,
    }
    return parse_config(raw, DEMO_CONF)


@contextlib.asynccontextmanager
async def running_switch(journal, behaviours: dict[str, OperatorBehaviour] | None = None,
                         dialects: dict[str, tuple[str, str]] | None = None, **overrides):
    """Operator simulators and the switch on port 0, with every operator's link up.
    Simulators of `connect` links listen before the switch starts; those of `accept` links dial it after."""
    behaviours, dialects = behaviours or {}, dialects or {}
    simulators, ports = {}, {}

    def simulator(op_id: str, **kwargs) -> OperatorSimulator:
        return OperatorSimulator(op_id, behaviours.get(op_id, OperatorBehaviour(latency_ms=1)),
                                 dialect=dialects.get(op_id, DEFAULT_LINK)[0], secret=SECRET, **kwargs)

    for op_id in OPERATORS:
        ports[op_id] = 0
        if dialects.get(op_id, DEFAULT_LINK)[1] == "connect":
            simulators[op_id] = simulator(op_id)
            ports[op_id] = await simulators[op_id].start()
    switch = Switch(switch_config(ports, dialects, **overrides), journal=journal)
    await switch.start()
    try:
        for op_id in OPERATORS:
            if op_id not in simulators:
                simulators[op_id] = simulator(op_id, mode="dial",
                                              switch_port=switch.providers[op_id].accept_port())
                await simulators[op_id].start()
        assert await switch.wait_operators_up(5.0), "operator links did not come up"
        switch.simulators = simulators
        yield switch
    finally:
        await switch.stop()
        for simulator in simulators.values():
            await simulator.stop()


def postgres_journal(dsn: str, schema: str) -> PostgresJournal:
    return PostgresJournal(dsn, schema=schema, batch_max=200)


class BankClient:
    """A bank87 peer: sends requests, matches answers by 11 and 37, many in flight."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.reader, self.writer = reader, writer
        self.decoder = BANK87.frame_decoder()
        self.waiting: dict[tuple[str, str], asyncio.Future] = {}
        self.unmatched: asyncio.Queue = asyncio.Queue()
        self._stans = itertools.count(1)
        self._reading = asyncio.create_task(self._read())

    @classmethod
    async def connect(cls, port: int, local_address: str = "127.0.0.1") -> "BankClient":
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(local_address, 0))
        return cls(reader, writer)

    async def _read(self) -> None:
        while True:
            data = await self.reader.read(65536)
            if not data:
                for future in self.waiting.values():
                    if not future.done():
                        future.set_exception(ConnectionError("closed by the switch"))
                return
            for frame in self.decoder.feed(data):
                answer = BANK87.decode(frame)
                future = self.waiting.pop((answer.get("11", ""), answer.get("37", "")), None)
                if future is None:
                    self.unmatched.put_nowait(answer)
                else:
                    future.set_result(answer)

    def next_stan(self) -> str:
        return f"{next(self._stans):06d}"

    async def request(self, message: dict, timeout: float = 10.0) -> dict:
        future = asyncio.get_running_loop().create_future()
        self.waiting[(message["11"], message.get("37", ""))] = future
        self.writer.write(BANK87.pack(message))
        return await asyncio.wait_for(future, timeout)

    def send_raw(self, data: bytes) -> None:
        self.writer.write(data)

    async def closed_by_peer(self, timeout: float = 5.0) -> bool:
        try:
            await asyncio.wait_for(asyncio.shield(self._reading), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    async def close(self) -> None:
        self._reading.cancel()
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


def tracking_code() -> str:
    """12 characters unique to this call (field 37 is an12)."""
    return uuid.uuid4().hex[:12].upper()


def top_up(stan: str, *, acquirer: str = MELLI, msisdn: str = "09121110001", amount: int = 100_000,
           currency: str = "364", rrn: str | None = None, mti: str = "0200", **extra) -> dict:
    now = datetime.now(timezone.utc)
    message = {"t": mti, "2": "6037991234567890", "3": "000000", "4": f"{amount:012d}",
               "7": now.strftime("%m%d%H%M%S"), "11": stan, "12": now.strftime("%H%M%S"),
               "13": now.strftime("%m%d"), "32": acquirer, "37": rrn or tracking_code(), "41": "TERM0001",
               "42": "MERCHANT0000001", "48": "CH003WEB", "49": currency, "103": msisdn}
    message.update(extra)
    return {key: value for key, value in message.items() if value is not None}


async def eventually(check, what: str, timeout: float = 5.0, interval: float = 0.05):
    """Poll the coroutine function `check` until it returns something truthy (returned), or fail
    after `timeout` seconds saying `what` did not happen."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = await check()
        if result:
            return result
        if loop.time() > deadline:
            raise AssertionError(f"within {timeout:.1f}s: {what}")
        await asyncio.sleep(interval)


async def reversal_row(dsn: str, schema: str, txn_id: str) -> tuple | None:
    """(state, attempts, operator_code) of a transaction's stored reversal, read straight from Postgres."""
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(f'SELECT state, attempts, operator_code FROM "{schema}".reversal'
                                  " WHERE txn_id = $1", txn_id)
    finally:
        await conn.close()
    return None if row is None else tuple(row)
