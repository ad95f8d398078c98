"""Shared fixtures. PostgreSQL: a reachable server (pg_dsn) and a throw-away schema (pg_schema)."""

from __future__ import annotations

import asyncio
import os
import re
import uuid

import asyncpg
import pytest

DEFAULT_TEST_DSN = "postgresql://postgres@127.0.0.1:5432/test"
CONNECT_TIMEOUT = 5.0  # seconds


def _redact(dsn: str) -> str:
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", dsn)


async def _execute(dsn: str, sql: str) -> None:
    conn = await asyncpg.connect(dsn, timeout=CONNECT_TIMEOUT)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def pg_dsn() -> str:
    """DSN of the test PostgreSQL (env AIRSWITCH_TEST_DSN). Unreachable: skip, or fail when CI=true."""
    dsn = os.environ.get("AIRSWITCH_TEST_DSN", DEFAULT_TEST_DSN)
    try:
        asyncio.run(_execute(dsn, "SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any reason to not reach it is reported
        reason = f"PostgreSQL unreachable at {_redact(dsn)}: {exc!r}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return dsn


@pytest.fixture
def pg_schema(pg_dsn: str):
    """A fresh schema name (t_<8 hex>), not yet created; dropped with CASCADE afterwards."""
    name = f"t_{uuid.uuid4().hex[:8]}"
    yield name
    asyncio.run(_execute(pg_dsn, f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
