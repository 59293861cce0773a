"""One verification result per array and check, and how it is made from comparisons."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class Result:
    cell: str
    backend: str
    dtype: str
    check: str
    array: str
    max_rel_error: float
    tolerance: float
    passed: bool
    case: str = ""
    index: tuple[int, ...] = ()
    block: str = ""
    expected: float = 0.0
    actual: float = 0.0
    error: str = ""  # what the module raised, when it raised

    def as_dict(self) -> dict:
        out = asdict(self)
        out["index"] = list(self.index)
        for k in ("max_rel_error", "tolerance", "expected", "actual"):
            v = out[k]
            out[k] = v if np.isfinite(v) else str(v)
        return out


class ModuleRaised(Exception):
    """The module under test raised on a case."""

    def __init__(self, case: str, exc: Exception):
        super().__init__(f"{type(exc).__name__}: {exc}".strip())
        self.case = case


def block_of(blocks_by_param: dict, array: str, found) -> str:
    """The gate block of a packed parameter (d_params[name]) that holds the worst element."""
    if not array.startswith("d_params[") or not found.index:
        return ""
    blocks = blocks_by_param.get(array[len("d_params["):-1], ())
    if len(blocks) < 2:
        return blocks[0] if blocks else ""
    per = max(found.shape[0] // len(blocks), 1)
    return blocks[min(found.index[0] // per, len(blocks) - 1)]


def ratio(error: float, tolerance: float) -> float:
    """How far an error is along its tolerance (0 for an infinite, unresolvable one)."""
    return 0.0 if math.isinf(tolerance) else error / tolerance


def worst_cases(found: dict[str, list]) -> dict[str, tuple]:
    """{array: [(case, Comparison, tolerance)]} -> {array: the case furthest along its
    tolerance}."""
    return {array: max(cases, key=lambda c: ratio(c[1].max_rel_error, c[2]))
            for array, cases in found.items()}
