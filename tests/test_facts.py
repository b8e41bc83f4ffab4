"""The fact sheets megawatt cites ship with it: every `FACTS.md X.Y` and `NOTES x.y` that a source
file names is a section heading of the copy under `megawatt/data/facts/`."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import pytest

import megawatt

SRC = Path(megawatt.__file__).parent
FACTS_DIR = SRC / "data" / "facts"
TEXT_SUFFIXES = {".py", ".md", ".yaml", ".csv", ".json"}

# "FACTS.md C.4", "FACTS.md A.2/A.5", "FACTS.md C.5, C.6"
FACTS_CITATION = re.compile(r"FACTS\.md\s+([A-Z]\.\d+(?:\s*(?:,|/|and)\s*[A-Z]\.\d+)*)")
# "NOTES d.2", "NOTES b, c.3", "NOTES.md a.1, g.1", "NOTES.md (c.3, c.4, d.2)", "NOTES f"
NOTES_CITATION = re.compile(r"NOTES(?:\.md)?\s+\(?([a-g](?:\.\d+)?\b(?:\s*,\s*[a-g](?:\.\d+)?\b)*)")


def _shipped(name: str) -> str:
    return resources.files("megawatt").joinpath("data", "facts", name).read_text(encoding="utf-8")


def _sources() -> list[Path]:
    return [
        p for p in sorted(SRC.rglob("*"))
        if p.suffix in TEXT_SUFFIXES and FACTS_DIR not in p.parents and p.stat().st_size < 1_000_000
    ]


def _cited(pattern: re.Pattern[str], item: str) -> dict[str, list[str]]:
    """Section -> the files citing it."""
    out: dict[str, list[str]] = {}
    for path in _sources():
        for match in pattern.finditer(path.read_text(encoding="utf-8")):
            for section in re.findall(item, match.group(1)):
                out.setdefault(section, []).append(str(path.relative_to(SRC)))
    return out


def _headings(text: str) -> set[str]:
    """`### B.5 ...` -> B.5, `### d.2 ...` -> d.2, `## (f) ...` -> f."""
    out = set(re.findall(r"^###\s+([A-Za-z]\.\d+)\b", text, re.MULTILINE))
    out |= set(re.findall(r"^##\s+\(([a-z])\)", text, re.MULTILINE))
    return out


def test_the_fact_sheets_ship_with_a_readme() -> None:
    for name in ("FACTS.md", "NOTES.md", "README.md"):
        assert _shipped(name).strip(), name
    assert _shipped("NOTES.md").startswith("# Wafer-scale engines")
    assert _shipped("FACTS.md").startswith("# megawatt facts")


def test_the_package_data_includes_them() -> None:
    text = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    assert '"data/**/*"' in text


def test_the_scanner_reads_every_kind_of_citation() -> None:
    facts = FACTS_CITATION.findall("(FACTS.md A.2/A.5: 1.5-1.9) and FACTS.md C.5, C.6; see")
    assert facts == ["A.2/A.5", "C.5, C.6"]
    notes = NOTES_CITATION.findall("NOTES b, c.3. NOTES.md (c.3, c.4, d.2). NOTES.md): with")
    assert notes == ["b, c.3", "c.3, c.4, d.2"]


def test_every_facts_section_cited_in_src_exists() -> None:
    cited = _cited(FACTS_CITATION, r"[A-Z]\.\d+")
    assert len(cited) >= 15, sorted(cited)  # B.7, C.2, C.5, ... (the scan found them)
    missing = {s: where for s, where in cited.items() if s not in _headings(_shipped("FACTS.md"))}
    assert not missing, f"sections cited but not in data/facts/FACTS.md: {missing}"


def test_every_notes_section_cited_in_src_exists() -> None:
    cited = _cited(NOTES_CITATION, r"[a-g](?:\.\d+)?")
    assert {"d.2", "c.4", "f"} <= set(cited)
    missing = {s: where for s, where in cited.items() if s not in _headings(_shipped("NOTES.md"))}
    assert not missing, f"sections cited but not in data/facts/NOTES.md: {missing}"


@pytest.mark.parametrize("name", ["FACTS.md", "NOTES.md"])
def test_the_readme_names_each_sheet_and_its_origin(name: str) -> None:
    readme = _shipped("README.md")
    assert f"`{name}`" in readme and "unmodified" in readme
