"""Herald's core knows no domain: every example lives in its own folder under examples/."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CORE = ("producers", "streams", "consumers", "schemas", "infra", "ops")
# The registrations example's words (seed 000): an event, its notification, its domain.
DOMAIN_WORDS = re.compile(r"registration|e_ticket|e-ticket|payment", re.IGNORECASE)


def core_files() -> list[Path]:
    return sorted(p for folder in CORE for p in (ROOT / folder).rglob("*")
                  if p.suffix in (".py", ".html") and "__pycache__" not in p.parts)


def test_no_core_module_names_an_example_domain():
    named = {str(path.relative_to(ROOT)): sorted(set(DOMAIN_WORDS.findall(path.read_text())))
             for path in core_files() if DOMAIN_WORDS.search(path.read_text())}
    assert core_files() and named == {}


def test_each_example_is_a_folder_of_its_own_with_its_catalog_and_schemas():
    examples = sorted(p.parent.name for p in (ROOT / "examples").glob("*/catalog.yaml"))
    assert examples == ["payments", "registrations", "tasks"]
    assert (ROOT / "examples" / "DEFAULT").read_text().strip() in examples
    for name in examples:
        assert list((ROOT / "examples" / name / "schemas").glob("*.avsc")), name
