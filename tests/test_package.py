"""What a package people adopt needs: code that reads nothing from a source checkout, the configs inside the
package by name, one version, and a project that speaks of itself only."""

import ast
import re
from pathlib import Path

import pytest

import pe_dense
from pe_dense import configs

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_CODE = [*sorted((ROOT / "pe_dense").rglob("*.py")), *sorted((ROOT / "projects/DETA/pe_deta").rglob("*.py"))]


def test_package_code_reads_no_path_relative_to_its_files():
    """An installed wheel has no checkout around it: package data is found through importlib.resources."""
    found = [f"{path.relative_to(ROOT)}:{node.lineno}" for path in PACKAGE_CODE
             for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Name) and node.id == "__file__"]
    assert PACKAGE_CODE and not found


def test_the_check_sees_a_path_relative_to_a_file():
    tree = ast.parse('CONFIGS = Path(__file__).resolve().parents[2] / "configs"')
    assert any(isinstance(node, ast.Name) and node.id == "__file__" for node in ast.walk(tree))


def test_every_config_ships_under_its_name_with_the_same_text():
    sources = {p.relative_to(ROOT / "configs").as_posix(): p for p in (ROOT / "configs").rglob("*.py")}
    sources.update({f"DETA/{p.relative_to(ROOT / 'projects/DETA/configs').as_posix()}": p
                    for p in (ROOT / "projects/DETA/configs").rglob("*.py")})
    pieces = {name for name in sources if "_base_/" in name or "common/" in name}
    assert set(configs.names()) == set(sources) - pieces and len(pieces) > 5
    for name, source in sources.items():
        assert configs.get(name).read_text() == source.read_text(), name
    assert configs.names("DETA/shapes") == ["DETA/shapes/deta_PEspatial_T_shapes.py"]


def test_config_specs_name_a_shipped_config_or_a_file(tmp_path):
    name = "segmentation/scenes/linear_PEspatial_T_scenes.py"
    assert configs.resolve(f"pe_dense:{name}") == configs.get(name)
    mine = tmp_path / "mine.py"
    mine.write_text("x = 1\n")
    assert configs.resolve(mine) == mine
    with pytest.raises(FileNotFoundError, match="ships no config 'scenes/linear_PEspatial_T_scenes.py'; did you mean "
                                                "depth/scenes/linear_PEspatial_T_scenes.py or "
                                                "segmentation/scenes/linear_PEspatial_T_scenes.py"):
        configs.resolve("pe_dense:scenes/linear_PEspatial_T_scenes.py")
    with pytest.raises(FileNotFoundError, match="config file '.*nope.py' does not exist"):
        configs.resolve(tmp_path / "nope.py")


def test_configs_command_lists_them(capsys):
    from pe_dense.cli import main

    assert main(["configs", "depth/scenes"]) == 0
    assert capsys.readouterr().out.split() == ["pe_dense:depth/scenes/dpt_PEspatial_T_scenes.py",
                                               "pe_dense:depth/scenes/linear_PEspatial_T_scenes.py"]


def test_the_version_is_written_once():
    setup = (ROOT / "setup.py").read_text()
    assert "version=re.search" in setup and 'version="' not in setup  # read from pe_dense/__init__.py
    releases = [line for line in (ROOT / "CHANGELOG.md").read_text().splitlines()
                if line.startswith("## ") and line != "## Unreleased"]  # changes not released yet come first
    assert releases[0] == f"## {pe_dense.__version__}"
    assert "Apache License" in (ROOT / "LICENSE").read_text() and "2504.13181" in (ROOT / "CITATION.cff").read_text()


# Words about how the project was made, rather than about the toolkit: what was measured, with which command,
# on which machine, is what the project says.
PROCESS_WORDS = re.compile(r"was lent|no gpu was lent|\blent (gpu|machine)|the issue'?s \d|this issue|"
                           r"\bissue \d+\b|closing note|earlier session|this session", re.IGNORECASE)


def test_readme_docs_and_code_speak_of_the_toolkit_only():
    files = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md")), *PACKAGE_CODE,
             *sorted((ROOT / "tools").glob("*.py")), *sorted((ROOT / "benchmarks").glob("*.py")),
             *sorted((ROOT / "configs").rglob("*.py"))]
    found = [f"{path.relative_to(ROOT)}: {match.group(0)}" for path in files
             for match in PROCESS_WORDS.finditer(path.read_text())]
    assert not found


def test_the_process_check_sees_such_words():
    assert PROCESS_WORDS.search("No GPU was lent for this") and PROCESS_WORDS.search("The issue's 10x")
    assert not PROCESS_WORDS.search("an issue with the config; see the issue tracker")
