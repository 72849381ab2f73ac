"""Fixtures the unit tests share."""

import logging

import pytest


@pytest.fixture
def logging_kept():
    """The CLI configures the process's logging at start; this test process keeps its own."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:], root.level = handlers, level
