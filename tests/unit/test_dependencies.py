"""pyproject.toml declares every third-party package the code imports directly.

A package that only arrives through another one's requirements (aiohttp came in through
FlagEmbedding -> datasets) disappears when that one drops it. The service's own code (streamer/)
must import only ``[project] dependencies``; tests/, bench/ and tools/ may also use the ``test``
extra (what `make test` and `make bench` install).
"""

from __future__ import annotations

import ast
import functools
import re
import sys
import tomllib
from importlib.metadata import packages_distributions

from tests.conftest import REPO

RUNTIME_ROOTS = ("streamer",)
DEV_ROOTS = ("tests", "bench", "tools")


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> tuple[set[str], set[str]]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]

    def names(requirements: list[str]) -> set[str]:
        return {_normalise(re.match(r"[A-Za-z0-9_.-]+", r).group(0)) for r in requirements}

    return names(project["dependencies"]), names(project["optional-dependencies"]["test"])


def _local_modules() -> set[str]:
    """Top-level names that resolve to files of this repository (scripts put their folders on sys.path)."""
    folders = [REPO, REPO / "bench", REPO / "bench" / "research", REPO / "tools", *(p for p in (REPO / "tools").iterdir() if p.is_dir())]
    return {p.stem for folder in folders for p in folder.iterdir() if p.suffix == ".py" or (p.is_dir() and not p.name.startswith("."))}


def _imports(root: str) -> dict[str, set[str]]:
    """``{top-level module: files importing it}`` for absolute imports under ``root``."""
    found: dict[str, set[str]] = {}
    for path in sorted((REPO / root).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                found.setdefault(module.split(".")[0], set()).add(str(path.relative_to(REPO)))
    return found


def _third_party(roots: tuple[str, ...]) -> dict[str, set[str]]:
    local, stdlib = _local_modules(), set(sys.stdlib_module_names)
    out: dict[str, set[str]] = {}
    for root in roots:
        for module, files in _imports(root).items():
            if module not in stdlib and module not in local and module != "__future__":
                out.setdefault(module, set()).update(files)
    return out


@functools.cache
def _distributions() -> dict[str, list[str]]:
    return packages_distributions()


def _distribution(module: str) -> str | None:
    dists = _distributions().get(module)
    return _normalise(dists[0]) if dists else None


def test_the_service_imports_only_declared_dependencies() -> None:
    runtime, _ = _declared()
    missing = {m: sorted(f) for m, f in _third_party(RUNTIME_ROOTS).items() if _distribution(m) not in runtime}
    assert not missing, f"imported by the service but not in [project] dependencies: {missing}"


def test_tests_benches_and_tools_import_only_declared_packages() -> None:
    runtime, test = _declared()
    missing = {m: sorted(f) for m, f in _third_party(DEV_ROOTS).items() if _distribution(m) not in runtime | test}
    assert not missing, f"imported by tests/bench/tools but declared nowhere in pyproject.toml: {missing}"


def test_the_check_sees_indirect_packages() -> None:
    """aiohttp is imported by the service; it must be found (and resolve to its distribution)."""
    assert "aiohttp" in _third_party(RUNTIME_ROOTS)
    assert _distribution("aiohttp") == "aiohttp" and _distribution("sklearn") == "scikit-learn"
