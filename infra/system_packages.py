"""Find the system tools Herald runs (Java, Maven, PostgreSQL's server). Nothing is installed
here: a missing tool is an error naming its Debian package and the command that installs it
(`herald system-packages`, which `make install` and `herald up` run)."""

from __future__ import annotations

import shutil
from pathlib import Path

from herald.infra.processes import ServiceError

# What the embedded services run: a command (or the PostgreSQL server's bin folder) -> the
# Debian package that provides it.
RUNTIME_PACKAGES = {"java": "openjdk-17-jre-headless", "mvn": "maven", "postgresql": "postgresql"}
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


def is_installed(tool: str) -> bool:
    if tool == "postgresql":
        return find_postgres_bin_dir() is not None
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
