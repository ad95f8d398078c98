"""`airswitch bench`: the load test's command line.

`add_bench_parser(subparsers)` adds the `bench` subcommand to airswitch's parser (its handler
follows switch.app.cli's convention: `args.handler(args)` returns the exit code); `main(argv)` is the
same command on its own (`python -m bench`). The micro-benchmarks are not here: they run under
pytest-benchmark (`python -m pytest bench/test_micro.py --benchmark-only`).
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from bench import loadgen, run

DESCRIPTION = ("Load-test the switch: a bare bank87 responder for the ceiling, then the switch (journal in "
               "Postgres, operators on opa87 simulators), every party in its own process; a fixed rate or a "
               "step search for the highest rate that holds a p99 objective. Results in bench/runs/<timestamp>/.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    load = parser.add_argument_group("load")
    load.add_argument("--rate", type=float, default=run.DEFAULT_RATE,
                      help=f"fixed mode: top-ups a second (default {run.DEFAULT_RATE:.0f})")
    load.add_argument("--duration", type=float, default=run.DEFAULT_DURATION,
                      help=f"fixed mode: seconds (default {run.DEFAULT_DURATION:g})")
    load.add_argument("--connections", type=int, default=loadgen.DEFAULT_CONNECTIONS,
                      help=f"bank87 connections the load is spread over (default {loadgen.DEFAULT_CONNECTIONS})")
    load.add_argument("--max-in-flight", type=int, default=loadgen.DEFAULT_MAX_IN_FLIGHT,
                      help="requests waiting for an answer at most; one due beyond it is not sent and counts as "
                           f"overload-client (default {loadgen.DEFAULT_MAX_IN_FLIGHT})")
    load.add_argument("--answer-timeout", type=float, default=loadgen.DEFAULT_ANSWER_TIMEOUT,
                      help=f"seconds before a request counts as timeout (default {loadgen.DEFAULT_ANSWER_TIMEOUT:g})")
    load.add_argument("--warmup", type=float, default=run.DEFAULT_WARMUP,
                      help=f"seconds at {run.WARMUP_RATE:.0f}/s before the measured load (default "
                           f"{run.DEFAULT_WARMUP:g}; 0: none)")

    search = parser.add_argument_group("search")
    search.add_argument("--search", action="store_true",
                        help="step search instead of one rate: step up until p99 > objective or any error")
    search.add_argument("--p99-ms", type=float, default=run.DEFAULT_OBJECTIVE_MS,
                        help=f"objective: p99 latency in ms a step must hold (default {run.DEFAULT_OBJECTIVE_MS:g})")
    search.add_argument("--start-rate", type=float, default=run.DEFAULT_SEARCH_START,
                        help=f"first step (default {run.DEFAULT_SEARCH_START:.0f}/s)")
    search.add_argument("--step", type=float, default=run.DEFAULT_SEARCH_STEP,
                        help=f"added each step (default {run.DEFAULT_SEARCH_STEP:.0f}/s)")
    search.add_argument("--step-duration", type=float, default=run.DEFAULT_STEP_DURATION,
                        help=f"seconds a step (default {run.DEFAULT_STEP_DURATION:g})")
    search.add_argument("--max-rate", type=float, default=run.DEFAULT_SEARCH_MAX,
                        help=f"the search stops here (default {run.DEFAULT_SEARCH_MAX:.0f}/s)")

    ceiling = parser.add_argument_group("ceiling")
    ceiling.add_argument("--no-ceiling", action="store_true", help="skip the run against the bare responder")
    ceiling.add_argument("--ceiling-rate", type=float, default=run.DEFAULT_CEILING_RATE,
                         help=f"offered to the responder (default {run.DEFAULT_CEILING_RATE:.0f}/s)")
    ceiling.add_argument("--ceiling-duration", type=float, default=run.DEFAULT_CEILING_DURATION,
                         help=f"seconds (default {run.DEFAULT_CEILING_DURATION:g})")

    switch = parser.add_argument_group("switch")
    switch.add_argument("--workers", type=int, default=1,
                        help="passed to `airswitch serve --workers` when above 1 (default 1)")
    switch.add_argument("--operator-latency-ms", type=float, default=0.0,
                        help="the operator simulators' answer delay (default 0)")
    switch.add_argument("--max-queue-delay", type=float, default=None,
                        help="the switch's admission objective in seconds (default: the switch's own, 0.05)")
    switch.add_argument("--admin", action="store_true",
                        help="run the switch with its admin server on (metrics observer on the money path)")
    switch.add_argument("--dsn", default=None,
                        help=f"journal database (default ${run.DSN_ENV} or {run.DEFAULT_DSN})")
    switch.add_argument("--keep-schema", action="store_true", help="keep the run's journal schema afterwards")
    switch.add_argument("--profile", action="store_true",
                        help="sample the switch with py-spy during the measured load (profile-top.txt)")
    parser.add_argument("--runs-dir", type=Path, default=run.DEFAULT_RUNS_DIR,
                        help=f"where run directories go (default {run.DEFAULT_RUNS_DIR})")


def options_from(args: argparse.Namespace, command: str) -> run.BenchOptions:
    options = run.BenchOptions(
        mode="search" if args.search else "fixed", rate=args.rate, duration=args.duration,
        objective_ms=args.p99_ms, search_start=args.start_rate, search_step=args.step,
        step_duration=args.step_duration, search_max=args.max_rate, ceiling=not args.no_ceiling,
        ceiling_rate=args.ceiling_rate, ceiling_duration=args.ceiling_duration, warmup=args.warmup,
        connections=args.connections, max_in_flight=args.max_in_flight, answer_timeout=args.answer_timeout,
        workers=args.workers, keep_schema=args.keep_schema, profile=args.profile, runs_dir=args.runs_dir,
        operator_latency_ms=args.operator_latency_ms, max_queue_delay=args.max_queue_delay, admin=args.admin,
        command=command)
    if args.dsn:
        options.dsn = args.dsn
    return options


def _check(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    positive = {"--rate": args.rate, "--duration": args.duration, "--connections": args.connections,
                "--max-in-flight": args.max_in_flight, "--answer-timeout": args.answer_timeout,
                "--p99-ms": args.p99_ms, "--start-rate": args.start_rate, "--step": args.step,
                "--step-duration": args.step_duration, "--ceiling-rate": args.ceiling_rate,
                "--ceiling-duration": args.ceiling_duration, "--workers": args.workers}
    for flag, value in positive.items():
        if value <= 0:
            parser.error(f"{flag} must be positive, not {value}")
    if args.answer_timeout <= run.OPERATOR_TIMEOUT:
        parser.error(f"--answer-timeout must be longer than the operators' timeout ({run.OPERATOR_TIMEOUT} s)")


def cmd_bench(args: argparse.Namespace) -> int:
    _check(args.bench_parser, args)
    return run.run_bench(options_from(args, shlex.join(["airswitch", *sys.argv[1:]])))


def add_bench_parser(subparsers) -> argparse.ArgumentParser:
    """Add `bench` to an argparse subparsers object; its handler is `args.handler(args) -> int`."""
    parser = subparsers.add_parser("bench", help="load-test the switch (see bench/README.md)",
                                   description=DESCRIPTION)
    add_arguments(parser)
    parser.set_defaults(handler=cmd_bench, bench_parser=parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=DESCRIPTION)
    add_arguments(parser)
    args = parser.parse_args(argv)
    args.bench_parser = parser
    _check(parser, args)
    command = shlex.join(["python", "-m", "bench", *(sys.argv[1:] if argv is None else argv)])
    return run.run_bench(options_from(args, command))


if __name__ == "__main__":
    sys.exit(main())
