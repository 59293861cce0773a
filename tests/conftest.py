"""Shared fixtures: emitted modules written to files and imported, and runners over them."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from derive_cells.derivation import derive
from derive_cells.emit import emit
from derive_cells.spec import load_cell
from derive_cells.verify.inputs import random_params  # noqa: F401  (re-exported for the tests)
from derive_cells.verify.modules import Runner, import_file

BUILTINS = ["rnn", "rnn_relu", "lstm", "gru", "simplified_gru"]

# Hypothesis: a bounded, deterministic run by default (make test, CI); HYPOTHESIS_PROFILE=fuzz
# (make fuzz) for a long random search that prints how to reproduce what it finds.
_SLOW_OK = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]
settings.register_profile("derive-cells", max_examples=400, derandomize=True, database=None,
                          deadline=None, suppress_health_check=_SLOW_OK)
settings.register_profile("fuzz", max_examples=2000, database=None, deadline=None,
                          print_blob=True, suppress_health_check=_SLOW_OK)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "derive-cells"))

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
    scale = max(float(np.abs(a).max(initial=0)), float(np.abs(b).max(initial=0)))
    if 0 < scale < np.inf:  # norms of values near 1e300 would overflow
        a, b = a / scale, b / scale
    denom = np.linalg.norm(b)
    return float(np.linalg.norm(a - b) / (denom if denom > 0 else 1.0))


TARGETS = ["numpy", "torch"]


@pytest.fixture(scope="session")
def runner(emitted):
    """runner(cell, target) -> Runner over the emitted module."""
    return lambda cell, target="numpy": Runner(emitted(cell, target), target)


def reference_jacobian(cell, mod, x_t, state, params) -> dict:
    """d s_t / d s'_{t-1} by torch.autograd.functional.jacobian over verify/reference.py's step:
    {(s, s'): (B, H, H) array}, for comparison with an emitted module's step_jacobian."""
    import torch

    from derive_cells.verify import reference

    blocks = reference.unpack(cell, {n: torch.tensor(v) for n, v in params.items()})
    out = {(s, sp): [] for s in mod.STATE for sp in mod.STATE}
    for b in range(x_t.shape[0]):
        xb = torch.tensor(x_t[b:b + 1])

        def step(*prev, xb=xb):
            values = reference.step(cell, xb, dict(zip(mod.STATE, prev, strict=True)), blocks)
            return tuple(values[s] for s in mod.STATE)

        full = torch.autograd.functional.jacobian(
            step, tuple(torch.tensor(state[n][b:b + 1]) for n in mod.STATE))
        for i, s in enumerate(mod.STATE):
            for j, sp in enumerate(mod.STATE):
                out[s, sp].append(full[i][j][0, :, 0, :].numpy())
    return {key: np.stack(blocks_b) for key, blocks_b in out.items()}


@pytest.fixture
def fresh_module_cache(tmp_path, monkeypatch):
    """A fresh module cache folder, module table and fallback, as in a new process; the modules
    that other tests loaded are back in place afterwards."""
    from derive_cells import cache

    path = tmp_path / "cache"
    monkeypatch.setenv("DERIVE_CELLS_CACHE", str(path))
    monkeypatch.setattr(cache, "_FALLBACK", [])
    monkeypatch.setattr(cache, "_MODULES", {})
    before = {k: v for k, v in sys.modules.items() if k.startswith("derive_cells_")}
    yield path
    for name in [k for k in sys.modules if k.startswith("derive_cells_")]:
        del sys.modules[name]
    sys.modules.update(before)
