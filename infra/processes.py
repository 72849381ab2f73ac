"""Small helpers for the background processes Herald starts: spawn, liveness, stop, ports."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from herald.infra.deadline import Deadline
from herald.infra.settings import env_name


class ServiceError(RuntimeError):
    """An embedded service could not be installed, started or reached; says what to do."""


EPHEMERAL_PORTS = Path("/proc/sys/net/ipv4/ip_local_port_range")
LOWEST_LISTEN_PORT = 20000  # above the ports docs name (the simulators' 18081-18083)
_LINUX_EPHEMERAL = (32768, 60999)
PORT_CLAIMS = Path(tempfile.gettempdir()) / f"herald-ports-{os.getuid()}"


def listen_ports(ephemeral: Path = EPHEMERAL_PORTS) -> range:
    """The ports a server of ours may take: those the kernel never hands out as a client's source
    port. Port 0 draws from the ephemeral range, so a client connecting elsewhere could take the
    port between our choosing it and a child binding it ("address already in use")."""
    try:
        low, high = (int(part) for part in ephemeral.read_text().split())
    except (OSError, ValueError):
        low, high = _LINUX_EPHEMERAL
    if low - LOWEST_LISTEN_PORT >= 1000:
        return range(LOWEST_LISTEN_PORT, low)
    return range(high + 1, 65536)  # empty when the ephemeral range reaches the top


def free_port(ephemeral: Path = EPHEMERAL_PORTS, claims: Path = PORT_CLAIMS) -> int:
    """A port free now, outside the ephemeral range where it can be, and claimed for this process
    so that no other process of ours on this machine is handed it while it lives."""
    candidates = listen_ports(ephemeral)
    pick = random.SystemRandom()
    for _ in range(min(100, len(candidates))):
        port = pick.choice(candidates)
        # a fresh choice passes over TIME_WAIT too
        if port_is_free(port, reuse_address=False) and claim_port(port, claims):
            return port
    with socket.socket() as sock:  # no room outside the ephemeral range: let the kernel choose
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def claim_port(port: int, claims: Path = PORT_CLAIMS) -> bool:
    """Claim `port` for this process: a file named for it, created exclusively, holding our pid.
    A port is free to bind before its child binds it, so two test workers could both choose it;
    the claim closes that gap. A claim whose process has exited is cleared for the next chooser."""
    claims.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = claims / str(port)
    written = claims / f".{port}.{os.getpid()}.{threading.get_ident()}"  # threads choose too
    written.write_text(str(os.getpid()))
    try:
        os.link(written, path)  # atomic and exclusive, and the claim is whole when it appears
    except FileExistsError:
        if not pid_alive(_claimant(path)):
            path.unlink(missing_ok=True)  # cleared only; the port is chosen afresh next time
        return False
    finally:
        written.unlink()
    return True


def _claimant(path: Path) -> int | None:
    try:
        return int(path.read_text())
    except (OSError, ValueError):  # cleared this instant, or garbled
        return None


def port_is_free(port: int, *, reuse_address: bool = True) -> bool:
    """Whether a server could bind `port` now. With `reuse_address`, as servers bind: connections
    of a previous run in TIME_WAIT do not make it busy; without, they do."""
    with socket.socket() as sock:
        if reuse_address:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(ChildProcessError):
        done, _status = os.waitpid(pid, os.WNOHANG)
        if done == pid:  # our own child that already exited
            return False
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    """Exited, and waiting for its parent (another process) to collect its status: as good as
    gone for whoever waits on it, and a signal cannot end it any further."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False  # no /proc here: take it as running
    return stat.rsplit(")", 1)[-1].split()[:1] == ["Z"]


AUTOGROUP = Path("/proc/self/autogroup")


def lower_priority(increment: int, autogroup: Path = AUTOGROUP) -> int:
    """Lower this process's CPU priority by `increment` (Unix nice); returns its nice value.

    Linux's autogroup scheduling (on by default in many kernels) shares the CPU fairly between
    sessions first, and nice counts only within one session. Every process Herald starts leads a
    session of its own, so there `os.nice` alone changed nothing: the Faust processors at nice 10
    took as much CPU as the router beside them. A session leader also sets its autogroup's nice;
    a process in its caller's session (a shell) leaves it alone, or it would lower the shell."""
    nice = os.nice(increment)
    if increment > 0 and os.getsid(0) == os.getpid():
        with contextlib.suppress(OSError):  # no autogroup (other kernels, other systems): nice is all
            autogroup.write_text(f"{nice}\n")
    return nice


def spawn_detached(argv: Sequence[str], log_path: Path, extra_env: Mapping[str, str] | None = None) -> int:
    """Start a server that outlives the call that started it (`herald up`); its pid.

    Spawned without a Popen handle: a handle dropped while its server runs warns at exit,
    and `pid_alive` reaps the child itself, which a handle would never learn.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    actions = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
               (os.POSIX_SPAWN_OPEN, 1, str(log_path), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644),
               (os.POSIX_SPAWN_DUP2, 1, 2)]
    return os.posix_spawnp(argv[0], list(argv), {**os.environ, **(extra_env or {})},
                           file_actions=actions, setsid=True)


def spawn(
    argv: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start a process in its own session (it outlives the caller), output to `log_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.Popen(
            list(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None, cwd=cwd, start_new_session=True,
        )


def terminate(pid: int, deadline: Deadline) -> bool:
    """SIGTERM, wait until `deadline`, then SIGKILL. True when it stopped gracefully."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    while not deadline.expired():
        if not pid_alive(pid):
            return True
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    while pid_alive(pid):
        time.sleep(0.05)
    return False


def tail(path: Path, lines: int = 20) -> str:
    if not path.exists():
        return f"(no log at {path})"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


class ProcessGroup:
    """Child processes started together and stopped together, each logging to its own file.

    Like a supervisor, it names each process, and a process started again under its name keeps
    it: that name (with the host's) is the process's instance id, so its consumers rejoin their
    groups as the static members they were."""

    def __init__(self, log_dir: Path, env: Mapping[str, str]) -> None:
        self.log_dir = log_dir
        self.env = dict(env)
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, argv: Sequence[str]) -> subprocess.Popen[bytes]:
        log_path = self.log_path(name)
        log_path.unlink(missing_ok=True)
        env = {**self.env, env_name("instance_id"): f"{socket.gethostname()}-{name}"}
        process = spawn(argv, log_path, env=env)
        self.processes[name] = process
        return process

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def kill(self, name: str) -> None:
        """SIGKILL one process and forget it (its log stays): a crash the others must survive."""
        process = self.processes.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGKILL)
        process.wait()

    def stop(self, name: str, timeout_s: float = 30.0) -> None:
        """SIGTERM one process, SIGKILL after `timeout_s`, and forget it."""
        process = self.processes.pop(name)
        terminate(process.pid, Deadline(timeout_s))
        process.wait()

    def wait_for_logged(self, names: Sequence[str], text: str, deadline: Deadline,
                        interval_s: float = 0.1) -> None:
        """Until the log of each named process holds `text` (a process says it is ready); a
        process that exits first, or the deadline, is an error naming who is still waiting."""
        waiting = list(names)
        while waiting:
            self.check_alive()
            waiting = [n for n in waiting if not self._logged(n, text)]
            if waiting and deadline.expired():
                raise ServiceError(f"{', '.join(waiting)}: no {text!r} in the log in time; "
                                   f"{self.log_path(waiting[0])}:\n{tail(self.log_path(waiting[0]))}")
            if waiting:
                time.sleep(interval_s)

    def _logged(self, name: str, text: str) -> bool:
        path = self.log_path(name)
        return path.exists() and text in path.read_text(errors="replace")

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise ServiceError(f"{name} exited with status {process.returncode}; "
                                   f"{self.log_path(name)}:\n{tail(self.log_path(name))}")

    def stop_all(self, timeout_s: float = 30.0) -> None:
        deadline = Deadline(timeout_s)
        for process in self.processes.values():
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGTERM)
        for process in self.processes.values():
            if process.poll() is None:
                terminate(process.pid, deadline)
            process.wait()

    def __enter__(self) -> ProcessGroup:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_rest: object) -> None:
        self.stop_all()
        if exc_type is not None:
            # A failing test shows what each process said; CI keeps nothing else of them.
            print(self.report(), file=sys.stderr)

    def report(self, lines: int = 40) -> str:
        return "\n".join(f"--- {name} (exit {process.returncode}), last {lines} lines:\n"
                         f"{tail(self.log_path(name), lines)}"
                         for name, process in self.processes.items())
