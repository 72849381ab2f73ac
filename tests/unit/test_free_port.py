"""Ports for the servers Herald starts come from outside the kernel's ephemeral range, so a
client's source port cannot take one between its choosing and the server's bind; and each is
claimed for the process that chose it, so two processes of ours are never handed the same one."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from herald.infra.processes import LOWEST_LISTEN_PORT, claim_port, free_port, listen_ports


def ephemeral_file(tmp_path, low: int, high: int):
    path = tmp_path / "ip_local_port_range"
    path.write_text(f"{low}\t{high}\n")
    return path


def test_ports_below_linuxs_default_ephemeral_range(tmp_path):
    ports = listen_ports(ephemeral_file(tmp_path, 32768, 60999))
    assert ports == range(LOWEST_LISTEN_PORT, 32768)
    chosen = {free_port(ephemeral_file(tmp_path, 32768, 60999), tmp_path / "claims") for _ in range(20)}
    assert all(port in ports for port in chosen)
    assert len(chosen) > 1, "random, so parallel workers rarely collide"


def test_a_range_starting_low_leaves_the_ports_above_it(tmp_path):
    assert listen_ports(ephemeral_file(tmp_path, 1024, 50000)) == range(50001, 65536)


def test_an_unreadable_range_counts_as_linuxs_default(tmp_path):
    assert listen_ports(tmp_path / "missing") == range(LOWEST_LISTEN_PORT, 32768)
    (tmp_path / "garbled").write_text("not ports")
    assert listen_ports(tmp_path / "garbled") == range(LOWEST_LISTEN_PORT, 32768)


def test_a_taken_port_is_passed_over_and_no_room_falls_back_to_the_kernel(tmp_path):
    with socket.socket() as held:
        try:
            held.bind(("127.0.0.1", 65535))
        except OSError:
            pytest.skip("port 65535 is in use here")
        held.listen()
        only_the_held_one = ephemeral_file(tmp_path, 1024, 65534)
        assert listen_ports(only_the_held_one) == range(65535, 65536)
        port = free_port(only_the_held_one, tmp_path / "claims")
    assert port != 65535
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
    assert listen_ports(ephemeral_file(tmp_path, 1024, 65535)) == range(0)


def test_a_port_claimed_by_a_live_process_is_passed_over_and_an_exited_ones_claim_cleared(tmp_path):
    claims = tmp_path / "claims"
    only_65535 = ephemeral_file(tmp_path, 1024, 65534)
    assert claim_port(65535, claims), "an unclaimed port is claimable"
    assert not claim_port(65535, claims), "claimed by this live process"
    assert free_port(only_65535, claims) != 65535
    exited = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                            capture_output=True, text=True, check=True)
    (claims / "65535").write_text(exited.stdout.strip())
    assert not claim_port(65535, claims), "a stale claim is cleared, not taken over at once"
    assert not (claims / "65535").exists()
    assert claim_port(65535, claims), "and the next chooser may have it"
    assert sorted(path.name for path in claims.iterdir()) == ["65535"], "no temporary files left"


CHOOSE = """
import sys
from pathlib import Path
from herald.infra.processes import free_port
ephemeral, claims = Path(sys.argv[1]), Path(sys.argv[2])
sys.stdin.readline()  # all choosers start together
print(" ".join(str(free_port(ephemeral, claims)) for _ in range(30)), flush=True)
sys.stdin.readline()  # and live until all have chosen: an exited chooser's claims lapse
"""


def test_processes_choosing_at_once_from_a_narrow_range_never_share_a_port(tmp_path):
    hundred_ports = ephemeral_file(tmp_path, 1024, 65435)
    assert len(listen_ports(hundred_ports)) == 100
    choosers = [subprocess.Popen([sys.executable, "-c", CHOOSE, str(hundred_ports), str(tmp_path / "claims")],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(3)]
    for chooser in choosers:
        chooser.stdin.write("go\n")
        chooser.stdin.flush()
    outputs = [chooser.stdout.readline() for chooser in choosers]
    for chooser in choosers:
        chooser.communicate("done\n", timeout=30)
    chosen = [int(port) for output in outputs for port in output.split()]
    assert len(chosen) == 90
    shared = len(chosen) - len(set(chosen))
    assert shared == 0, f"{shared} ports handed to two processes"


def test_threads_of_one_process_choosing_at_once_never_share_a_port(tmp_path):
    hundred_ports = ephemeral_file(tmp_path, 1024, 65435)
    start = threading.Barrier(6)

    def choose(_: int) -> list[int]:
        start.wait(timeout=10)
        return [free_port(hundred_ports, tmp_path / "claims") for _ in range(12)]

    with ThreadPoolExecutor(6) as pool:
        chosen = [port for ports in pool.map(choose, range(6)) for port in ports]
    assert len(chosen) == 72
    assert len(chosen) - len(set(chosen)) == 0, "a port handed to two threads"
