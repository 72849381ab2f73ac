"""How a `herald` command is started as a child process (the demo's, chaos's and the
benchmarks' pipelines, the tests' processes)."""

from __future__ import annotations

import sys

HERALD_ARGV = (sys.executable, "-m", "herald.ops.cli")
