"""The CLI's help names what there is: every stream processor."""


from typer.testing import CliRunner

from herald.ops.cli import app
from herald.schemas.catalog import STREAM_PROCESSORS as PROCESSORS


def test_streams_help_names_every_processor(logging_kept):
    result = CliRunner().invoke(app, ["streams", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    missing = [name for name in PROCESSORS if f"{name} (" not in text]
    assert not missing, f"`herald streams --help` does not name {missing}"
