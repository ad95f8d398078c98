"""`python -m bench`: the load test (see bench/cli.py)."""

import sys

from bench.cli import main

sys.exit(main())
