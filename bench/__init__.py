"""airswitch's benchmarks: the end-to-end load test and the micro-benchmarks.

- `bench.loadgen`: the open-loop bank87 load generator (one process, thousands of top-ups a second).
- `bench.responder`: a bare bank87 host that approves everything, for the load generator's own ceiling.
- `bench.run`: the orchestration of a load test: run directory, generated configuration, the switch,
  operator simulators, the responder and the load generator as separate processes, the checks at the end.
- `bench.report`: tables, JSON, Markdown and a PNG from the load generator's results.
- `bench.cli`: `airswitch bench` (see `add_bench_parser`) and `python -m bench`.
- `bench/test_micro.py`: pytest-benchmark micro-benchmarks (codecs, routing, dedupe, journal), run on
  demand only: `python -m pytest bench/test_micro.py --benchmark-only`.
"""
