"""Emission targets: the few parts of an emitted module that depend on the array library.

Everything else (step bodies, the time loops, parameter handling) is shared text: it calls the
helpers of derive/runtime/numpy_arrays.py or torch_arrays.py (and, for Torch, the
autograd.Function of derive/runtime/torch_function.py), real modules whose source is inlined, so
the NumPy and Torch modules differ only there and in their elementwise functions.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

# The line after which a runtime file's source is copied into emitted modules.
MARKER = "# ---- inlined into every emitted module from here on (derive_cells.emit.targets) ----\n"


def inlined(file: str) -> str:
    """The part of a runtime module (real, linted Python in derive/runtime/) that every emitted
    module of a target carries: what follows its marker line."""
    text = (Path(__file__).parent.parent / "runtime" / file).read_text(encoding="utf-8")
    _, marker, body = text.partition(MARKER)
    if not marker:
        raise RuntimeError(f"{file}: no marker line")
    return "\n" + body


def _chunks(helpers: str) -> list[tuple[str, str]]:
    """The top-level definitions of a runtime's inlined source: (name, source text)."""
    lines = helpers.split("\n")
    out = []
    for node in ast.parse(helpers).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            name = node.name
        elif isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
        else:
            continue
        out.append((name, "\n".join(lines[node.lineno - 1: node.end_lineno])))
    return out


def drop_unused_helpers(text: str, helpers: str) -> str:
    """The module text without the runtime helpers nothing else in it calls (repeated until
    every helper left is called by the module or by another helper left)."""
    chunks = _chunks(helpers)
    while True:
        unused = [(name, chunk) for name, chunk in chunks if chunk in text and not re.search(
            rf"(?<![.\w]){re.escape(name)}\b", text.replace(chunk, ""))]
        if not unused:
            return text
        for _, chunk in unused:
            text = re.sub(rf"\n*{re.escape(chunk)}\n", "\n", text, count=1)
        chunks = [c for c in chunks if c not in unused]


# Target-independent parts of every module: input checks, and the one-step API.
CHECKS = inlined("checks.py")
STEP_API = inlined("steps.py")


@dataclass(frozen=True)
class Target:
    name: str
    title: str
    imports: str
    helpers: str  # array helpers, in the module's own library
    core: str = ""  # prefix of the sequence functions the public API wraps ("" = none)
    fused_derivatives: bool = False  # print sigmoid/tanh derivatives with _dsigmoid/_dtanh
    api: str = ""  # the public forward/backward, when they wrap the core ones


NUMPY = Target(
    name="numpy",
    title="NumPy",
    imports="import numpy as np",
    helpers=inlined("numpy_arrays.py"),
)

TORCH = Target(
    name="torch",
    title="PyTorch",
    imports="import torch",
    core="_",
    fused_derivatives=True,
    helpers=inlined("torch_arrays.py"),
    api=inlined("torch_function.py"),
)

TARGETS = {t.name: t for t in (NUMPY, TORCH)}
