"""Reload without a restart: routes, amount rules and links change under traffic;
a configuration that does not validate is refused and the running one stays."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from simulators.operator import OperatorBehaviour, OperatorSimulator
from switch.app.config import load_config
from switch.app.server import Switch
from support import DEMO_CONF, BankClient, top_up

OPERATORS = ("MCI", "IRANCELL", "RIGHTEL")


def write_config(directory: Path, ports: dict[str, int], dsn: str, schema: str, extra_mci_port: int | None = None):
    operators = []
    for op_id, port in ports.items():
        links = [f'{{ mode = "connect", host = "127.0.0.1", port = {port} }}']
        if op_id == "MCI" and extra_mci_port:
            links.append(f'{{ mode = "connect", host = "127.0.0.1", port = {extra_mci_port} }}')
        operators.append(f'''
[[operators]]
id = "{op_id}"
name = "{op_id}"
dialect = "opa87"
timeout = 2.0
backoff_max = 0.5
links = [{", ".join(links)}]
''')
    (directory / "airswitch.toml").write_text(f'''
institution_id = "99001"
[listener]
port = 0
[journal]
backend = "postgres"
dsn = "{dsn}"
schema = "{schema}"
[routing]
routes = "routes.toml"
ported = "ported.csv"
[[acquirers]]
institution_id = "603799"
name = "Bank Melli Iran"
allowed_addresses = ["127.0.0.1/32"]
''' + "".join(operators))


@pytest.fixture
def conf_dir(tmp_path):
    for name in ("routes.toml", "ported.csv"):
        shutil.copy(DEMO_CONF.parent / name, tmp_path / name)
    return tmp_path


def move_prefix_to_irancell(routes: Path, prefix: str) -> None:
    text = routes.read_text().replace(f'"{prefix}", ', "", 1)
    routes.write_text(text.replace('prefixes = [\n    "98930"', f'prefixes = [\n    "{prefix}", "98930"', 1))


def test_reload_moves_a_route_while_traffic_runs_without_a_failed_transaction(conf_dir, pg_dsn, pg_schema):
    async def scenario():
        simulators = {op: OperatorSimulator(op, OperatorBehaviour(latency_ms=5)) for op in OPERATORS}
        ports = {op: await sim.start() for op, sim in simulators.items()}
        write_config(conf_dir, ports, pg_dsn, pg_schema)
        switch = Switch(load_config(conf_dir / "airswitch.toml"))
        await switch.start()
        assert await switch.wait_operators_up(5.0)
        irancell_link = switch.providers["IRANCELL"].links[0]
        bank = await BankClient.connect(switch.port)
        answers: list[dict] = []
        stop = asyncio.Event()

        async def traffic(worker: int):
            sequence = 0
            while not stop.is_set():
                sequence += 1
                answers.append(await bank.request(top_up(f"{worker}{sequence:05d}"[-6:], msisdn="09131110001")))

        workers = [asyncio.create_task(traffic(w)) for w in range(1, 6)]
        await asyncio.sleep(0.5)
        move_prefix_to_irancell(conf_dir / "routes.toml", "98913")
        assert await switch.reload()
        await asyncio.sleep(0.5)
        stop.set()
        await asyncio.gather(*workers)
        try:
            assert len(answers) > 50 and {a["39"] for a in answers} == {"00"}
            served_by = [a["44"] for a in answers]
            assert served_by[0] == "MCI" and served_by[-1] == "IRANCELL"
            assert switch.providers["IRANCELL"].links[0] is irancell_link and irancell_link.is_up
            assert len(simulators["IRANCELL"].connections) == 1   # its link was never redialled
        finally:
            await bank.close()
            await switch.stop()
            for sim in simulators.values():
                await sim.stop()
    asyncio.run(scenario())


def test_reload_adds_and_removes_a_link_and_unchanged_links_stay_up(conf_dir, pg_dsn, pg_schema):
    async def scenario():
        simulators = {op: OperatorSimulator(op, OperatorBehaviour(latency_ms=1)) for op in OPERATORS}
        second_mci = OperatorSimulator("MCI", OperatorBehaviour(latency_ms=1))
        ports = {op: await sim.start() for op, sim in simulators.items()}
        extra = await second_mci.start()
        write_config(conf_dir, ports, pg_dsn, pg_schema)
        switch = Switch(load_config(conf_dir / "airswitch.toml"))
        await switch.start()
        try:
            assert await switch.wait_operators_up(5.0)
            first_link = switch.providers["MCI"].links[0]
            write_config(conf_dir, ports, pg_dsn, pg_schema, extra_mci_port=extra)
            assert await switch.reload()
            await asyncio.sleep(0.5)
            links = switch.providers["MCI"].links
            assert len(links) == 2 and links[0] is first_link and all(link.is_up for link in links)
            write_config(conf_dir, {**ports, "MCI": extra}, pg_dsn, pg_schema)   # the first link goes away
            assert await switch.reload()
            await asyncio.sleep(0.3)
            assert [link.link.port for link in switch.providers["MCI"].links] == [extra]
            assert not simulators["MCI"].connections      # drained and closed
        finally:
            await switch.stop()
            for sim in [*simulators.values(), second_mci]:
                await sim.stop()
    asyncio.run(scenario())


def test_reload_of_a_configuration_that_does_not_validate_is_refused_and_the_running_one_stays(
        conf_dir, pg_dsn, pg_schema, caplog):
    async def scenario():
        simulators = {op: OperatorSimulator(op, OperatorBehaviour(latency_ms=1)) for op in OPERATORS}
        ports = {op: await sim.start() for op, sim in simulators.items()}
        write_config(conf_dir, ports, pg_dsn, pg_schema)
        switch = Switch(load_config(conf_dir / "airswitch.toml"))
        await switch.start()
        try:
            assert await switch.wait_operators_up(5.0)
            routes = conf_dir / "routes.toml"
            routes.write_text(routes.read_text().replace("minimum = 10000", 'minimum = "lots"', 1))
            assert not await switch.reload()
            assert "routes.toml" in caplog.text and "minimum" in caplog.text
            bank = await BankClient.connect(switch.port)
            assert (await bank.request(top_up("000001", msisdn="09361110001")))["39"] == "00"
            await bank.close()
        finally:
            await switch.stop()
            for sim in simulators.values():
                await sim.stop()
    asyncio.run(scenario())
