"""The package declares every third-party distribution it needs at run time."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: Imported lazily by a dependency on a path medvision uses (not visible to ``ast``):
#: MONAI's ``Orientation`` (the CT chain's RAS step) calls nibabel.
LAZY_RUNTIME_DISTRIBUTIONS = {"nibabel"}


def _declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {re.split(r"[<>=!~\[ ;]", spec, maxsplit=1)[0] for spec in project["dependencies"]}
    return {name.lower().replace("_", "-") for name in names}


def _imported_top_level(folders: list[str]) -> set[str]:
    modules: set[str] = set()
    for folder in folders:
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    modules |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules.add(node.module.split(".")[0])
    return modules - set(sys.stdlib_module_names) - {"medvision", "audit", "validation"}


def test_every_runtime_import_is_a_declared_dependency() -> None:
    distributions = packages_distributions()
    needed = {
        distribution.lower().replace("_", "-")
        for module in _imported_top_level(["medvision", "audit", "validation"])
        for distribution in distributions.get(module, [module])
    }
    needed |= LAZY_RUNTIME_DISTRIBUTIONS
    assert needed - _declared() == set()
