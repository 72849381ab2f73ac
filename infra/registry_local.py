"""The embedded schema registry: Apicurio Registry's Quarkus distribution from Maven Central,
run on a Java 21+ runtime, storing its data in a database of its own on Herald's PostgreSQL
(schema ids must outlive a restart, or every record written before it becomes undecodable).

Its HTTP and management interfaces listen on loopback only. The archive is fetched into the
Maven repository on first use (as the Kafka jars are) and unpacked beside it; ports, log and
state live in `<home>/registry`. Clients speak Confluent's API at `/apis/ccompat/v7`.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from herald.infra.deadline import Deadline
from herald.infra.processes import (
    ServiceError,
    free_port,
    pid_alive,
    port_is_free,
    spawn_detached,
    tail,
    terminate,
)
from herald.infra.system_packages import QUICK_JIT, REGISTRY_JAVA, require_command, require_java

ARTIFACT = "io.apicurio:apicurio-registry-app"
DATABASE = "herald_registry"
CCOMPAT_PATH = "/apis/ccompat/v7"


@dataclass(frozen=True)
class RegistryState:
    pid: int
    url: str  # the Confluent-compatible API's base URL
    version: str
    management_port: int


def registry_database_url(database_url: str) -> sa.URL:
    """The registry's own database on the same PostgreSQL as Herald's."""
    return sa.make_url(database_url).set(database=DATABASE)


def jdbc_settings(database_url: str) -> dict[str, str]:
    """Apicurio's SQL storage on PostgreSQL, as environment variables (Quarkus reads them)."""
    url = registry_database_url(database_url)
    return {
        "APICURIO_STORAGE_KIND": "sql",
        "APICURIO_STORAGE_SQL_KIND": "postgresql",
        "APICURIO_DATASOURCE_URL": f"jdbc:postgresql://{url.host}:{url.port or 5432}/{url.database}",
        "APICURIO_DATASOURCE_USERNAME": url.username or "",
        "APICURIO_DATASOURCE_PASSWORD": url.password or "",
        # A registry answers a few lookups per process start: a small pool is plenty.
        "APICURIO_DATASOURCE_JDBC_INITIAL_SIZE": "2",
        "APICURIO_DATASOURCE_JDBC_MIN_SIZE": "2",
        "APICURIO_DATASOURCE_JDBC_MAX_SIZE": "20",
    }


@contextmanager
def _server(database_url: str) -> Iterator[sa.Connection]:
    """A connection to Herald's PostgreSQL outside any transaction (CREATE/DROP DATABASE)."""
    engine = sa.create_engine(database_url, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    try:
        with engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()


def create_database(database_url: str) -> None:
    """The registry's database, created once (Apicurio creates its tables itself)."""
    with _server(database_url) as conn:
        exists = conn.execute(sa.text("SELECT 1 FROM pg_database WHERE datname = :name"),
                              {"name": DATABASE}).first()
        if exists is None:
            conn.execute(sa.text(f'CREATE DATABASE "{DATABASE}"'))


def answers(url: str, timeout_s: float = 2.0, healthy: bool = False) -> bool:
    """Whether a registry answers its Confluent-compatible API at `url`: any HTTP answer, or
    with `healthy` a 200 (right after its database restarted, Apicurio's first query fails
    with a 500 on a stale pooled connection, and the next succeeds)."""
    try:
        with urllib.request.urlopen(f"{url}/subjects", timeout=timeout_s) as response:
            return bool(response.status == 200)
    except urllib.error.HTTPError:
        return not healthy
    except (urllib.error.URLError, OSError):
        return False


class EmbeddedRegistry:
    def __init__(self, home: Path, version: str, heap_mb: int, m2: Path | None = None) -> None:
        self.dir = home / "registry"
        self.m2 = m2 or home / "m2"
        self.version = version
        self.heap_mb = heap_mb
        self.state_file = self.dir / "state.json"
        self.log_file = self.dir / "registry.log"

    def state(self) -> RegistryState | None:
        """The running registry, or None (a stale state file counts as not running)."""
        if not self.state_file.exists():
            return None
        state = RegistryState(**json.loads(self.state_file.read_text()))
        return state if pid_alive(state.pid) else None

    def start(self, database_url: str, timeout_s: float = 120.0) -> RegistryState:
        """Start it on `database_url`'s PostgreSQL (unless running) and wait until it answers."""
        running = self.state()
        if running is not None:
            return running
        app = self.app_dir()
        java = require_java(REGISTRY_JAVA)
        create_database(database_url)
        http_port, management_port = self._port("http-port"), self._port("management-port")
        env = {"QUARKUS_HTTP_HOST": "127.0.0.1", "QUARKUS_HTTP_PORT": str(http_port),
               "QUARKUS_MANAGEMENT_HOST": "127.0.0.1", "QUARKUS_MANAGEMENT_PORT": str(management_port),
               **jdbc_settings(database_url)}
        argv = [str(java), f"-Xmx{self.heap_mb}m", "-XX:+UseSerialGC", "-Djava.awt.headless=true", *QUICK_JIT,
                "-jar", str(app / "quarkus-run.jar")]
        self.log_file.unlink(missing_ok=True)
        pid = spawn_detached(argv, self.log_file, extra_env=env)
        url = f"http://127.0.0.1:{http_port}{CCOMPAT_PATH}"
        state = RegistryState(pid, url, self.version, management_port)
        self.state_file.write_text(json.dumps(state.__dict__))
        self._wait_until_ready(state, Deadline(timeout_s))
        return state

    def stop(self, timeout_s: float = 30.0) -> bool:
        state = self.state()
        self.state_file.unlink(missing_ok=True)
        if state is None:
            return False
        terminate(state.pid, Deadline(timeout_s))
        return True

    def purge(self, database_url: str | None) -> None:
        """Stop it and drop its database: the next start registers every schema anew."""
        self.stop()
        if database_url is None:
            return
        try:
            with _server(database_url) as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{DATABASE}"'))
        except sa.exc.OperationalError:
            pass  # PostgreSQL is gone too: its purge takes the registry's database with it

    def app_dir(self) -> Path:
        """The unpacked distribution, fetching the archive with mvn on first use."""
        folder = self.m2 / "io" / "apicurio" / "apicurio-registry-app" / self.version
        unpacked = folder / f"apicurio-registry-app-{self.version}-all"
        if (unpacked / "quarkus-run.jar").exists():
            return unpacked
        archive = folder / f"apicurio-registry-app-{self.version}-all.tar.gz"
        if not archive.exists():
            self._fetch()
        partial = folder / "unpacking"
        shutil.rmtree(partial, ignore_errors=True)
        with tarfile.open(archive) as tar:
            tar.extractall(partial, filter="data")
        top = next(p for p in partial.rglob("quarkus-run.jar")).parent
        top.rename(unpacked)  # whole or not at all: a killed unpack leaves only `unpacking`
        shutil.rmtree(partial, ignore_errors=True)
        return unpacked

    def _fetch(self) -> None:
        mvn = require_command("mvn")
        print(f"fetching Apicurio Registry {self.version} (about 150 MB, from Maven Central, "
              f"into {self.m2})...", file=sys.stderr)
        result = subprocess.run(
            [mvn, "-q", "-B", "dependency:get", f"-Dartifact={ARTIFACT}:{self.version}:tar.gz:all",
             "-Dtransitive=false", f"-Dmaven.repo.local={self.m2}"], capture_output=True, text=True)
        if result.returncode != 0:
            raise ServiceError(f"mvn could not fetch Apicurio Registry {self.version}:\n"
                               f"{result.stdout[-3000:]}")

    def _port(self, name: str) -> int:
        """The port used last time when it is free (clients keep their URL), else a new one."""
        path = self.dir / name
        if path.exists() and port_is_free(int(path.read_text())):
            return int(path.read_text())
        port = free_port()
        self.dir.mkdir(parents=True, exist_ok=True)
        path.write_text(str(port))
        return port

    def _wait_until_ready(self, state: RegistryState, deadline: Deadline) -> None:
        while not deadline.expired():
            if not pid_alive(state.pid):
                self.state_file.unlink(missing_ok=True)
                raise ServiceError(f"the schema registry exited during start-up; {self.log_file}:\n"
                                   f"{tail(self.log_file)}")
            if answers(state.url, healthy=True):
                return
            time.sleep(0.25)
        self.stop()
        raise ServiceError(f"the schema registry did not answer in time; {self.log_file}:\n"
                           f"{tail(self.log_file)}")
