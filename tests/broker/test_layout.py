"""The shape of broker/: no import circle, imports flow one way, and no module grows past ~600 lines.

Imports are read from the source (`ast`), those under `if TYPE_CHECKING:` included: a circle that only the
type checker sees is still two modules that each need the other. A module importing its own package's
`__init__` (which Python does implicitly) is not a circle.
"""

from __future__ import annotations

import ast
from pathlib import Path

BROKER = Path(__file__).resolve().parents[2] / "broker"
MAX_LINES = 615  # "about 600": the engine's connection is the largest (~600 since inbound.py took the PUBLISH rules)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(BROKER.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(path): path for path in sorted(BROKER.rglob("*.py"))}


def _imports(path: Path, name: str, known: dict[str, Path]) -> set[str]:
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    pending: list[ast.AST] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                child = f"{base}.{alias.name}"
                found.add(child if child in known else base)
        elif isinstance(node, (ast.If, ast.Try, ast.With, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            for field in ("body", "orelse", "finalbody", "handlers"):
                pending.extend(getattr(node, field, []))
        elif isinstance(node, ast.ExceptHandler):
            pending.extend(node.body)
    return found


def _graph() -> dict[str, set[str]]:
    known = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        targets = {t for t in _imports(path, name, known) if t in known and t != name}
        # A submodule importing an ancestor package's __init__ is Python's own order, not a circle.
        graph[name] = {t for t in targets if not name.startswith(t + ".")}
    return graph


def _find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    """A circle of imports, if there is one (iterative depth-first search: no recursion)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    for root in graph:
        if state.get(root):
            continue
        path = [root]
        stacks = [iter(sorted(graph[root]))]
        state[root] = 1
        while stacks:
            step = next(stacks[-1], None)
            if step is None:
                state[path.pop()] = 2
                stacks.pop()
            elif state.get(step) == 1:
                return path[path.index(step):] + [step]
            elif not state.get(step):
                state[step] = 1
                path.append(step)
                stacks.append(iter(sorted(graph[step])))
    return None


def test_broker_has_no_import_circle() -> None:
    assert _find_circle(_graph()) is None, " -> ".join(_find_circle(_graph()) or [])


def test_the_circle_finder_finds_a_circle() -> None:
    assert _find_circle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_circle({"a": {"b"}, "b": set()}) is None


def test_broker_imports_nothing_above_it() -> None:
    """Imports flow one way: broker/ never imports storage/, control/ or bridge/."""
    known = _modules()
    for name, path in known.items():
        above = {t for t in _imports(path, name, known) if t.split(".")[0] in ("storage", "control", "bridge")}
        assert not above, f"{name} imports {sorted(above)}"


def test_the_router_knows_no_connection_class() -> None:
    """Routing hands deliveries to `broker.receivers.DeliveryReceiver`, never to a connection class."""
    graph = _graph()
    for name in ("broker.core", "broker.routing", "broker.qos", "broker.session"):
        assert not {t for t in graph[name] if t.startswith(("broker.connection", "broker.engine"))}, name


def test_no_module_in_broker_is_over_about_600_lines() -> None:
    sizes = {name: len(path.read_text().splitlines()) for name, path in _modules().items()}
    assert not {name: size for name, size in sizes.items() if size > MAX_LINES}
