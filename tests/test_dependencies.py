"""Every module the package imports is a declared dependency in pyproject.toml, and the other way round."""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = Path(__file__).resolve().parents[1]

# Declared but never imported by name: what the package needs them for.
USED_WITHOUT_IMPORT = {
    "tensorboard": "Lightning's TensorBoardLogger writes the event files with it",
}


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def imported_top_level_modules(package: Path) -> dict[str, str]:
    """Top-level module name -> a file importing it, for every absolute import in the package
    (at module level, inside functions and under TYPE_CHECKING alike)."""
    found = {}
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], str(path.relative_to(ROOT)))
    return found


def declared_dependencies() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {normalized(re.split(r"[\s<>=!~;\[]", spec, maxsplit=1)[0]) for spec in project["dependencies"]}


def third_party_imports() -> dict[str, str]:
    """Distribution name -> a file that imports it, for every import outside the standard library."""
    distributions = packages_distributions()
    result = {}
    for module, where in imported_top_level_modules(ROOT / "seq2seq").items():
        if module in sys.stdlib_module_names or module in ("seq2seq", "__future__"):
            continue
        assert module in distributions, f"{where} imports {module}, which no installed distribution provides"
        for distribution in distributions[module]:
            result[normalized(distribution)] = where
    return result


def test_every_imported_package_is_declared():
    declared = declared_dependencies()
    undeclared = {name: where for name, where in third_party_imports().items() if name not in declared}
    assert not undeclared, f"imported but not in [project] dependencies: {undeclared}"


def test_every_declared_dependency_is_used():
    imported = third_party_imports()
    unused = declared_dependencies() - set(imported) - set(USED_WITHOUT_IMPORT)
    assert not unused, f"declared in pyproject.toml but never imported: {sorted(unused)}"


def test_the_scan_sees_imports_inside_functions():
    # tqdm is only imported inside seq2seq-translate's file mode; the scan must still find it.
    modules = imported_top_level_modules(ROOT / "seq2seq")
    assert modules["tqdm"] == "seq2seq/cli/translate.py"
    assert {"torch", "hydra", "omegaconf", "sentencepiece", "sacrebleu", "lightning"} <= set(modules)
