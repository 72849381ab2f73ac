"""Ports for the servers Herald starts come from outside the kernel's ephemeral range, so a
client's source port cannot take one between its choosing and the server's bind."""

from __future__ import annotations

import socket

import pytest

from herald.infra.processes import LOWEST_LISTEN_PORT, free_port, listen_ports


def ephemeral_file(tmp_path, low: int, high: int):
    path = tmp_path / "ip_local_port_range"
    path.write_text(f"{low}\t{high}\n")
    return path


def test_ports_below_linuxs_default_ephemeral_range(tmp_path):
    ports = listen_ports(ephemeral_file(tmp_path, 32768, 60999))
    assert ports == range(LOWEST_LISTEN_PORT, 32768)
    chosen = {free_port(ephemeral_file(tmp_path, 32768, 60999)) for _ in range(20)}
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
        port = free_port(only_the_held_one)
    assert port != 65535
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
    assert listen_ports(ephemeral_file(tmp_path, 1024, 65535)) == range(0)
