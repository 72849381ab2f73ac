"""A proving tool stopped with SIGTERM runs its cleanups (stopping what it started), as on Ctrl-C."""

from __future__ import annotations

import signal
import subprocess
import sys

CHILD = """
import sys, time
from herald.proving.cli import end_cleanly_on_sigterm
end_cleanly_on_sigterm()
try:
    print("ready", flush=True)
    time.sleep(60)
finally:
    open(sys.argv[1], "w").write("cleaned up")
"""


def test_sigterm_ends_the_tool_through_its_finally_blocks(tmp_path):
    marker = tmp_path / "marker"
    with subprocess.Popen([sys.executable, "-c", CHILD, str(marker)], stdout=subprocess.PIPE,
                          text=True) as child:
        assert child.stdout is not None and child.stdout.readline() == "ready\n"
        child.send_signal(signal.SIGTERM)
        assert child.wait(timeout=20) == 128 + signal.SIGTERM
    assert marker.read_text() == "cleaned up"
