"""The direction of imports among the project's packages, read from the source with ``ast``.

- The library core (every module under ``streamlearn/`` but the faces on top,
  :data:`TOP`) never imports ``connectors`` or ``flink_jobs``: ``connectors``
  builds on the library, ``flink_jobs/`` are entry files, and the command line
  (the demo among its commands) and the publishing SDK's public path sit on top
  of both.
- ``connectors`` never imports what sits on top of it (the faces, ``flink_jobs``).
- No import circle among the project's modules.

Every import counts, at module level and inside functions alike (a function-level
import runs as soon as the function does, and draws the same arrow); only those
under ``if TYPE_CHECKING:`` do not, as they never run.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("streamlearn", "connectors", "flink_jobs")

#: What sits on top of the library and of ``connectors`` and may import both.
TOP = ("streamlearn.cli", "streamlearn.publish")

#: Edges a circle still runs through until a caller outside this change moves:
#: ``streamlearn.state.learner_from_state`` forwards to the learners' own for
#: ``streamlearn/serving/learner_predictor.py``. Each entry must still be in the
#: code (the test says when one can go), and none may be added.
PENDING: dict[tuple[str, str], str] = {}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules(root: Path) -> dict[str, Path]:
    """Every module of the project's packages, by dotted name."""
    return {
        module_name(path, root): path
        for package in PACKAGES
        for path in sorted((root / package).rglob("*.py"))
    }


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement, wherever it stands, but those under ``if TYPE_CHECKING:``."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def is_module(root: Path, dotted: str) -> bool:
    """Whether ``dotted`` names a module (Python, or a C extension: its source or its
    build) or a package under ``root``."""
    path = root.joinpath(*dotted.split("."))
    return (
        path.with_suffix(".py").is_file()
        or path.with_suffix(".c").is_file()
        or (path / "__init__.py").is_file()
        or any(path.parent.glob(f"{path.name}.*.so"))
    )


def imported_names(root: Path, path: Path, name: str) -> set[str]:
    """The dotted names ``path`` (module ``name``) imports: each ``import a.b``; for
    ``from a import b``, ``a.b`` when that is a module, else ``a`` (``b`` a name in it)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in _imports(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
            continue
        base = node.module or ""
        if node.level:
            anchor = package.split(".")
            anchor = anchor[: len(anchor) - (node.level - 1)]
            base = ".".join([*anchor, base] if base else anchor)
        for alias in node.names:
            sub = f"{base}.{alias.name}"
            found.add(sub if is_module(root, sub) else base)
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the project modules it imports (the deepest module each name names;
    a compiled extension is not one of the project's Python modules, and draws none)."""
    modules = project_modules(root)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for imported in imported_names(root, path, name):
            if is_module(root, imported) and imported not in modules:
                continue  # a compiled extension
            parts = imported.split(".")
            while parts and ".".join(parts) not in modules:
                parts.pop()
            if parts and ".".join(parts) != name:
                targets.add(".".join(parts))
        graph[name] = targets
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    """``module -> import`` for each arrow that runs the wrong way."""
    wrong = []
    for name, targets in sorted(graph.items()):
        if _within(name, ("streamlearn",)) and not _within(name, TOP):
            forbidden: tuple[str, ...] = ("connectors", "flink_jobs", *TOP)
        elif _within(name, ("connectors",)):
            forbidden = ("flink_jobs", *TOP)
        else:
            continue
        wrong += [f"{name} -> {t}" for t in sorted(targets) if _within(t, forbidden)]
    return wrong


def without_pending(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    return {v: {w for w in ws if (v, w) not in PENDING} for v, ws in graph.items()}


def test_the_graph_sees_module_and_function_level_imports() -> None:
    graph = import_graph(ROOT)
    assert "streamlearn.state" in graph["streamlearn.learners"]  # module level
    assert "connectors.kafka_broker" in graph["streamlearn.cli.kafka"]  # inside run()


def test_the_core_never_imports_connectors_or_flink_jobs() -> None:
    assert layer_violations(import_graph(ROOT)) == []


def test_no_import_circle() -> None:
    graph = import_graph(ROOT)
    assert circles(without_pending(graph)) == []
    gone = [f"{v} -> {w}" for v, w in PENDING if w not in graph.get(v, set())]
    assert gone == [], f"no longer imported: drop {gone} from PENDING"


def test_the_checks_catch_a_wrong_arrow(tmp_path: Path) -> None:
    """A core module importing connectors inside a function, and a circle through a
    function-level import, are both found; a TYPE_CHECKING import is not an arrow."""
    for package in PACKAGES:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "streamlearn" / "state.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from streamlearn.store import Store\n"
        "def build():\n    from streamlearn.learners import make\n    return make\n"
    )
    (tmp_path / "streamlearn" / "learners.py").write_text("from .state import build\n")
    (tmp_path / "streamlearn" / "store.py").write_text(
        "from streamlearn import state\n"
        "def f():\n    import connectors.kafka_io\n"
    )
    (tmp_path / "connectors" / "kafka_io.py").write_text("import streamlearn.errors\n")
    graph = import_graph(tmp_path)
    assert circles(graph) == [["streamlearn.learners", "streamlearn.state"]]
    assert layer_violations(graph) == ["streamlearn.store -> connectors.kafka_io"]
