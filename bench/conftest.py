"""pytest plumbing for the micro-benchmarks (bench/test_micro.py), which the normal test run does
not collect (pyproject's testpaths is tests/).

It owns the "target vs measured" lines printed after pytest-benchmark's table, and the
PostgreSQL fixtures the journal benchmark needs (the same DSN as the tests: AIRSWITCH_TEST_DSN).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from dataclasses import dataclass

import pytest

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
DSN_ENV = "AIRSWITCH_TEST_DSN"
CONNECT_TIMEOUT = 5.0   # seconds

_TARGETS = pytest.StashKey[list]()


@dataclass(frozen=True)
class Measured:
    target: str
    measured: float
    goal: float
    unit: str
    higher_is_better: bool = False
    detail: str = ""

    @property
    def met(self) -> bool:
        return self.measured >= self.goal if self.higher_is_better else self.measured <= self.goal

    def line(self) -> str:
        relation = ">=" if self.higher_is_better else "<="
        verdict = "ok  " if self.met else "MISS"
        detail = f"  ({self.detail})" if self.detail else ""
        return (f"{verdict} {self.target:<52} measured {self.measured:>12,.2f} {self.unit:<10} "
                f"target {relation} {self.goal:,.2f} {self.unit}{detail}")


class TargetRecorder:
    def __init__(self, results: list[Measured]):
        self._results = results

    def record(self, target: str, measured: float, goal: float, unit: str, *, higher_is_better: bool = False,
               detail: str = "") -> None:
        self._results.append(Measured(target, measured, goal, unit, higher_is_better, detail))


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_TARGETS] = []


@pytest.fixture
def targets(request: pytest.FixtureRequest) -> TargetRecorder:
    """Record a measured number against its target; all are printed at the end of the run."""
    return TargetRecorder(request.config.stash[_TARGETS])


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    results: list[Measured] = config.stash.get(_TARGETS, [])
    if not results:
        return
    terminalreporter.section("airswitch micro-benchmarks: target vs measured")
    for result in results:
        terminalreporter.write_line(result.line())


# -- PostgreSQL ----------------------------------------------------------------------------------
async def _execute(dsn: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn, timeout=CONNECT_TIMEOUT)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def pg_dsn() -> str:
    dsn = os.environ.get(DSN_ENV, DEFAULT_DSN)
    try:
        asyncio.run(_execute(dsn, "SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any reason not to reach it is reported
        pytest.skip(f"PostgreSQL unreachable ({DSN_ENV} or {DEFAULT_DSN}): {exc!r}")
    return dsn


@pytest.fixture
def pg_schema(pg_dsn: str):
    """A fresh schema name, dropped afterwards."""
    name = f"bench_micro_{uuid.uuid4().hex[:8]}"
    yield name
    asyncio.run(_execute(pg_dsn, f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
