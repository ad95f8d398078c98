"""Interop: a client built only on pyiso8583's stock `iso8583.specs.default` (not on
airswitch's dialect code) signs on and gets a top-up approved over a real socket."""

from __future__ import annotations

import asyncio
import copy
import struct
import uuid
from datetime import datetime, timezone

import iso8583
import iso8583.specs

from support import MELLI, postgres_journal, running_switch

SPEC = copy.deepcopy(iso8583.specs.default)


async def exchange(reader, writer, message: dict) -> dict:
    payload, _ = iso8583.encode(dict(message), SPEC)
    writer.write(struct.pack(">H", len(payload)) + bytes(payload))
    size = struct.unpack(">H", await reader.readexactly(2))[0]
    answer, _ = iso8583.decode(await reader.readexactly(size), SPEC)
    return answer


def test_stock_pyiso8583_client_signs_on_and_gets_a_top_up_approved(pg_dsn, pg_schema):
    async def scenario():
        async with running_switch(postgres_journal(pg_dsn, pg_schema)) as switch:
            reader, writer = await asyncio.open_connection("127.0.0.1", switch.port)
            now = datetime.now(timezone.utc)
            sign_on = await exchange(reader, writer, {"t": "0800", "7": now.strftime("%m%d%H%M%S"),
                                                      "11": "000001", "70": "001"})
            assert (sign_on["t"], sign_on["39"]) == ("0810", "00")
            rrn = uuid.uuid4().hex[:12].upper()
            answer = await exchange(reader, writer, {
                "t": "0200", "3": "000000", "4": "000000050000", "7": now.strftime("%m%d%H%M%S"),
                "11": "000002", "12": now.strftime("%H%M%S"), "13": now.strftime("%m%d"), "32": MELLI,
                "37": rrn, "41": "ATM00001", "49": "364", "103": "+989361110001"})
            assert (answer["t"], answer["39"], answer["37"], answer["44"]) == ("0210", "00", rrn, "IRANCELL")
            writer.close()
    asyncio.run(scenario())
