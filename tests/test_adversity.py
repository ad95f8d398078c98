"""Adversity under steady traffic, with the switch as a real process, a real Postgres
behind a fault-injecting proxy, and the operator simulators keeping their own ledgers:
an operator link dropped mid-flight and answers after the timeout, Postgres blocked
for seconds, the switch killed with SIGKILL and restarted. After each, the audit
proves that every approval a bank received is journaled, every transaction reached a
final state, every unknown outcome was reversed at the operator, and the operators'
credits equal the journal's approved-and-not-reversed set."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

import orjson

from faultproxy import FaultProxy
from simulators.operator import OperatorBehaviour, OperatorSimulator
from switch.app.audit import audit, format_findings
from switch.journal import PostgresJournal
from support import DEMO_CONF, MELLI, NOVIN, BankClient, top_up

REPO = Path(__file__).resolve().parents[1]
OPERATORS = {"MCI": "opa87", "IRANCELL": "opb93", "RIGHTEL": "opcjson"}
NUMBERS = {"MCI": "0912111", "IRANCELL": "0936111", "RIGHTEL": "0921111"}
SETTLE_TIMEOUT = 30.0   # seconds for reversals to settle after the traffic stops


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_config(directory: Path, switch_port: int, operator_ports: dict[str, int], dsn: str, schema: str) -> Path:
    operators = "".join(f'''
[[operators]]
id = "{op_id}"
name = "{op_id}"
dialect = "{dialect}"
timeout = 0.5
echo_interval = 5.0
backoff_max = 0.5
links = [{{ mode = "connect", host = "127.0.0.1", port = {operator_ports[op_id]} }}]
''' for op_id, dialect in OPERATORS.items())
    for name in ("routes.toml", "ported.csv"):
        (directory / name).write_text((DEMO_CONF.parent / name).read_text())
    path = directory / "airswitch.toml"
    path.write_text(f'''
institution_id = "99001"
[listener]
port = {switch_port}
[journal]
backend = "postgres"
dsn = "{dsn}"
schema = "{schema}"
spill_dir = "spill"
spill_max_seconds = 60
[reversals]
backoff_start = 0.2
backoff_max = 0.5
poll_interval = 0.2
orphan_age = 2.0
max_attempts = 1000
[routing]
routes = "routes.toml"
ported = "ported.csv"
[[acquirers]]
institution_id = "{MELLI}"
name = "Bank Melli Iran"
allowed_addresses = ["127.0.0.1/32"]
[[acquirers]]
institution_id = "{NOVIN}"
name = "Eghtesad Novin PSP"
allowed_addresses = ["127.0.0.2/32"]
''' + operators)
    return path


class SwitchProcess:
    def __init__(self, config: Path, port: int):
        self.config, self.port = config, port
        self.process: subprocess.Popen | None = None

    async def start(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "switch.app.cli", "--log-level", "ERROR", "serve", "--config", str(self.config)],
            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
        for _ in range(200):
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.close()
                await asyncio.sleep(1.0)   # operator links sign on
                return
            if self.process.poll() is not None:
                raise AssertionError(f"switch exited with {self.process.returncode}")
            await asyncio.sleep(0.05)
        raise AssertionError("switch did not start listening")

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()


class SteadyBank:
    """Workers that each keep one top-up in flight on their own connection and reconnect after a loss."""

    def __init__(self, port: int, acquirer: str, address: str, workers: int):
        self.port, self.acquirer, self.address, self.workers = port, acquirer, address, workers
        self.approvals: set[tuple[str, str]] = set()
        self.answers: Counter = Counter()
        self.stop = asyncio.Event()
        self._sequence = 0

    async def run(self) -> None:
        await asyncio.gather(*(self._worker(w) for w in range(self.workers)))

    async def _worker(self, worker: int) -> None:
        client = None
        while not self.stop.is_set():
            try:
                if client is None:
                    client = await BankClient.connect(self.port, self.address)
                self._sequence += 1
                operator = list(NUMBERS)[self._sequence % 3]
                request = top_up(f"{self._sequence % 1_000_000:06d}", acquirer=self.acquirer,
                                 msisdn=NUMBERS[operator] + f"{self._sequence % 10000:04d}")
                answer = await client.request(request, timeout=5.0)
                self.answers[answer["39"]] += 1
                if answer["39"] == "00":
                    self.approvals.add((self.acquirer, request["37"]))
                await asyncio.sleep(0.01)
            except (OSError, ConnectionError, asyncio.TimeoutError, asyncio.IncompleteReadError):
                self.answers["lost"] += 1
                if client is not None:
                    await client.close()
                client = None
                await asyncio.sleep(0.2)
        if client is not None:
            await client.close()


async def settled_audit(dsn: str, schema: str, banks: list[SteadyBank], simulators: dict[str, OperatorSimulator]):
    journal = PostgresJournal(dsn, schema=schema)
    await journal.start()
    try:
        approvals = set().union(*(bank.approvals for bank in banks))
        deadline = asyncio.get_running_loop().time() + SETTLE_TIMEOUT
        while True:
            credits = sum((sim.credits() for sim in simulators.values()), Counter())
            findings = await audit(journal, approvals, credits)
            if all(f.ok for f in findings) or asyncio.get_running_loop().time() > deadline:
                return findings
            await asyncio.sleep(0.5)
    finally:
        await journal.close()


async def scenario(tmp_path: Path, dsn: str, schema: str, fault):
    """Run `fault` under steady traffic from two banks; return the settled audit, the banks, the run
    directory and the operator simulators."""
    proxy = FaultProxy("127.0.0.1", 5432)
    proxy_dsn = dsn.replace("127.0.0.1:5432", f"127.0.0.1:{await proxy.start()}")
    simulators = {op_id: OperatorSimulator(op_id, OperatorBehaviour(latency_ms=5, jitter_ms=4), dialect=dialect)
                  for op_id, dialect in OPERATORS.items()}
    ports = {op_id: await sim.start() for op_id, sim in simulators.items()}
    port = free_port()
    switch = SwitchProcess(write_config(tmp_path, port, ports, proxy_dsn, schema), port)
    await switch.start()
    banks = [SteadyBank(port, MELLI, "127.0.0.1", 4), SteadyBank(port, NOVIN, "127.0.0.2", 4)]
    traffic = asyncio.gather(*(bank.run() for bank in banks))
    try:
        await fault(switch, proxy, simulators)
        for bank in banks:
            bank.stop.set()
        await traffic
        findings = await settled_audit(dsn, schema, banks, simulators)
        return findings, banks, tmp_path, simulators
    finally:
        for bank in banks:
            bank.stop.set()
        switch.stop()
        for sim in simulators.values():
            await sim.stop()
        await proxy.stop()


def check(findings, banks) -> None:
    report = format_findings(findings)
    approved = sum(bank.answers["00"] for bank in banks)
    print(report, "\nanswers:", [dict(bank.answers) for bank in banks])
    assert approved > 100, f"too little traffic got through: {[dict(b.answers) for b in banks]}"
    assert all(f.ok for f in findings), report


def test_operator_link_dropped_mid_flight_and_late_answers_leave_the_books_balanced(tmp_path, pg_dsn, pg_schema):
    async def fault(switch, proxy, simulators):
        await asyncio.sleep(1.5)
        simulators["MCI"].disconnect_all()                      # link lost with requests in flight
        simulators["IRANCELL"].behaviour.latency_ms = 450       # answers around the 0.5 s timeout: some late
        simulators["IRANCELL"].behaviour.jitter_ms = 300
        await asyncio.sleep(2.5)
        simulators["IRANCELL"].behaviour.latency_ms = 5
        simulators["IRANCELL"].behaviour.jitter_ms = 4
        await asyncio.sleep(1.0)

    findings, banks, *_ = asyncio.run(scenario(tmp_path, pg_dsn, pg_schema, fault))
    check(findings, banks)
    assert sum(bank.answers["91"] for bank in banks) > 0   # the faults really happened


def test_postgres_blocked_for_seconds_under_traffic_loses_nothing(tmp_path, pg_dsn, pg_schema):
    async def fault(switch, proxy, simulators):
        await asyncio.sleep(1.5)
        proxy.cut()             # Postgres unreachable: the switch runs on its spill file
        await asyncio.sleep(3.0)
        proxy.restore()
        await asyncio.sleep(2.0)

    findings, banks, *_ = asyncio.run(scenario(tmp_path, pg_dsn, pg_schema, fault))
    check(findings, banks)
    assert not list((tmp_path / "spill").glob("spill-*.jsonl"))   # replayed and removed


def test_switch_killed_with_sigkill_and_restarted_leaves_the_books_balanced(tmp_path, pg_dsn, pg_schema):
    async def fault(switch, proxy, simulators):
        for sim in simulators.values():
            sim.behaviour.latency_ms = 150    # plenty in flight when the switch dies
        await asyncio.sleep(2.0)
        switch.kill()
        await asyncio.sleep(0.5)
        await switch.start()                  # recovery finds what the dead process left in flight
        for sim in simulators.values():
            sim.behaviour.latency_ms = 5
        await asyncio.sleep(2.0)

    findings, banks, directory, simulators = asyncio.run(scenario(tmp_path, pg_dsn, pg_schema, fault))
    check(findings, banks)
    # The same audit from the command line, as an operator of the switch would run it.
    approvals = directory / "approvals.json"
    approvals.write_bytes(orjson.dumps(sorted(set().union(*(bank.approvals for bank in banks)))))
    ledger = directory / "ledger.json"
    ledger.write_bytes(orjson.dumps(list(sum((s.credits() for s in simulators.values()), Counter()).elements())))
    # The switch's own configuration, pointed at Postgres directly rather than through the test's proxy.
    switch_config = (directory / "airswitch.toml").read_text()
    start = switch_config.index('dsn = "') + len('dsn = "')
    end = switch_config.index('"', start)
    config = directory / "audit.toml"
    config.write_text(switch_config[:start] + pg_dsn + switch_config[end:])
    result = subprocess.run([sys.executable, "-m", "switch.app.cli", "audit", "--config", str(config),
                             "--bank-approvals", str(approvals), "--operator-ledger", str(ledger)],
                            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[FAIL]" not in result.stdout and "[ok] operators' credits equal" in result.stdout
