"""System packages: the library only looks tools up and names what is missing; installing is
the CLI's (`herald system-packages`, run by make and `herald up`), and says what it installs."""

from __future__ import annotations

import pytest

from herald.infra import system_packages
from herald.infra.processes import ServiceError
from herald.infra.system_packages import require_command
from herald.ops import system_setup


def test_a_missing_command_names_its_package_and_the_command_that_installs_it(monkeypatch):
    monkeypatch.setattr(system_packages.shutil, "which", lambda _command: None)
    with pytest.raises(ServiceError, match=r"`mvn` is not installed.*`maven`.*herald system-packages"):
        require_command("mvn")


def test_nothing_is_installed_when_everything_is_present(monkeypatch):
    monkeypatch.setattr(system_setup, "is_installed", lambda _tool: True)
    monkeypatch.setattr(system_setup.subprocess, "run", lambda *a, **k: pytest.fail("ran apt-get"))
    assert system_setup.install_system_packages(with_test_tools=True) == []


def test_without_root_the_error_names_each_missing_package_and_nothing_runs(monkeypatch):
    monkeypatch.setattr(system_setup, "is_installed", lambda tool: tool not in ("java", "chromedriver"))
    monkeypatch.setattr(system_setup.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(system_setup.subprocess, "run", lambda *a, **k: pytest.fail("ran apt-get"))
    with pytest.raises(ServiceError) as raised:
        system_setup.install_system_packages(with_test_tools=True)
    assert "openjdk-17-jre-headless (for `java`)" in str(raised.value)
    assert "apt-get install chromium-driver openjdk-17-jre-headless" in str(raised.value)


def test_as_root_it_says_what_it_installs_and_installs_only_that(monkeypatch):
    installed: set[str] = set()
    monkeypatch.setattr(system_setup, "is_installed", lambda tool: tool != "mvn" or "maven" in installed)
    monkeypatch.setattr(system_setup.os, "geteuid", lambda: 0)
    monkeypatch.setattr(system_setup.shutil, "which", lambda _command: "/usr/bin/apt-get")
    calls: list[list[str]] = []

    class Done:
        returncode = 0
        stderr = ""

    def run(argv: list[str], **_kwargs: object) -> Done:
        calls.append(argv)
        if argv[:2] == ["apt-get", "install"]:
            installed.update(argv[-1:])
        return Done()

    monkeypatch.setattr(system_setup.subprocess, "run", run)
    said: list[str] = []
    assert system_setup.install_system_packages(say=said.append) == ["maven"]
    assert said == ["installing Debian packages: maven (for `mvn`)"]
    assert calls[-1][-1] == "maven" and calls[-1][:2] == ["apt-get", "install"]
