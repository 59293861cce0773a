"""Emitted modules as Python modules: emitted to a file and imported, or a user's file loaded,
and a runner that calls either target with NumPy arrays in and out."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path

import numpy as np

from derive_cells.cache import SourceOnlyLoader

REQUIRED = ("STATE", "PARAMS", "BLOCKS", "forward", "backward", "step_forward", "step_backward")


class ModuleError(ValueError):
    """A file that is not a usable emitted module."""


def import_file(path: Path, name: str | None = None):
    """Import a Python file as a module (it stays inspectable: a real file, a real import),
    run from its source text: bytecode in __pycache__ is neither read nor written."""
    name = name or f"derive_cells_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
    loader = SourceOnlyLoader(name, str(path))
    spec = importlib.util.spec_from_file_location(name, path, loader=loader)
    if spec is None or spec.loader is None:
        raise ModuleError(f"{path}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise ModuleError(f"{path}: importing it failed: {type(exc).__name__}: {exc}") from None
    return module


def load_module_file(path: str):
    """A user's emitted module file; its target is the library it imports."""
    file = Path(path)
    if not file.is_file():
        raise ModuleError(f"{path}: no such file")
    module = import_file(file.resolve())
    missing = [n for n in REQUIRED if not hasattr(module, n)]
    if missing:
        raise ModuleError(f"{path}: not an emitted module (missing {', '.join(missing)})")
    target = "torch" if hasattr(module, "CellFunction") or "torch" in vars(module) else "numpy"
    return module, target


def emit_and_import(deriv, target: str, folder: Path):
    """Emit a derivation's module for a target into folder and import it."""
    from derive_cells.emit import emit

    path = folder / f"{deriv.cell.name}_{target}_bptt.py"
    path.write_text(emit(deriv, target), encoding="utf-8")
    return import_file(path, f"derive_cells_{deriv.cell.name}_{target}_{id(folder):x}")


def _to(obj, target: str):
    if isinstance(obj, dict):
        return {k: _to(v, target) for k, v in obj.items()}
    if isinstance(obj, np.ndarray) and target == "torch":
        import torch

        return torch.from_numpy(obj.copy())
    return obj


def _np(obj):
    if isinstance(obj, dict):
        return {k: _np(v) for k, v in obj.items()}
    if isinstance(obj, (tuple, list)):
        return type(obj)(_np(v) for v in obj)
    if hasattr(obj, "detach"):
        return obj.detach().cpu().numpy()
    return obj


class Runner:
    """Calls an emitted module of either target with NumPy arrays in and NumPy arrays out."""

    def __init__(self, module, target: str):
        self.module, self.target = module, target
        self.STATE, self.PARAMS, self.BLOCKS = module.STATE, module.PARAMS, module.BLOCKS
        self.OUTPUT = getattr(module, "OUTPUT", module.STATE[0])

    def forward(self, x, state0, params, **options):
        """options: lengths (a NumPy array, converted like the others) and reverse."""
        options = {k: _to(v, self.target) for k, v in options.items()}
        out, s_T, cache = self.module.forward(_to(x, self.target), _to(state0, self.target),
                                              _to(params, self.target), **options)
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
        return _np(self.module.step_jacobian(_to(x_t, self.target), _to(state, self.target),
                                             _to(params, self.target)))
