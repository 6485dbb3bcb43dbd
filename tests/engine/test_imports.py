"""The engine's module graph has no cycles and never reaches realmfs.

Every import counts, also one inside a function: a late import that dodges
a cycle at load time is still a cycle in the design (issue 14).  A back-edge
added later fails here with the cycle spelled out."""

import ast
from pathlib import Path

ENGINE = Path(__file__).resolve().parents[2] / "engine"


def _imports(path: Path) -> set:
    """Engine modules (by name) that `path` imports, anywhere in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:              # from .x import y
                found.add(node.module.split(".")[0])
            elif node.level == 1:                             # from . import x, y
                found.update(alias.name for alias in node.names)
            elif node.module and node.module.split(".")[0] in ("engine", "realmfs"):
                parts = node.module.split(".")
                found.add(parts[1] if parts[0] == "engine" and len(parts) > 1 else parts[0])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "realmfs":
                    found.add("realmfs")
                elif parts[0] == "engine" and len(parts) > 1:
                    found.add(parts[1])
    return found


def engine_graph() -> dict:
    modules = {p.stem: p for p in ENGINE.glob("*.py") if p.stem not in ("__init__", "__main__")}
    return {name: _imports(path) for name, path in modules.items()}


def find_cycle(graph: dict):
    """A list of modules forming a cycle (first == last), or None."""
    state = {}

    def visit(node, stack):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt in graph and nxt not in state:
                cycle = visit(nxt, stack)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node, [])
            if cycle:
                return cycle
    return None


def test_engine_imports_have_no_cycle():
    cycle = find_cycle(engine_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_engine_never_imports_realmfs():
    graph = engine_graph()
    for extra in ("__init__", "__main__"):
        graph[extra] = _imports(ENGINE / f"{extra}.py")
    assert [name for name, deps in sorted(graph.items()) if "realmfs" in deps] == []


def test_the_cycle_finder_finds_a_back_edge():
    graph = engine_graph()
    assert "txn" in graph["db"]
    graph["txn"] = graph["txn"] | {"db"}           # txn reaching back into db
    cycle = find_cycle(graph)
    assert cycle and cycle[0] == cycle[-1] and {"db", "txn"} <= set(cycle)
