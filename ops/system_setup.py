"""Install the Debian packages Herald's embedded services need (and, for the suite, its test
tools), saying what it installs and why. Run by `make install` and `herald up`, never by a
library module: those only look a tool up (`herald.infra.system_packages`)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Mapping

from herald.infra.processes import ServiceError
from herald.infra.system_packages import RUNTIME_PACKAGES, TEST_PACKAGES, is_installed


def missing_packages(tools: Mapping[str, str]) -> dict[str, str]:
    """The tools not found, each with the Debian package that provides it."""
    return {tool: package for tool, package in tools.items() if not is_installed(tool)}


def install_system_packages(with_test_tools: bool = False, say: Callable[[str], None] = print) -> list[str]:
    """Install what is missing with apt-get (as root); the packages it installed, in order.
    Where it may not (not root, or no apt-get), the error names what to install."""
    tools = {**RUNTIME_PACKAGES, **(TEST_PACKAGES if with_test_tools else {})}
    missing = missing_packages(tools)
    if not missing:
        return []
    packages = sorted(set(missing.values()))
    wanted = ", ".join(f"{package} (for `{tool}`)" for tool, package in missing.items())
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise ServiceError(f"missing system packages: {wanted}; install them as root: "
                           f"apt-get install {' '.join(packages)}")
    say(f"installing Debian packages: {wanted}")
    environ = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=True, env=environ, capture_output=True)
    result = subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages],
                            env=environ, capture_output=True, text=True)
    if result.returncode != 0:
        raise ServiceError(f"`apt-get install {' '.join(packages)}` failed:\n{result.stderr[-2000:]}")
    still = missing_packages(missing)
    if still:
        raise ServiceError(f"installed {', '.join(packages)} but still missing: {', '.join(still)}")
    return packages
