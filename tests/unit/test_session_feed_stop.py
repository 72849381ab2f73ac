"""A session reconciler told to stop while the broker is away exits at once: its metadata call
runs in a thread, which cannot be cancelled and which the interpreter joins at exit, so one
30 s call held a stopped worker 27 s (a fresh-clone CI run). No broker here: a closed port."""

from __future__ import annotations

import subprocess
import sys
import time

from herald.infra.processes import free_port
from herald.streams.session_agents import METADATA_CALL_S

ASK_THEN_STOP = """
import asyncio, sys
from herald.streams.session_agents import _partitions_of

async def main():
    asking = asyncio.ensure_future(_partitions_of(sys.argv[1], "gateway.observations"))
    await asyncio.sleep(0.5)
    asking.cancel()
    print("cancelled:", (await asyncio.gather(asking, return_exceptions=True))[0].__class__.__name__)

asyncio.run(main())
"""


def test_a_worker_asking_an_absent_broker_for_partitions_exits_soon_after_it_is_cancelled():
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", ASK_THEN_STOP, f"127.0.0.1:{free_port()}"],
                            capture_output=True, text=True, timeout=60)
    took = time.monotonic() - started
    assert result.returncode == 0, result.stderr[-2000:]
    assert "cancelled: CancelledError" in result.stdout
    assert took < METADATA_CALL_S + 8, f"exited {took:.1f} s after it began (one call is {METADATA_CALL_S} s)"
