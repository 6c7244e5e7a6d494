"""Layers import only downward: every import in the package (inside functions too) against the layer order.

    base (errors, paths, interrupts, cluster.slurm, cluster.schema)
    → maths → data → training → tracking → config/compose → lifecycle
    → sweeping and the cluster launcher → app → pipeline → cli

The maths and data know nothing of training; training knows nothing of tracking or the
cluster; the run lifecycle sits above them; sweeps above it. A module may import its own
layer and the layers below it, never above.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

LAYERS: list[tuple[str, ...]] = [
    ("overfit", "overfit.errors", "overfit.paths", "overfit.interrupts", "overfit.cluster.slurm",
     "overfit.cluster.schema", "overfit.cluster"),
    ("overfit.maths",),
    ("overfit.data",),
    ("overfit.training",),
    ("overfit.tracking",),
    ("overfit.config", "overfit.compose"),
    ("overfit.lifecycle",),
    ("overfit.sweeping", "overfit.cluster.launcher", "overfit.cluster.detach", "overfit.cluster.control"),
    ("overfit.app",),
    ("overfit.pipeline",),
    ("overfit.cli", "overfit.__main__", "hydra_plugins"),
]


def layer(module: str) -> int:
    """The layer of a module: its longest prefix in LAYERS."""
    best, rank = -1, -1
    for i, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, rank = len(prefix), i
    assert rank >= 0, f"{module} is in no layer: add it to LAYERS"
    return rank


def modules() -> dict[str, Path]:
    found = {}
    for package in ("overfit", "hydra_plugins"):
        for file in (SRC / package).rglob("*.py"):
            name = ".".join(file.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")
            found[name] = file
    return found


def imports(file: Path, name: str) -> set[str]:
    """The project modules a file imports, anywhere in it."""
    base = name if file.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(file.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:
                parts = base.split(".")
                mod = ".".join(parts[: len(parts) - node.level + 1] + ([mod] if mod else []))
            out |= {mod} | {f"{mod}.{a.name}" for a in node.names}
    return {m for m in out if m.split(".")[0] in ("overfit", "hydra_plugins")}


def test_no_module_imports_a_layer_above_its_own() -> None:
    found = modules()
    upward = []
    for name, file in found.items():
        for target in imports(file, name):
            while target and target not in found:
                target = target.rpartition(".")[0]
            if target and layer(target) > layer(name):
                upward.append(f"{name} (layer {layer(name)}) imports {target} (layer {layer(target)})")
    assert not upward, "\n".join(upward)


def test_the_package_has_no_import_cycle() -> None:
    """Within a layer too: a depth-first walk that meets a module still on its path has found a cycle."""
    found = modules()
    graph = {}
    for name, file in found.items():
        targets = set()
        for target in imports(file, name):
            while target and target not in found:
                target = target.rpartition(".")[0]
            if target and target not in (name, "overfit"):
                targets.add(target)
        graph[name] = targets
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join([*path[path.index(nxt):], node, nxt]) if nxt in path else f"{node} -> {nxt}")
            elif nxt not in state:
                visit(nxt, [*path, node])
        state[node] = 2

    sys.setrecursionlimit(10_000)
    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    assert not cycles, "\n".join(cycles)
