"""A bare bank87 host that approves every top-up: the load generator's ceiling.

It does what any bank87 server must do per request and nothing else: cut the
frame, decode the 0200 with pyiso8583 (through `switch.wire`), encode a 0210 of
the same shape as the switch's approval (the echoed fields, 38, 39 = 00, 44 and
48 OR) and write it back, one write per batch of frames received. No routing, no
operator, no journal. What the load generator gets out of it is the most a
Python bank87 process can answer on this machine, so the switch's throughput can
be read as a share of it.

Run alone: python -m bench.responder --port 5899   (port 0: any free port; the first line names it)
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections import Counter

from switch.errors import RemoteProtocolError
from switch.wire import Dialect, load_dialect

log = logging.getLogger("airswitch.bench.responder")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5899
APPROVAL_CODE = "000001"
OPERATOR_ID = "BARE"
LISTENING = "bank87 responder listening on"   # the first line on stdout: "<LISTENING> host:port"


class Responder:
    """Counts what it answered; one instance serves every connection."""

    def __init__(self, dialect: Dialect | None = None):
        self.dialect = dialect or load_dialect("bank87")
        self.echo: list[str] = self.dialect.rules["echo"]["financial"]
        self.echo_network: list[str] = self.dialect.rules["echo"]["network"]
        self.answered: Counter = Counter()
        self._server: asyncio.Server | None = None

    def answer(self, request: dict) -> dict | None:
        mti = request.get("t")
        if mti == "0800":
            answer = {key: request[key] for key in self.echo_network if key in request}
            answer.update({"t": "0810", "39": "00"})
        elif mti in ("0200", "0201"):
            answer = {key: request[key] for key in self.echo if key in request}
            answer.update({"t": "0210", "38": APPROVAL_CODE, "39": "00", "44": OPERATOR_ID,
                           "48": f"OR{len(request.get('37', '')):03d}{request.get('37', '')}"})
        else:
            return None
        self.answered[answer["t"]] += 1
        return answer

    async def start(self, host: str = DEFAULT_HOST, port: int = 0) -> int:
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _ResponderConnection(self), host, port, reuse_address=True)
        return self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None


class _ResponderConnection(asyncio.Protocol):
    def __init__(self, responder: Responder):
        self.responder = responder
        self.dialect = responder.dialect
        self.decoder = self.dialect.frame_decoder()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            frames = self.decoder.feed(data)
        except RemoteProtocolError as exc:
            log.warning("responder: %s; closing", exc)
            self.transport.close()
            return
        answers = []
        for frame in frames:
            try:
                request = self.dialect.decode(frame)
            except RemoteProtocolError as exc:
                log.warning("responder: dropped a message that does not decode: %s", exc)
                continue
            answer = self.responder.answer(request)
            if answer is not None:
                answers.append(self.dialect.pack(answer))
        if answers:
            self.transport.write(b"".join(answers))


def main(argv: list[str] | None = None) -> int:
    from switch.app.runner import run, wait_for_signal

    parser = argparse.ArgumentParser(prog="python -m bench.responder", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}; 0: any free port")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    async def serve() -> None:
        responder = Responder()
        port = await responder.start(args.host, args.port)
        print(f"{LISTENING} {args.host}:{port}", flush=True)
        try:
            await wait_for_signal()
        finally:
            await responder.stop()
            print(f"responder answered: {dict(responder.answered)}", flush=True)

    try:
        run(serve())
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
