"""The house keeps its plan: the import graph of derive_cells, read from the source (every
import, at module level or inside a function), has no cycle, and no stage imports a later one
(derive -> verify -> train -> reports; the command line and the Python API sit on top)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).parent.parent
FOLDERS = {"derive_cells": ROOT / "derive", "derive_cells.verify": ROOT / "verify",
           "derive_cells.train": ROOT / "train", "derive_cells.reports": ROOT / "reports"}
STAGES = ["derive", "verify", "train", "reports", "facade"]
FACADE = {"derive_cells", "derive_cells.api", "derive_cells.cli"}


def modules() -> dict[str, Path]:
    """Every module of the installed package, by dotted name, from its folder mapping."""
    out = {}
    for package, folder in FOLDERS.items():
        for path in folder.rglob("*.py"):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            name = ".".join([package, *parts])
            if name.startswith("derive_cells.") and name.split(".")[1] in ("verify", "train",
                                                                           "reports"):
                if package == "derive_cells":
                    continue  # a stage folder seen from derive/: not part of derive/
            out[name] = path
    return out


def imports(path: Path, name: str, known: set[str]) -> set[str]:
    """The package's modules that a file imports ("from P import m" names module P.m where
    that is a module, else P)."""
    out = set()
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name in known)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = name.split(".")[: len(name.split(".")) - node.level + is_package]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if sub in known:
                    out.add(sub)
                elif base in known:
                    out.add(base)
    out.discard(name)
    return out


def stage(module: str) -> str:
    if module in FACADE:
        return "facade"
    part = module.split(".")[1] if "." in module else ""
    return part if part in ("verify", "train", "reports") else "derive"


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports(path, name, set(found)) for name, path in found.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_the_graph_is_read_from_every_module():
    edges = graph()
    assert {"derive_cells.spec", "derive_cells.emit.plan", "derive_cells.runtime.checks",
            "derive_cells.verify.checks", "derive_cells.verify.decay.measurement",
            "derive_cells.train.run", "derive_cells.reports.build"} <= set(edges)
    assert "derive_cells.derivation" in edges["derive_cells.emit.plan"]
    assert "derive_cells.emit.module" in edges["derive_cells.emit"]


def test_no_import_cycles():
    assert cycles(graph()) == []


def test_no_stage_imports_a_later_one():
    climbing = [f"{a} -> {b}" for a, targets in sorted(graph().items()) for b in sorted(targets)
                if STAGES.index(stage(b)) > STAGES.index(stage(a))]
    assert climbing == []


def test_the_checks_find_what_they_look_for():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert stage("derive_cells.train.cli") == "train"
    assert stage("derive_cells.cli") == "facade"
    assert stage("derive_cells.emit.plan") == "derive"
    assert STAGES.index(stage("derive_cells.reports.html")) > STAGES.index(
        stage("derive_cells.verify.cli"))


def test_folders_hold_about_a_dozen_modules():
    for folder in [ROOT / "derive", ROOT / "derive" / "emit", ROOT / "derive" / "runtime",
                   ROOT / "verify", ROOT / "verify" / "decay", ROOT / "train", ROOT / "reports"]:
        count = len([p for p in folder.glob("*.py") if p.name != "__init__.py"])
        assert count <= 13, (folder, count)
