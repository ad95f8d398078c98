"""The `airswitch` command: serve, demo, simulators and the operator's tools."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from switch.app.logs import setup_logging
from switch.app.runner import run, wait_for_signal
from switch.errors import AirswitchError
from switch.journal import JournalError


# -- serve ------------------------------------------------------------------------------
def _share(text: str | None) -> tuple[int, int] | None:
    """"1/2" -> (1, 2): this worker's index and the worker count (None: not a worker of --workers)."""
    if text is None:
        return None
    index, count = (int(part) for part in text.split("/"))
    return index, count



def cmd_serve(args) -> int:
    from switch.app.config import load_config
    from switch.app.server import Switch

    config = load_config(args.config)
    pid_file = Path(args.pid_file) if args.pid_file else None
    if args.workers > 1:
        from switch.app.workers import supervise
        if pid_file is not None:
            pid_file.write_text(f"{os.getpid()}\n")
        try:
            return supervise(args.config, args.workers, args.log_level, args.log_format)
        finally:
            if pid_file is not None:
                pid_file.unlink(missing_ok=True)

    async def main():
        switch = Switch(config, reuse_port=args.reuse_port, share=_share(args.worker_share))
        await switch.start()
        if pid_file is not None:
            pid_file.write_text(f"{os.getpid()}\n")
        try:
            await wait_for_signal(on_reload=switch.reload)
        finally:
            await switch.stop()
            if pid_file is not None:
                pid_file.unlink(missing_ok=True)

    run(main())
    return 0


def cmd_reload(args) -> int:
    """Ask a running `airswitch serve` to reload its configuration (SIGHUP)."""
    try:
        pid = args.pid if args.pid else int(Path(args.pid_file).read_text().strip())
    except (OSError, ValueError) as exc:
        print(f"airswitch reload: cannot read the pid file {args.pid_file}: {exc}", file=sys.stderr)
        return 2
    if args.config:
        # Validate first, so a broken file is reported here and not only in the switch's log.
        from switch.app.config import load_config
        from switch.app.server import load_router
        load_router(load_config(args.config))
    try:
        os.kill(pid, signal.SIGHUP)
    except ProcessLookupError:
        print(f"airswitch reload: no process {pid}", file=sys.stderr)
        return 2
    print(f"asked airswitch (pid {pid}) to reload; its log says whether the new configuration was taken")
    return 0


# -- simulators ---------------------------------------------------------------------------
def cmd_sim_operator(args) -> int:
    from simulators.operator import OperatorBehaviour, OperatorSimulator

    behaviour = OperatorBehaviour(latency_ms=args.latency_ms, jitter_ms=args.jitter_ms,
                                  latency_distribution=args.latency_distribution,
                                  decline_rate=args.decline_rate, no_answer_rate=args.no_answer_rate,
                                  error_rate=args.error_rate,
                                  unknown_subscribers=frozenset(args.unknown_subscriber), seed=args.seed)
    dial_host, dial_port = None, None
    if args.dial:
        dial_host, _, port = args.dial.rpartition(":")
        dial_port = int(port)

    async def main():
        simulator = OperatorSimulator(
            args.id, behaviour, host=args.host, port=args.port, dialect=args.dialect,
            mode="dial" if args.dial else "listen", switch_host=dial_host or "127.0.0.1", switch_port=dial_port,
            secret=args.secret, links=args.links)
        port = await simulator.start()
        where = f"dialing the switch at {args.dial}" if args.dial else f"listening on {args.host}:{port}"
        print(f"operator simulator {args.id} ({args.dialect}) {where}", flush=True)
        try:
            await wait_for_signal()
        finally:
            await simulator.stop()
            print(f"answers: {dict(simulator.answered)}; credited: {len(simulator.ledger)}")
            if args.ledger_file:
                import orjson
                Path(args.ledger_file).write_bytes(orjson.dumps(list(simulator.credits().elements())))

    run(main())
    return 0


def cmd_sim_bank(args) -> int:
    from simulators.bank import BankSimulator
    from simulators.reporting import print_bank_report

    async def main():
        bank = BankSimulator(args.host, args.port, args.institution_id, count=args.count, rate=args.rate,
                             duration=args.seconds, window=args.window, bad_share=args.bad_share,
                             local_address=args.local_address)
        report = await bank.run_traffic()
        print_bank_report({args.institution_id: report})
        if args.approvals_file:
            import orjson
            Path(args.approvals_file).write_bytes(orjson.dumps(sorted(report.approvals)))
        return 0 if report.lost == 0 else 1

    return run(main())


# -- routes -------------------------------------------------------------------------------
def cmd_routes_check(args) -> int:
    from routing import InvalidMsisdn, normalise_msisdn
    from switch.app.config import load_config
    from switch.resources import demo_config
    from switch.app.server import load_router

    config = load_config(args.config or demo_config())
    router = load_router(config)
    try:
        msisdn = normalise_msisdn(args.msisdn, args.country)
    except InvalidMsisdn as exc:
        print(f"{args.msisdn}: malformed MSISDN ({exc}): an acquirer gets 14")
        return 1
    match = router.route(msisdn)
    if match is None:
        print(f"{args.msisdn} -> {msisdn}: no operator serves it: an acquirer gets 92")
        return 1
    rule = router.amount_rule(match.operator)
    if rule is None:
        amounts = "no amount rule"
    elif rule.amounts is not None:
        amounts = "amounts " + ", ".join(str(a) for a in sorted(rule.amounts))
    else:
        amounts = f"amounts {rule.minimum}..{rule.maximum} step {rule.step}"
    print(f"{args.msisdn} -> {msisdn}: operator {match.operator} by {match.source} ({match.detail}); "
          f"currency {rule.currency if rule else '?'}, {amounts}")
    return 0


def _journal_of(config_path: str):
    from switch.app.config import load_config
    from switch.app.server import open_journal
    return open_journal(load_config(config_path))


def cmd_audit(args) -> int:
    import orjson
    from collections import Counter

    from switch.app.audit import audit, format_findings

    bank_approvals = None
    if args.bank_approvals:
        bank_approvals = set()
        for path in args.bank_approvals:
            bank_approvals |= {tuple(row) for row in orjson.loads(Path(path).read_bytes())}
    operator_credits = None
    if args.operator_ledger:
        operator_credits = Counter()
        for path in args.operator_ledger:
            operator_credits.update(tuple(row) for row in orjson.loads(Path(path).read_bytes()))

    async def main():
        journal = _journal_of(args.config)
        await journal.start()
        try:
            findings = await audit(journal, bank_approvals, operator_credits)
        finally:
            await journal.close()
        print(format_findings(findings))
        return 0 if all(f.ok for f in findings) else 1

    return run(main())


def cmd_reversals(args) -> int:
    from switch.flow.store_and_forward import resolve_reversal

    async def main():
        journal = _journal_of(args.config)
        await journal.start()
        try:
            if args.action == "resolve":
                if not await resolve_reversal(journal, args.txn_id, args.note):
                    print(f"no failed reversal for transaction {args.txn_id} (a pending one is still being sent: "
                          "resolve it once it has failed)", file=sys.stderr)
                    return 1
                print(f"transaction {args.txn_id}: reversal resolved by hand ({args.note})")
                return 0
            rows = await journal.reversals(tuple(args.state), limit=args.limit)
            print(f"{'txn_id':<32}  {'operator':<9} {'reason':<17} {'state':<8} {'tries':>5}  {'created':<19}  "
                  f"{'tracking':<12} {'msisdn':<13} {'amount':>10}  last error")
            for r in rows:
                print(f"{r.txn_id:<32}  {r.operator_id:<9} {r.reason:<17} {r.state:<8} {r.attempts:>5}  "
                      f"{r.created_at:%Y-%m-%d %H:%M:%S}  {r.tracking_code:<12} {r.msisdn or '':<13} "
                      f"{r.amount or 0:>10}  {r.last_error or ''}")
            print(f"{len(rows)} reversal(s) {'/'.join(args.state)}")
            return 0
        finally:
            await journal.close()

    return run(main())


def cmd_sim_pos(args) -> int:
    from simulators.pos import PosSimulator, make_terminals
    from switch.wire.mac import key_from_hex

    async def main():
        terminals = make_terminals(args.terminals, args.acquirer, key_from_hex(args.key), prefix=args.prefix)
        pos = PosSimulator(args.host, args.port, terminals, count=args.count, concurrency=args.concurrency,
                           wrong_key_share=args.wrong_key_share)
        report = await pos.run()
        codes = ", ".join(f"{code} {count}" for code, count in sorted(report.answers.items()))
        print(f"sent {report.sent}: {codes}; no answer {report.lost}; bad answer MACs {report.bad_answer_macs}; "
              f"p50 {report.percentile(0.5):.1f} ms, p99 {report.percentile(0.99):.1f} ms")
        return 0 if report.lost == 0 and report.bad_answer_macs == 0 else 1

    return run(main())


def cmd_float(args) -> int:
    """Float accounts of prepaid acquirers and agents: every movement is a ledger row with its actor."""
    from switch.accounts import FloatLedger
    from switch.app.config import load_config

    config = load_config(args.config)

    async def main():
        ledger = FloatLedger(config.journal.dsn, schema=config.journal.schema)
        await ledger.start()
        try:
            if args.action == "open":
                await ledger.open_account(args.account, parent=args.parent, credit_limit=args.credit_limit)
            elif args.action == "deposit":
                await ledger.deposit(args.account, args.amount, actor=args.actor, note=args.note)
            elif args.action == "adjust":
                await ledger.adjust(args.account, args.amount, actor=args.actor, note=args.note)
            elif args.action == "transfer":
                await ledger.transfer(args.account, args.to, args.amount, actor=args.actor, note=args.note)
            if args.action == "statement":
                for entry in await ledger.statement(args.account, limit=args.limit):
                    print(f"{entry.at:%Y-%m-%d %H:%M:%S}  {entry.kind:<12} {entry.amount:>12} "
                          f"held {entry.held_change:>10}  balance {entry.balance_after:>12}  "
                          f"{entry.txn_id or ''} {entry.actor or ''} {entry.note or ''}")
            balance = await ledger.balance(args.account)
            print(f"{args.account}: balance {balance.balance}, held {balance.held}, available {balance.available}")
            return 0
        finally:
            await ledger.close()

    try:
        return run(main())
    except Exception as exc:
        from switch.accounts import LedgerError
        if isinstance(exc, LedgerError):
            print(f"airswitch float: {exc}", file=sys.stderr)
            return 2
        raise


# -- admin ------------------------------------------------------------------------------
def cmd_admin(args) -> int:
    from switch.admin.auth import hash_token, new_token

    if args.action == "token":
        token = new_token()
        print(f"token (give it to the user; it is not stored): {token}")
        print(f'token_hash (for [[admin.users]] in the configuration): "{hash_token(token)}"')
        return 0
    token = args.token if args.token is not None else sys.stdin.readline().strip()
    if not token:
        print("airswitch admin hash-token: no token given (argument or one line on stdin)", file=sys.stderr)
        return 2
    print(hash_token(token))
    return 0


def cmd_demo(args) -> int:
    from switch.app.demo import run_demo
    return run(run_demo(seconds=args.seconds, rate=args.rate, journal_path=args.journal, stay=args.stay))


def _needs_bench_extra(missing: str | None) -> int:
    print(f"airswitch bench: {missing} is not installed; pip install 'airswitch[bench]'", file=sys.stderr)
    return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="airswitch", description=__doc__)
    parser.add_argument("--log-level", default="WARNING", help="DEBUG, INFO, WARNING (default), ERROR")
    parser.add_argument("--log-format", default="text", choices=["text", "json"],
                        help="text (default) or one JSON object a line")
    commands = parser.add_subparsers(dest="command", required=True)
    _add_running(commands)
    _add_simulators(commands.add_parser("sim", help="simulated peers").add_subparsers(dest="peer", required=True))
    _add_money_tools(commands)
    admin = commands.add_parser("admin", help="the admin server's bearer tokens").add_subparsers(
        dest="action", required=True)
    admin.add_parser("token", help="make a new random token and print it with its hash").set_defaults(
        handler=cmd_admin)
    hashing = admin.add_parser("hash-token", help="print the hash of a token (argument, or one line on stdin)")
    hashing.add_argument("token", nargs="?", default=None)
    hashing.set_defaults(handler=cmd_admin)
    try:
        from bench.cli import add_bench_parser
    except ImportError as exc:  # the load test's own dependencies are an extra
        missing = exc.name
        bench = commands.add_parser("bench", help="the load test (needs: pip install 'airswitch[bench]')")
        bench.set_defaults(handler=lambda _args: _needs_bench_extra(missing))
    else:
        add_bench_parser(commands)
    routes = commands.add_parser("routes", help="routing tools").add_subparsers(dest="action", required=True)
    check = routes.add_parser("check", help="show how a number routes")
    check.add_argument("msisdn")
    check.add_argument("--config", default=None, help="switch configuration (default: the demo's)")
    check.add_argument("--country", default="IR", help="country for national numbers (default IR)")
    check.set_defaults(handler=cmd_routes_check)
    return parser


def _add_running(commands) -> None:
    """serve, reload, demo."""
    serve = commands.add_parser("serve", help="run the switch")
    serve.add_argument("--config", required=True, help="the switch's TOML configuration")
    serve.add_argument("--pid-file", default=None, help="write the process id here (for `airswitch reload`)")
    serve.add_argument("--workers", type=int, default=1, help="switch processes sharing the ports (default 1)")
    serve.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    serve.add_argument("--worker-share", default=None, help=argparse.SUPPRESS)   # set by --workers: "I/N"
    serve.set_defaults(handler=cmd_serve)

    reload = commands.add_parser("reload", help="make a running switch re-read its configuration (SIGHUP)")
    reload.add_argument("--pid-file", default="airswitch.pid", help="the switch's pid file (default airswitch.pid)")
    reload.add_argument("--pid", type=int, default=None, help="the switch's process id, instead of a pid file")
    reload.add_argument("--config", default=None, help="validate this file first and refuse if it does not")
    reload.set_defaults(handler=cmd_reload)

    demo = commands.add_parser("demo", help="switch, three operator simulators and two banks in one command")
    demo.add_argument("--seconds", type=float, default=15.0, help="how long the banks send (default 15)")
    demo.add_argument("--rate", type=float, default=0.0,
                      help="top-ups a second per bank (default 0: as fast as answers come back)")
    demo.add_argument("--journal", default="airswitch-demo.sqlite",
                      help="SQLite journal file, recreated each run (default airswitch-demo.sqlite)")
    demo.add_argument("--stay", action="store_true",
                      help="after the traffic, keep the switch and its console up until Ctrl-C")
    demo.set_defaults(handler=cmd_demo)


def _add_simulators(sim) -> None:
    """sim operator, sim bank, sim pos."""
    operator = sim.add_parser("operator", help="an operator host (the switch dials it, or it dials the switch)")
    operator.add_argument("--dialect", default="opa87", choices=["opa87", "opb93", "opcjson"])
    operator.add_argument("--dial", default=None, metavar="HOST:PORT",
                          help="dial the switch's operator port (accept-mode link) instead of listening")
    operator.add_argument("--secret", default=None, help="opcjson login secret when dialing")
    operator.add_argument("--links", type=int, default=1, help="links to open when dialing (one per switch worker)")
    operator.add_argument("--id", default="MCI", help="operator id, prefix of its references")
    operator.add_argument("--host", default="127.0.0.1")
    operator.add_argument("--port", type=int, default=5901)
    operator.add_argument("--latency-ms", type=float, default=5.0)
    operator.add_argument("--jitter-ms", type=float, default=0.0)
    operator.add_argument("--latency-distribution", default="uniform", choices=["uniform", "exponential"])
    operator.add_argument("--error-rate", type=float, default=0.0, help="share answered operator error")
    operator.add_argument("--decline-rate", type=float, default=0.0)
    operator.add_argument("--no-answer-rate", type=float, default=0.0)
    operator.add_argument("--unknown-subscriber", action="append", default=[],
                          help="an MSISDN (international digits) answered 14; repeatable")
    operator.add_argument("--seed", type=int, default=None)
    operator.add_argument("--ledger-file", default=None,
                          help="at exit, write what it credited and did not reverse (for airswitch audit)")
    operator.set_defaults(handler=cmd_sim_operator)

    bank = sim.add_parser("bank", help="a bank host that sends top-ups")
    bank.add_argument("--host", default="127.0.0.1")
    bank.add_argument("--port", type=int, default=5800)
    bank.add_argument("--institution-id", default="603799", help="field 32 (must be the acquirer of this address)")
    bank.add_argument("--local-address", default=None, help="source address to connect from")
    bank.add_argument("--count", type=int, default=1000)
    bank.add_argument("--seconds", type=float, default=None, help="stop sending after this long")
    bank.add_argument("--rate", type=float, default=0.0, help="top-ups a second (0: as fast as the window allows)")
    bank.add_argument("--window", type=int, default=200, help="top-ups in flight at once")
    bank.add_argument("--bad-share", type=float, default=0.0, help="share of requests that must be refused")
    bank.add_argument("--approvals-file", default=None,
                      help="write (acquirer, tracking code) of every 00 received (for airswitch audit)")
    bank.set_defaults(handler=cmd_sim_bank)

    pos = sim.add_parser("pos", help="POS terminals (pos87, TPDU, MAC), one request at a time each")
    pos.add_argument("--host", default="127.0.0.1")
    pos.add_argument("--port", type=int, default=5820)
    pos.add_argument("--terminals", type=int, default=10)
    pos.add_argument("--prefix", default="POS", help="terminal ids are PREFIX + a number, 8 characters")
    pos.add_argument("--acquirer", default="603799")
    pos.add_argument("--key", required=True, help="the terminals' MAC key K1||K2, 32 hex digits")
    pos.add_argument("--count", type=int, default=100)
    pos.add_argument("--concurrency", type=int, default=10)
    pos.add_argument("--wrong-key-share", type=float, default=0.0, help="share of requests MACed with a wrong key")
    pos.set_defaults(handler=cmd_sim_pos)


def _add_money_tools(commands) -> None:
    """audit, reversals, float."""
    audit_cmd = commands.add_parser("audit", help="prove from the journal that every transaction is settled")
    audit_cmd.add_argument("--config", required=True, help="the switch's configuration (for its journal)")
    audit_cmd.add_argument("--bank-approvals", action="append", default=[],
                           help="approvals a bank received (sim bank --approvals-file); repeatable")
    audit_cmd.add_argument("--operator-ledger", action="append", default=[],
                           help="what an operator credited (sim operator --ledger-file); repeatable")
    audit_cmd.set_defaults(handler=cmd_audit)

    reversals = commands.add_parser("reversals", help="the reversals the switch owes operators")
    reversal_actions = reversals.add_subparsers(dest="action", required=True)
    listing = reversal_actions.add_parser("list", help="list stored reversals")
    listing.add_argument("--config", required=True)
    listing.add_argument("--state", action="append", choices=["pending", "failed", "done", "resolved"],
                         default=None, help="repeatable; default: pending and failed")
    listing.add_argument("--limit", type=int, default=200)
    listing.set_defaults(handler=cmd_reversals)
    resolve = reversal_actions.add_parser("resolve", help="close a failed reversal settled by other means")
    resolve.add_argument("txn_id")
    resolve.add_argument("--note", required=True, help="how it was settled (ticket, person)")
    resolve.add_argument("--config", required=True)
    resolve.set_defaults(handler=cmd_reversals)

    floats = commands.add_parser("float", help="prepaid float accounts (journaled ledger movements)")
    float_actions = floats.add_subparsers(dest="action", required=True)
    for action, help_text in (("open", "open an account (an agent's sub-agent with --parent)"),
                              ("deposit", "money in"), ("adjust", "a signed correction, with a note"),
                              ("transfer", "between an agent and its sub-agent"), ("balance", "show the balance"),
                              ("statement", "the latest movements")):
        command = float_actions.add_parser(action, help=help_text)
        command.add_argument("account")
        command.add_argument("--config", required=True)
        if action in ("deposit", "adjust", "transfer"):
            command.add_argument("amount", type=int, help="minor units (rials)")
            command.add_argument("--actor", required=True, help="who does this (name or ticket)")
            command.add_argument("--note", default=None, required=action == "adjust")
        if action == "transfer":
            command.add_argument("--to", required=True)
        if action == "open":
            command.add_argument("--parent", default=None)
            command.add_argument("--credit-limit", type=int, default=0)
        if action == "statement":
            command.add_argument("--limit", type=int, default=50)
        command.set_defaults(handler=cmd_float)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "action", None) == "list" and getattr(args, "state", "") is None:
        args.state = ["pending", "failed"]
    setup_logging(args.log_level, args.log_format)
    try:
        return args.handler(args) or 0
    except (AirswitchError, JournalError) as exc:
        print(f"airswitch: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
