"""The Faust processors' lower CPU priority holds where Linux schedules by autogroup: each
process Herald starts leads a session, and nice alone counts only within one."""

from __future__ import annotations

import subprocess
import sys

import pytest

from herald.infra.processes import AUTOGROUP, lower_priority

CHILD = "from herald.infra.processes import lower_priority; print(lower_priority(5))"


def autogroup_line() -> str:
    """This process's autogroup, e.g. '/autogroup-4 nice 0'; empty in the root autogroup (a
    session that init or a container's first process started without setsid, as in CI)."""
    return AUTOGROUP.read_text().strip()


def run_child(new_session: bool) -> tuple[int, str]:
    """A child that lowers its priority by 5 and then reads its autogroup: (its nice, the line)."""
    code = f"{CHILD}; print(open('/proc/self/autogroup').read().strip())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         start_new_session=new_session).stdout.split("\n")
    return int(out[0]), out[1]


needs_autogroup = pytest.mark.skipif(not AUTOGROUP.exists(), reason="this kernel has no autogroup scheduling")


@needs_autogroup
def test_a_session_leader_lowers_its_autogroup_too():
    nice, autogroup = run_child(new_session=True)
    assert nice == 5
    assert autogroup.endswith("nice 5"), autogroup


@needs_autogroup
def test_a_process_in_its_callers_session_leaves_the_sessions_autogroup_alone():
    before = autogroup_line()
    nice, autogroup = run_child(new_session=False)
    assert nice == 5
    assert autogroup == before
    assert autogroup_line() == before


def test_without_an_autogroup_file_only_nice_changes(tmp_path):
    missing = tmp_path / "no-such-dir" / "autogroup"
    code = ("import os, pathlib; from herald.infra.processes import lower_priority; "
            f"print(lower_priority(3, pathlib.Path({str(missing)!r})), os.nice(0))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         start_new_session=True).stdout.split()
    assert out == ["3", "3"]
    assert not missing.exists()


def test_no_increment_changes_nothing(tmp_path):
    untouched = tmp_path / "autogroup"
    untouched.write_text("/autogroup-1 nice 0\n")
    assert lower_priority(0, untouched) == lower_priority(0)
    assert untouched.read_text() == "/autogroup-1 nice 0\n"
