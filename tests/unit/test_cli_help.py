"""The CLI's help names what there is: every stream processor."""

import logging

import pytest
from typer.testing import CliRunner

from herald.ops.cli import app
from herald.streams.app import PROCESSORS


@pytest.fixture
def logging_kept():
    """The CLI configures the process's logging at start; this test process keeps its own."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:], root.level = handlers, level


def test_streams_help_names_every_processor(logging_kept):
    result = CliRunner().invoke(app, ["streams", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    missing = [name for name in PROCESSORS if f"{name} (" not in text]
    assert not missing, f"`herald streams --help` does not name {missing}"
