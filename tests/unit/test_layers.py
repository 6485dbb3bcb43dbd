"""realmfs's layers go one way: every import of every module obeys its subpackage's rule.

The rules are the ones each subpackage's ``__init__`` docstring states (docs/architecture.md
draws them). Every import counts, also one inside a function: a late import that dodges a
cycle at load time is still a back-edge in the design. A module outside the table fails too,
so a new module has to be given a layer.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "realmfs"

BASE = {"base"}                 # errors, log, durable: importable from every layer
ALLOWED = {                     # layer -> the layers its modules may import
    "base": BASE,
    "format": BASE | {"format"},
    "keys": BASE | {"format", "keys"},
    "storage": BASE | {"format", "keys", "storage"},
    "fs": BASE | {"format", "keys", "storage", "fs"},
    "tools": BASE | {"format", "keys", "storage", "tools"},
    "api": BASE | {"format", "keys", "storage", "fs"},
    "cli": BASE | {"format", "keys", "storage", "fs", "tools", "cli", "package"},
    "package": {"api"},         # realmfs/__init__: ``realmfs.mounted`` on first use
    "main": {"cli"},
}
TOP_LEVEL = {"errors": "base", "log": "base", "durable": "base", "api": "api",
             "__init__": "package", "__main__": "main"}
FUSE_BINDINGS = {"fuse", "mfusepy"}
NO_OS_IN_FORMAT_BUT = {"realmfs.format.detect"}     # reads the first page of a path it is given


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    if len(parts) == 1:
        return TOP_LEVEL[parts[0]]
    assert (PACKAGE / parts[0] / "__init__.py").exists(), path
    return parts[0]


def realmfs_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def is_module(name: str) -> bool:
    path = REPO.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def imports(path: Path) -> tuple[set[str], set[str]]:
    """(realmfs modules, other top-level names) that ``path`` imports anywhere in the file."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    ours, others = set(), set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join(up + ([node.module] if node.module else []))
            names = [f"{base}.{a.name}" if is_module(f"{base}.{a.name}") else base for a in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] == "realmfs":
                ours.add(name)
            else:
                others.add(name.split(".")[0])
    return ours, others


def target_layer(name: str) -> str | None:
    """The layer of an imported realmfs module; None for the package itself (always loaded first)."""
    if name == "realmfs":
        return None
    path = REPO.joinpath(*name.split("."))
    return layer_of(path.with_suffix(".py") if path.with_suffix(".py").exists() else path / "__init__.py")


def back_edges() -> list[str]:
    found = []
    for path in realmfs_files():
        layer = layer_of(path)
        ours, others = imports(path)
        for name in sorted(ours):
            target = target_layer(name)
            if target is not None and target not in ALLOWED[layer]:
                found.append(f"{module_name(path)} ({layer}) imports {name} ({target})")
        if others & FUSE_BINDINGS and module_name(path) != "realmfs.fs.fusebinding":
            found.append(f"{module_name(path)} ({layer}) imports a FUSE binding")
        if layer == "format" and "os" in others and module_name(path) not in NO_OS_IN_FORMAT_BUT:
            found.append(f"{module_name(path)} (format) imports os: format is pure")
    return found


def find_cycle(graph: dict) -> list | None:
    state: dict = {}

    def visit(node, trail):
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return trail[trail.index(nxt):] + [nxt] if nxt in trail else [node, nxt]
            if nxt not in state:
                cycle = visit(nxt, trail + [nxt])
                if cycle:
                    return cycle
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state:
            cycle = visit(start, [start])
            if cycle:
                return cycle
    return None


def test_every_import_goes_down_the_layers():
    assert back_edges() == []


def test_no_cycle_between_subpackages_nor_modules():
    modules, packages = {}, {}
    for path in realmfs_files():
        ours = {n for n in imports(path)[0] if n != "realmfs"}
        modules[module_name(path)] = ours
        packages.setdefault(layer_of(path), set()).update(
            t for t in map(target_layer, ours) if t and t != layer_of(path))
    assert find_cycle(packages) is None
    assert find_cycle(modules) is None


def test_engine_never_imports_realmfs():
    for path in sorted((REPO / "engine").rglob("*.py")):
        assert "realmfs" not in imports(path)[1] and not imports(path)[0], path


@pytest.mark.parametrize("edge", [
    ("format/layout.py", "from ..storage import pagefile\n"),
    ("storage/pagefile.py", "from ..fs.backingdir import open_quietly\n"),
    ("tools/verify.py", "from ..fs import mounttable\n"),
    ("fs/fuseops.py", "def late():\n    from ..tools import offline\n"),
    ("keys/config.py", "import realmfs.storage.transcode\n"),
    ("fs/daemon.py", "def late():\n    import mfusepy\n"),
])
def test_a_back_edge_fails(tmp_path, monkeypatch, edge):
    """The check can fail: a copy of the package with one back-edge added is refused."""
    copy = tmp_path / "realmfs"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    relative, line = edge
    with open(copy / relative, "a") as f:
        f.write("\n" + line)
    monkeypatch.setitem(globals(), "REPO", tmp_path)
    monkeypatch.setitem(globals(), "PACKAGE", copy)
    assert len(back_edges()) == 1
