"""The proving tools' commands reach the CLI through an entry point: present where they are
installed, skipped where the production image left them out, and never a hidden failure."""

from importlib.metadata import EntryPoint

import pytest
import typer

from herald.ops import cli


def commands_with(monkeypatch, *values: str) -> set[str]:
    entries = [EntryPoint(name=f"part{n}", value=value, group="herald.commands")
               for n, value in enumerate(values)]
    monkeypatch.setattr(cli, "entry_points", lambda group: entries if group == "herald.commands" else [])
    app = typer.Typer()
    app.command()(lambda: None)
    cli.add_plugin_commands(app)
    return {command.callback.__name__ for command in app.registered_commands} | {
        group.name for group in app.registered_groups}


def test_the_proving_tools_add_their_commands(monkeypatch):
    added = commands_with(monkeypatch, "herald.proving.cli:register")
    assert {"simulator", "demo", "chaos", "bench"} <= added


def test_a_part_left_out_of_the_image_is_skipped(monkeypatch):
    assert commands_with(monkeypatch, "herald.proving.not_shipped:register") == {"<lambda>"}


def test_a_missing_dependency_of_a_part_is_not_hidden(monkeypatch):
    with pytest.raises(ModuleNotFoundError, match="no_such_dependency"):
        commands_with(monkeypatch, "no_such_dependency.commands:register")


def test_the_installed_cli_has_the_proving_commands():
    names = {command.name or command.callback.__name__ for command in cli.app.registered_commands}
    assert {"simulator", "demo", "chaos", "relay", "deliver"} <= names
    assert "bench" in {group.name for group in cli.app.registered_groups}
