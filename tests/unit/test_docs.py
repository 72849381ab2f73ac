"""The documentation is true and whole: the site builds strictly, README's links and every test
a page names exist, and the settings page is the settings object's own."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from herald.infra.settings import settings_reference

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted((ROOT / "docs").glob("*.md"))
TEST_NAME = re.compile(r"`(?:tests/(?:unit|integration)/)?(test_\w+\.py)(?:::(\w+))?`")


def test_the_site_builds_strictly(tmp_path):
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                             str(tmp_path / "site")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    built = {p.parent.name for p in (tmp_path / "site").glob("*/index.html")}
    assert built == {p.stem for p in PAGES if p.stem != "index"}, "every page is built, none left out"


def test_the_settings_page_is_what_herald_settings_prints():
    assert (ROOT / "docs" / "settings.md").read_text() == settings_reference(), (
        "regenerate it: .venv/bin/herald settings --markdown > docs/settings.md")


def test_readme_is_short_and_its_links_lead_somewhere():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) < 250
    targets = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", readme)
    assert len(targets) >= 10
    assert not [t for t in targets if not t.startswith("http") and not (ROOT / t).exists()]


@pytest.mark.parametrize("page", [ROOT / "README.md", *PAGES], ids=lambda p: p.name)
def test_every_test_a_page_names_exists(page: Path):
    files: dict[str, list[str]] = {}  # a name may be both a unit and an integration test file
    for path in (ROOT / "tests").rglob("test_*.py"):
        files.setdefault(path.name, []).append(path.read_text())
    missing = []
    for file_name, function in TEST_NAME.findall(page.read_text()):
        texts = files.get(file_name, [])
        defined = any(re.search(rf"^(async )?def {function}\(", text, re.MULTILINE) for text in texts)
        if not texts or (function and not defined):
            missing.append(f"{file_name}::{function}" if function else file_name)
    assert not missing, f"{page.name} names tests that do not exist: {missing}"
