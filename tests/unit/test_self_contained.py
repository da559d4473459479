"""The tests need nothing outside the repository: `make test` passes on a bare `git clone`.

Every file under tests/ is scanned for references to data beside the checkout (``../shared/data``,
the tutorial CSV, host paths such as /work or /home) and every Python file for paths that climb
out of the repository (``Path(__file__).parents[k]`` or ``REPO.parent`` above the root, ``..``
segments, the user's home). Test data lives in the repository: ``examples/uci-news-sample.tsv``
(through tests/sample_data.py) or files a test writes itself.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.conftest import REPO

TESTS = REPO / "tests"
THIS = Path(__file__).resolve()
# Written so that this file does not match itself.
FORBIDDEN_TEXT = [
    (re.compile(r"shared[\"']?\s*[/,]\s*[\"']?data"), "the shared data folder beside the checkout"),
    (re.compile(r"news-headlines-2024"), "the tutorial CSV's folder (no clear licence; not in the repository)"),
    (re.compile(r"newsCorpora_noURL"), "the full UCI dump (not in the repository)"),
    (re.compile(r"[\"'](?:/work|/home|/root|/mnt|/media|/data|/srv|/Users)(?:/|[\"'])|[\"']~/"), "a host path"),
    (re.compile(r"[\"'][^\"'\n]*\.\./"), "a relative path out of a folder"),
]
PATH_CALLS = {"Path", "PurePath", "PosixPath"}


def _py_files() -> list[Path]:
    return sorted(p for p in TESTS.rglob("*.py") if "__pycache__" not in p.parts)


def _text_files() -> list[Path]:
    return sorted(p for p in TESTS.rglob("*") if p.is_file() and "__pycache__" not in p.parts and p != THIS)


class _Heights:
    """Static height above the repository root of path expressions in one module.

    ``Path(__file__)`` of tests/unit/x.py is at height 3; ``.parent`` and ``.parents[k]`` go down
    1 and k+1; names keep what they were assigned (or what the ``tests`` module they come from
    assigned). A height below 0 is a path outside the repository.
    """

    def __init__(self, path: Path, imported: dict[str, dict[str, int]]) -> None:
        self.file_height = len(path.relative_to(REPO).parts)
        self.env: dict[str, int] = {}
        self.imported = imported

    def height(self, node: ast.AST) -> int | None:
        match node:
            case ast.Call(func=ast.Name(id=name) | ast.Attribute(attr=name), args=[ast.Name(id="__file__")]) if name in PATH_CALLS:
                return self.file_height
            case ast.Call(func=ast.Attribute(value=inner, attr="resolve" | "absolute" | "expanduser")):
                return self.height(inner)
            case ast.Attribute(value=inner, attr="parent"):
                h = self.height(inner)
                return None if h is None else h - 1
            case ast.Subscript(value=ast.Attribute(value=inner, attr="parents"), slice=ast.Constant(value=int(k))):
                h = self.height(inner)
                return None if h is None else h - k - 1
            case ast.BinOp(left=inner, op=ast.Div(), right=right):
                h = self.height(inner)
                if h is None:
                    return None
                return h - 1 if isinstance(right, ast.Constant) and right.value == ".." else h + 1
            case ast.Name(id=name):
                return self.env.get(name)
        return None

    def scan(self, tree: ast.Module) -> list[str]:
        problems = []
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tests"):
                for alias in node.names:
                    if alias.name in self.imported.get(node.module, {}):
                        self.env[alias.asname or alias.name] = self.imported[node.module][alias.name]
            elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                h = self.height(node.value)
                if h is not None:
                    self.env[node.targets[0].id] = h
        for node in ast.walk(tree):
            h = self.height(node)
            if h is not None and h < 0:
                problems.append(f"line {node.lineno}: {ast.unparse(node)} is {-h} folder(s) above the repository")
            if _is_dotdot_segment(node):
                problems.append(f"line {node.lineno}: a '..' path segment")
            if isinstance(node, ast.Attribute) and node.attr in ("home", "expanduser") and not isinstance(node.ctx, ast.Store):
                problems.append(f"line {node.lineno}: the user's home folder ({ast.unparse(node)})")
        return problems


def _is_dotdot_segment(node: ast.AST) -> bool:
    """``x / ".."``, ``Path("..")``, ``os.path.join(x, "..")`` and the like."""
    def dotdot(arg: ast.AST) -> bool:
        return isinstance(arg, ast.Constant) and isinstance(arg.value, str) and ".." in Path(arg.value).parts
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div):
        return dotdot(node.right) or dotdot(node.left)
    if isinstance(node, ast.Call):
        name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        return name in (*PATH_CALLS, "join", "joinpath") and any(dotdot(a) for a in node.args)
    return False


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(REPO).with_suffix("").parts)


def path_problems(sources: dict[Path, str]) -> dict[Path, list[str]]:
    """``{file: problems}`` for Python sources keyed by their path in the repository."""
    trees = {path: ast.parse(text, str(path)) for path, text in sources.items()}
    heights: dict[str, dict[str, int]] = {}
    for path, tree in trees.items():  # names other test modules may import (REPO and the like)
        scanner = _Heights(path, {})
        scanner.scan(tree)
        heights[_module_name(path)] = scanner.env
    found = {}
    for path, tree in trees.items():
        problems = _Heights(path, heights).scan(tree)
        if problems:
            found[path] = problems
    return found


def text_problems(text: str) -> list[str]:
    out = []
    for number, line in enumerate(text.splitlines(), start=1):
        out += [f"line {number}: {what}: {line.strip()}" for pattern, what in FORBIDDEN_TEXT if pattern.search(line)]
    return out


def test_no_test_file_refers_to_data_outside_the_repository() -> None:
    found = {}
    for path in _text_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        if problems := text_problems(text):
            found[str(path.relative_to(REPO))] = problems
    assert not found, f"test files refer to data outside the repository: {found}"


def test_no_test_path_climbs_out_of_the_repository() -> None:
    found = path_problems({p: p.read_text(encoding="utf-8") for p in _py_files()})
    assert not found, {str(p.relative_to(REPO)): v for p, v in found.items()}


def test_the_repository_root_is_where_the_tests_think() -> None:
    assert (REPO / "pyproject.toml").is_file() and (REPO / "examples" / "uci-news-sample.tsv").is_file()


@pytest.mark.parametrize(
    "source",
    [
        'from pathlib import Path\nREPO = Path(__file__).resolve().parents[2]\nDATA = REPO.parent / "x"\n',
        'from pathlib import Path\nX = Path(__file__).resolve().parents[3] / "data"\n',
        'from tests.conftest import REPO\nDATA = REPO.parent / "shared"\n',
        'from tests.conftest import REPO\nDATA = REPO / ".." / "shared"\n',
        'import pathlib\nX = pathlib.Path(__file__).parent.parent.parent.parent\n',
        'from pathlib import Path\nX = Path.home() / "data"\n',
        'import os\nX = os.path.join(os.path.dirname(__file__), "../../../shared")\n',
    ],
)
def test_the_path_check_catches_climbing_out(source: str) -> None:
    """The checker itself: each of these escapes the repository from tests/integration/x.py."""
    conftest = TESTS / "conftest.py"
    sources = {conftest: conftest.read_text(encoding="utf-8"), TESTS / "integration" / "x.py": source}
    assert TESTS / "integration" / "x.py" in path_problems(sources)


def test_the_path_check_accepts_the_repository_root() -> None:
    source = 'from pathlib import Path\nREPO = Path(__file__).resolve().parents[2]\nX = REPO / "examples"\n'
    assert not path_problems({TESTS / "integration" / "x.py": source})


@pytest.mark.parametrize(
    "line",
    [
        'DATA = REPO.parent / "shared" / "data"',
        'p = "../shared/data/uci"',
        'TUTORIAL = DATA / "news-headlines-2024" / "news_data_dedup.csv"',
        'with open("/home/me/news.tsv") as f:',
        'UCI = "/work/shared/x.tsv"',
    ],
)
def test_the_text_check_catches_outside_data(line: str) -> None:
    assert text_problems(line)
