"""Install a missing system tool from Debian's packages when we are allowed to (root + apt)."""

from __future__ import annotations

import os
import shutil
import subprocess

from herald.infra.processes import ServiceError

_apt_updated = False


def ensure_command(command: str, package: str) -> str:
    """Path of `command`, installing Debian's `package` first when missing and allowed."""
    found = shutil.which(command)
    if found:
        return found
    install_debian_package(package, reason=f"`{command}` is not installed")
    found = shutil.which(command)
    if not found:
        raise ServiceError(f"installed {package} but `{command}` is still not on PATH")
    return found


def install_debian_package(package: str, reason: str) -> None:
    global _apt_updated
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise ServiceError(f"{reason}: install the Debian package `{package}` and retry")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if not _apt_updated:
        subprocess.run(["apt-get", "update", "-q"], check=True, env=env, capture_output=True)
        _apt_updated = True
    result = subprocess.run(["apt-get", "install", "-y", "-q", package], env=env,
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise ServiceError(f"{reason}; `apt-get install {package}` failed:\n{result.stderr[-2000:]}")
