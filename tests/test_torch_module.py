"""The emitted Torch module: differentiable through autograd.Function, equal to the NumPy one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import BUILTINS, random_params, rel_error
from test_against_torch import TORCH_MODULES

SPECS = Path(__file__).parent / "specs"
SPEC_CELLS = BUILTINS + [str(SPECS / "gru_cho.toml"), str(SPECS / "readout.toml")]


def _tensors(tree):
    return {k: torch.from_numpy(v.copy()).requires_grad_() for k, v in tree.items()}


@pytest.mark.parametrize("cell", ["rnn", "rnn_relu", "lstm", "gru"])
def test_loss_backward_through_forward_matches_nn_module(emitted, cell):
    mod = emitted(cell, "torch")
    T, B, I, H = 6, 3, 4, 5
    rng = np.random.default_rng(21)
    params = _tensors(random_params(mod, I, H, rng))
    state0 = _tensors({n: rng.standard_normal((B, H)) for n in mod.STATE})
    x = torch.from_numpy(rng.standard_normal((T, B, I))).requires_grad_()
    out, s_T, _ = mod.forward(x, state0, params)
    w = torch.from_numpy(rng.standard_normal((T, B, H)))
    (torch.sum(out * w) + sum(torch.sum(v**2) for v in s_T.values())).backward()

    m = TORCH_MODULES[cell](I, H).double()
    with torch.no_grad():
        for name, value in params.items():
            getattr(m, f"{name}_l0").copy_(value)
    x2 = x.detach().clone().requires_grad_()
    s2 = {n: v.detach()[None].clone().requires_grad_() for n, v in state0.items()}
    ref_out, ref_T = m(x2, (s2["h"], s2["c"]) if cell == "lstm" else s2["h"])
    ref_T = dict(zip(mod.STATE, ref_T if cell == "lstm" else (ref_T,), strict=True))
    (torch.sum(ref_out * w) + sum(torch.sum(v**2) for v in ref_T.values())).backward()

    assert rel_error(out.detach(), ref_out.detach()) < 1e-12
    assert rel_error(x.grad, x2.grad) < 1e-10
    for n in mod.STATE:
        assert rel_error(state0[n].grad, s2[n].grad[0]) < 1e-10
    for name, value in params.items():
        assert rel_error(value.grad, getattr(m, f"{name}_l0").grad) < 1e-10, name


@pytest.mark.parametrize("cell", SPEC_CELLS)
def test_gradcheck_of_the_autograd_function(emitted, cell):
    mod = emitted(cell, "torch")
    T, B, I, H = 3, 2, 3, 2
    rng = np.random.default_rng(5)
    params = random_params(mod, I, H, rng)
    names = list(mod.PARAMS)
    x = torch.from_numpy(rng.standard_normal((T, B, I))).requires_grad_()
    s0 = torch.from_numpy(rng.standard_normal((B, H)) * 0.5).requires_grad_()

    def run(x, s0, *p):
        out, s_T, _ = mod.forward(x, {mod.STATE[0]: s0}, dict(zip(names, p, strict=True)))
        return (out, *s_T.values())

    inputs = (x, s0, *(torch.from_numpy(params[n]).requires_grad_() for n in names))
    assert torch.autograd.gradcheck(run, inputs, eps=1e-6, atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cell", SPEC_CELLS)
def test_numpy_and_torch_modules_agree(runner, cell, dtype):
    a, b = runner(cell, "numpy"), runner(cell, "torch")
    T, B, I, H = 7, 3, 4, 6
    rng = np.random.default_rng(9)
    params = random_params(a.module, I, H, rng, dtype)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    s0 = {n: rng.standard_normal((B, H)).astype(dtype) for n in a.STATE}
    d_out = rng.standard_normal((T, B, H)).astype(dtype)
    d_T = {n: rng.standard_normal((B, H)).astype(dtype) for n in a.STATE}
    tol = 1e-12 if dtype == np.float64 else 1e-5
    results = []
    for r in (a, b):
        out, s_T, cache = r.forward(x, s0, params)
        results.append((out, s_T, r.backward(d_out, d_T, cache)))
    (oa, sa, ga), (ob, sb, gb) = results
    assert rel_error(oa, ob) < tol
    assert rel_error(ga[0], gb[0]) < tol
    for n in a.STATE:
        assert rel_error(sa[n], sb[n]) < tol and rel_error(ga[1][n], gb[1][n]) < tol
    for n in a.PARAMS:
        assert ga[2][n].dtype == gb[2][n].dtype == dtype
        assert rel_error(ga[2][n], gb[2][n]) < tol, n


def test_modules_need_only_their_own_library(emitted):
    """The NumPy module imports with torch blocked, the Torch module with numpy blocked."""
    paths = {t: sys.modules[emitted("gru", t).__name__].__file__ for t in ("numpy", "torch")}
    for target, blocked in (("numpy", "torch"), ("torch", "numpy")):
        code = (f"import sys; sys.modules[{blocked!r}] = None\n"
                "import importlib.util as u\n"
                f"s = u.spec_from_file_location('m', {paths[target]!r})\n"
                "m = u.module_from_spec(s); s.loader.exec_module(m); print(m.STATE)")
        if target == "torch":  # torch itself imports numpy lazily; block it only for the module
            code = code.replace(f"sys.modules[{blocked!r}] = None\n", "import torch\n"
                                "sys.modules['numpy'] = None\n")
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        assert "('h',)" in run.stdout


def test_torch_module_keeps_the_device_and_dtype(emitted):
    mod = emitted("lstm", "torch")
    rng = np.random.default_rng(0)
    params = {k: torch.from_numpy(v).float() for k, v in random_params(mod, 3, 4, rng).items()}
    x = torch.randn(5, 2, 3)
    out, s_T, cache = mod.forward(x, None, params)
    d_x, d_s, d_p = mod.backward(torch.ones_like(out), None, cache)
    assert out.dtype == d_x.dtype == d_p["weight_hh"].dtype == torch.float32
    assert out.device == d_x.device == x.device
