"""The facts the code relies on live in docs/: every citation of a docs page (and heading) from code,
configs, tests and the README resolves, and nothing cites a file outside the repository."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CITATION = re.compile(r"docs/([\w-]+\.md)(?:#([\w-]+))?")
SOURCES = ["pe_dense", "projects", "configs", "tools", "tests", "benchmarks", "notebooks", "README.md", "docs"]


def _files():
    for name in SOURCES:
        path = ROOT / name
        yield from ([path] if path.is_file() else
                    (p for p in sorted(path.rglob("*")) if p.suffix in {".py", ".md", ".ipynb"}))


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lowercase, punctuation dropped, spaces to hyphens."""
    headings = [line.lstrip("#").strip() for line in page.read_text().splitlines() if line.startswith("#")]
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def test_every_docs_citation_resolves():
    cited, broken = 0, []
    for path in _files():
        for page, anchor in CITATION.findall(path.read_text()):
            cited += 1
            target = ROOT / "docs" / page
            if not target.is_file() or (anchor and anchor not in _anchors(target)):
                broken.append(f"{path.relative_to(ROOT)}: docs/{page}{'#' + anchor if anchor else ''}")
    assert cited > 10 and not broken, broken


def test_nothing_cites_notes_outside_the_repository():
    outside = [str(p.relative_to(ROOT)) for p in _files() if p != Path(__file__)
               and re.search(r"pe_reference\.md|design\.md|\.\./shared", p.read_text())]
    assert not outside


def test_the_anchor_rule_matches_github():
    page = ROOT / "docs" / "detection.md"
    assert "vitdet-mask-r-cnn" in _anchors(page)
