"""Shared fixtures: emitted modules written to files and imported, and runners over them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from derive.derivation import derive
from derive.emit import emit
from derive.spec import load_cell
from verify.inputs import random_params  # noqa: F401  (re-exported for the tests)
from verify.modules import Runner, import_file

BUILTINS = ["rnn", "rnn_relu", "lstm", "gru", "simplified_gru"]
_MODULES: dict[tuple[str, str], object] = {}


@pytest.fixture(scope="session")
def emitted(tmp_path_factory):
    """emitted(cell, target) -> the emitted module, written to a file and imported."""
    root = tmp_path_factory.mktemp("emitted")

    def get(cell: str, target: str = "numpy"):
        key = (cell, target)
        if key not in _MODULES:
            source = emit(derive(load_cell(cell)), target)
            stem = f"{Path(cell).stem}_{target}_bptt"
            path = root / f"{stem}.py"
            path.write_text(source)
            _MODULES[key] = import_file(path, stem)
        return _MODULES[key]

    return get


def rel_error(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    denom = np.linalg.norm(b)
    return float(np.linalg.norm(a - b) / (denom if denom > 0 else 1.0))


TARGETS = ["numpy", "torch"]


@pytest.fixture(scope="session")
def runner(emitted):
    """runner(cell, target) -> Runner over the emitted module."""
    return lambda cell, target="numpy": Runner(emitted(cell, target), target)
