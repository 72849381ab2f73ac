"""Find the system tools Herald runs (Java, Maven, PostgreSQL's server, a Java 21 for the
schema registry). Nothing is installed
here: a missing tool is an error naming its Debian package and the command that installs it
(`herald system-packages`, which `make install` and `herald up` run)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from herald.infra.processes import ServiceError

# What the embedded services run: a command (or the PostgreSQL server's bin folder) -> the
# Debian package that provides it.
RUNTIME_PACKAGES = {"java": "openjdk-17-jre-headless", "mvn": "maven", "postgresql": "postgresql",
                    "java21": "openjdk-21-jre-headless"}
# Apicurio Registry 3 needs Java 21 or newer; Kafka runs on the default `java` (17 or newer).
REGISTRY_JAVA = 21
# The embedded JVMs compile with C1 only. They live for a demo, a test or a bench on a machine
# of two cores, where C2's compiler thread competes for those cores while every stage starts,
# and its code arrives only after minutes of load. `herald demo --rate 100 --no-faults` on a
# fresh broker, C1 only against the default (two runs each): p50 96 and 124 ms against 390
# and 625, p99 1,153 and 1,140 ms against 1,985 and 1,583. A broker that ran ten demos with C2
# does better (p50 43-56 ms, against 70-84 after four with C1 only).
QUICK_JIT = ("-XX:TieredStopAtLevel=1",)
JVM_ROOT = Path("/usr/lib/jvm")
# What only the test suite uses (the console test drives a headless browser).
TEST_PACKAGES = {"chromium": "chromium", "chromedriver": "chromium-driver"}
# Where the other commands Herald may call come from, for error messages.
OTHER_COMMANDS = {"pgbench": "postgresql-client"}
INSTALL_HINT = "`herald system-packages` installs it (as root, with apt-get)"


def find_postgres_bin_dir() -> Path | None:
    """The newest installed PostgreSQL server binaries (Debian layout), if any."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
                        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    return candidates[-1].parent if candidates else None


def find_java(min_major: int, root: Path = JVM_ROOT) -> Path | None:
    """The newest `java` of a JDK or JRE installed the Debian way (one folder per runtime under
    /usr/lib/jvm, with a `release` file naming its JAVA_VERSION) of at least `min_major`."""
    found: list[tuple[int, Path]] = []
    for release in root.glob("*/release"):
        if release.parent.is_symlink():  # Debian's short aliases of the same runtime
            continue
        version = re.search(r'^JAVA_VERSION="(\d+)', release.read_text(errors="replace"), re.MULTILINE)
        java = release.parent / "bin" / "java"
        if version and int(version.group(1)) >= min_major and java.is_file():
            found.append((int(version.group(1)), java))
    return max(found)[1] if found else None


def require_java(min_major: int) -> Path:
    found = find_java(min_major)
    if found is None:
        raise ServiceError(f"no Java {min_major} or newer under {JVM_ROOT} (the schema registry needs "
                           f"it): it comes with the Debian package `openjdk-{min_major}-jre-headless`; "
                           f"{INSTALL_HINT}")
    return found


def is_installed(tool: str) -> bool:
    if tool == "postgresql":
        return find_postgres_bin_dir() is not None
    if tool == "java21":
        return find_java(REGISTRY_JAVA) is not None
    return shutil.which(tool) is not None


def require_command(command: str) -> str:
    """Path of `command`; when it is missing, an error naming its package and how to install it."""
    found = shutil.which(command)
    if found:
        return found
    package = {**RUNTIME_PACKAGES, **TEST_PACKAGES, **OTHER_COMMANDS}.get(command, command)
    raise ServiceError(f"`{command}` is not installed: it comes with the Debian package `{package}`; "
                       f"{INSTALL_HINT}")


def require_postgres_bin_dir() -> Path:
    found = find_postgres_bin_dir()
    if found is None:
        raise ServiceError("PostgreSQL server binaries are missing (no /usr/lib/postgresql/*/bin/pg_ctl): "
                           f"they come with the Debian package `postgresql`; {INSTALL_HINT}")
    return found
