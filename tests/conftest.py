"""Shared fixtures: emitted modules written to files and imported, random parameters."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from derive.derivation import derive
from derive.emit import emit
from derive.spec import load_cell

BUILTINS = ["rnn", "rnn_relu", "lstm", "gru", "simplified_gru"]
_MODULES: dict[tuple[str, str], object] = {}


def import_file(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


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


def random_params(module, I: int, H: int, rng: np.random.Generator, dtype=np.float64,
                  scale: float = 1.0) -> dict:
    """Parameters with distinct random values per gate block (offset and spread per block)."""
    params = {}
    for name, spec in module.PARAMS.items():
        shape = module._dims(spec, I, H)
        blocks = module.BLOCKS[name]
        parts = []
        for k in range(len(blocks)):
            block = rng.uniform(-1, 1, (shape[0] // len(blocks), *shape[1:]))
            parts.append(block * (0.3 + 0.2 * k) / np.sqrt(H) + 0.05 * (k - 1))
        params[name] = (np.concatenate(parts, axis=0) * scale).astype(dtype)
    return params


def rel_error(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    denom = np.linalg.norm(b)
    return float(np.linalg.norm(a - b) / (denom if denom > 0 else 1.0))


TARGETS = ["numpy", "torch"]


def _to(obj, target):
    if isinstance(obj, dict):
        return {k: _to(v, target) for k, v in obj.items()}
    if isinstance(obj, np.ndarray) and target == "torch":
        import torch

        return torch.from_numpy(obj.copy())
    return obj


def _np(obj):
    if isinstance(obj, dict):
        return {k: _np(v) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return tuple(_np(v) for v in obj)
    if hasattr(obj, "detach"):
        return obj.detach().cpu().numpy()
    return obj


class Runner:
    """Calls an emitted module of either target with NumPy arrays in and NumPy arrays out."""

    def __init__(self, module, target: str):
        self.module, self.target = module, target
        self.STATE, self.PARAMS, self.OUTPUT = module.STATE, module.PARAMS, module.OUTPUT
        self.BLOCKS, self._dims = module.BLOCKS, module._dims

    def forward(self, x, state0, params):
        out, s_T, cache = self.module.forward(_to(x, self.target), _to(state0, self.target),
                                              _to(params, self.target))
        return _np(out), _np(s_T), cache

    def backward(self, d_out, d_T, cache):
        return _np(self.module.backward(_to(d_out, self.target), _to(d_T, self.target), cache))

    def step_forward(self, x_t, state, params):
        new, saved = self.module.step_forward(_to(x_t, self.target), _to(state, self.target),
                                              _to(params, self.target))
        return _np(new), saved

    def step_backward(self, d_new, saved, params):
        return _np(self.module.step_backward(_to(d_new, self.target), saved,
                                             _to(params, self.target)))

    def step_jacobian(self, x_t, state, params):
        jac = self.module.step_jacobian(_to(x_t, self.target), _to(state, self.target),
                                        _to(params, self.target))
        return _np(jac)


@pytest.fixture(scope="session")
def runner(emitted):
    """runner(cell, target) -> Runner over the emitted module."""
    return lambda cell, target="numpy": Runner(emitted(cell, target), target)
