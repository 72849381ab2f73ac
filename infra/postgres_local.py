"""The embedded PostgreSQL: a private cluster from Debian's binaries, on a loopback port.

PostgreSQL refuses to run as root, so when we are root the server runs as a dedicated
unprivileged system user. Its data lives in `<home>/postgres/data` when that user can
reach it, else under /var/tmp (the state file says where).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pwd
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from herald.infra.deadline import Deadline
from herald.infra.processes import ServiceError, free_port, port_is_free
from herald.infra.system_packages import find_postgres_bin_dir, require_postgres_bin_dir

SERVER_USER = "herald-postgres"
DATABASE = "herald"
ROLE = "herald"


@dataclass(frozen=True)
class PostgresState:
    url: str
    data_dir: str
    port: int


class EmbeddedPostgres:
    def __init__(self, home: Path) -> None:
        self.dir = home / "postgres"
        self.state_file = self.dir / "state.json"

    def state(self) -> PostgresState | None:
        if not self.state_file.exists():
            return None
        state = PostgresState(**json.loads(self.state_file.read_text()))
        return state if self._is_running(Path(state.data_dir)) else None

    def start(self, timeout_s: float = 60.0) -> PostgresState:
        running = self.state()
        if running is not None:
            return running
        bin_dir = self._bin_dir()
        user = self._server_user()
        data_dir = self._data_dir(user)
        if not (data_dir / "PG_VERSION").exists():
            self._run(user, [bin_dir / "initdb", "-D", data_dir, "-U", ROLE, "--auth=trust",
                             "-E", "UTF8", "--no-locale"])
        port = self._port()
        # Commit timestamps: the demo and `herald bench e2e` time each hop from the commit itself.
        options = (f"-p {port} -c listen_addresses=127.0.0.1 "
                   f"-c unix_socket_directories={data_dir} -c max_connections=200 "
                   "-c track_commit_timestamp=on")
        self._run(user, [bin_dir / "pg_ctl", "-D", data_dir, "-l", data_dir / "server.log",
                         "-o", options, "-w", "-t", str(int(timeout_s)), "start"])
        state = PostgresState(f"postgresql+psycopg2://{ROLE}@127.0.0.1:{port}/{DATABASE}",
                              str(data_dir), port)
        self._create_database(port, Deadline(timeout_s))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.state_file.write_text(json.dumps(state.__dict__))
        return state

    def stop(self) -> bool:
        state = self.state()
        self.state_file.unlink(missing_ok=True)
        if state is None:
            return False
        bin_dir = self._bin_dir()
        self._run(self._server_user(), [bin_dir / "pg_ctl", "-D", state.data_dir, "-m", "fast",
                                        "-w", "stop"])
        return True

    def purge(self) -> None:
        """Remove the cluster's data (stopped first), wherever it was placed."""
        self.stop()
        shutil.rmtree(self.dir / "data", ignore_errors=True)
        shutil.rmtree(self._fallback_data_dir().parent, ignore_errors=True)

    def _fallback_data_dir(self) -> Path:
        digest = hashlib.sha256(str(self.dir).encode()).hexdigest()[:12]
        return Path("/var/tmp") / f"herald-postgres-{digest}" / "data"

    def _bin_dir(self) -> Path:
        return require_postgres_bin_dir()

    def _server_user(self) -> str | None:
        """None: run as ourselves. As root: a system user made for the purpose."""
        if os.geteuid() != 0:
            return None
        with contextlib.suppress(KeyError):
            pwd.getpwnam(SERVER_USER)
            return SERVER_USER
        result = subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                                 "/usr/sbin/nologin", SERVER_USER], capture_output=True, text=True)
        if result.returncode != 0:
            raise ServiceError(f"cannot create the unprivileged user {SERVER_USER} that runs "
                               f"PostgreSQL: {result.stderr.strip()}")
        return SERVER_USER

    def _data_dir(self, user: str | None) -> Path:
        preferred = self.dir / "data"
        preferred.parent.mkdir(parents=True, exist_ok=True)
        if user is None:
            return preferred
        if not self._reachable_by(user, preferred.parent):
            # e.g. a checkout under /root: the server user cannot traverse it.
            preferred = self._fallback_data_dir()
        preferred.mkdir(parents=True, exist_ok=True)
        preferred.chmod(0o700)
        shutil.chown(preferred, user, user)
        return preferred

    def _reachable_by(self, user: str, directory: Path) -> bool:
        shutil.chown(directory, user, user)
        probe = subprocess.run(["runuser", "-u", user, "--", "test", "-w", str(directory)])
        return probe.returncode == 0

    def _port(self) -> int:
        port_file = self.dir / "port"
        if port_file.exists() and port_is_free(int(port_file.read_text())):
            return int(port_file.read_text())
        port = free_port()
        port_file.write_text(str(port))
        return port

    def _is_running(self, data_dir: Path) -> bool:
        bin_dir = find_postgres_bin_dir()
        if bin_dir is None or not data_dir.exists():
            return False
        result = subprocess.run(self._as(self._server_user(),
                                         [bin_dir / "pg_ctl", "-D", data_dir, "status"]),
                                capture_output=True)
        return result.returncode == 0

    def _run(self, user: str | None, argv: list[str | Path]) -> None:
        result = subprocess.run(self._as(user, argv), capture_output=True, text=True, cwd="/")
        if result.returncode != 0:
            raise ServiceError(f"`{' '.join(map(str, argv))}` failed:\n{result.stdout}{result.stderr}")

    @staticmethod
    def _as(user: str | None, argv: list[str | Path]) -> list[str]:
        command = [str(a) for a in argv]
        return ["runuser", "-u", user, "--", *command] if user else command

    @staticmethod
    def _create_database(port: int, deadline: Deadline) -> None:
        admin_url = f"postgresql+psycopg2://{ROLE}@127.0.0.1:{port}/postgres"
        engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
        try:
            while True:
                try:
                    with engine.connect() as conn:
                        exists = conn.scalar(sa.text("SELECT 1 FROM pg_database WHERE datname = :d"),
                                             {"d": DATABASE})
                        if not exists:
                            conn.execute(sa.text(f'CREATE DATABASE "{DATABASE}"'))
                        return
                except sa.exc.OperationalError:
                    if deadline.expired():
                        raise
                    time.sleep(0.3)
        finally:
            engine.dispose()
