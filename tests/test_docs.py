"""The facts the code relies on live in docs/: every citation of a docs page (and heading) from code,
configs, tests and the README resolves, every link of the README and the docs reaches a file (and heading)
of the repository, and nothing cites a file outside the repository."""

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


LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
PAGES = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md")),
         *sorted((ROOT / "projects").rglob("README.md"))]


def test_every_link_of_the_readme_and_docs_resolves():
    checked, broken = 0, []
    for page in PAGES:
        for target in LINK.findall(page.read_text()):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            checked += 1
            path, _, anchor = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            if not resolved.exists() or (anchor and (resolved.suffix != ".md" or anchor not in _anchors(resolved))):
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert checked > 20 and not broken, broken


def test_the_link_check_sees_a_broken_link(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# Title\n[there](#title) [gone](missing.md) [nowhere](#no-such-heading)\n")
    found = [t for t in LINK.findall(page.read_text())]
    assert found == ["#title", "missing.md", "#no-such-heading"]
    assert "title" in _anchors(page) and "no-such-heading" not in _anchors(page)
