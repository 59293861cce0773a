"""Emission targets: the few parts of an emitted module that depend on the array library.

Everything else (step bodies, the time loops, parameter handling) is shared text: it calls the
helpers of derive/runtime_numpy.py or derive/runtime_torch.py (and, for Torch, the
autograd.Function of derive/runtime_torch_api.py), real modules whose source is inlined, so the
NumPy and Torch modules differ only there and in their elementwise functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# The line after which a runtime file's source is copied into emitted modules.
MARKER = "# ---- inlined into every emitted module from here on (derive_cells.targets) ----\n"


def inlined(file: str) -> str:
    """The part of a runtime module (real, linted Python beside this file) that every emitted
    module of a target carries: what follows its marker line."""
    text = (Path(__file__).parent / file).read_text(encoding="utf-8")
    _, marker, body = text.partition(MARKER)
    if not marker:
        raise RuntimeError(f"{file}: no marker line")
    return "\n" + body


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
    helpers=inlined("runtime_numpy.py"),
)

TORCH = Target(
    name="torch",
    title="PyTorch",
    imports="import torch",
    core="_",
    fused_derivatives=True,
    helpers=inlined("runtime_torch.py"),
    api=inlined("runtime_torch_api.py"),
)

TARGETS = {t.name: t for t in (NUMPY, TORCH)}
