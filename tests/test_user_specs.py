"""User-written specs (tests/specs/*.toml) against autograd over a direct Torch evaluation.

These cells exercise what the built-ins do not: an operand that is computed inside the step
(GRU with reset before the product, minimalRNN), learned vectors read elementwise (peepholes,
IndRNN), an output that is not a state, the input read through a function, every function, and
names an emitter could trip over (np, torch, p, step, values, made-up names such as x_W).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TARGETS, random_params, reference_jacobian, rel_error

from derive_cells.spec import load_cell
from derive_cells.verify import reference

SPECS = sorted(str(p) for p in (Path(__file__).parent / "specs").glob("*.toml"))


@pytest.mark.parametrize("shape", [(1, 1, 3, 4), (7, 3, 5, 4)], ids=["T1B1", "T7B3"])
@pytest.mark.parametrize("spec", SPECS, ids=lambda p: Path(p).stem)
@pytest.mark.parametrize("target", TARGETS)
def test_user_spec_matches_autograd(runner, target, spec, shape):
    mod, cell = runner(spec, target), load_cell(spec)
    T, B, I, H = shape
    rng = np.random.default_rng(T * 100 + len(spec))
    params = random_params(mod, I, H, rng)
    x = rng.standard_normal((T, B, I))
    state0 = {n: rng.standard_normal((B, H)) * 0.5 for n in mod.STATE}
    d_out = rng.standard_normal((T, B, H))
    d_T = {n: rng.standard_normal((B, H)) for n in mod.STATE}

    out, s_T, cache = mod.forward(x, state0, params)
    d_x, d_s0, d_p = mod.backward(d_out, d_T, cache)

    tx = torch.tensor(x, requires_grad=True)
    ts0 = {n: torch.tensor(v, requires_grad=True) for n, v in state0.items()}
    tp = {n: torch.tensor(v, requires_grad=True) for n, v in params.items()}
    ref_out, ref_T = reference.run(cell, tx, ts0, tp)
    loss = (ref_out * torch.tensor(d_out)).sum()
    loss = loss + sum((ref_T[n] * torch.tensor(d_T[n])).sum() for n in mod.STATE)
    loss.backward()

    def grad(t):  # an unused input, state or parameter has a zero gradient
        return t.grad.numpy() if t.grad is not None else np.zeros(t.shape)

    assert rel_error(out, ref_out.detach().numpy()) < 1e-12
    for n in mod.STATE:
        assert rel_error(s_T[n], ref_T[n].detach().numpy()) < 1e-12, n
        assert rel_error(d_s0[n], grad(ts0[n])) < 1e-10, n
    assert rel_error(d_x, grad(tx)) < 1e-10
    for n in mod.PARAMS:
        assert rel_error(d_p[n], grad(tp[n])) < 1e-10, n


@pytest.mark.parametrize("spec", SPECS, ids=lambda p: Path(p).stem)
@pytest.mark.parametrize("target", TARGETS)
def test_user_spec_jacobian(runner, target, spec):
    mod, cell = runner(spec, target), load_cell(spec)
    B, I, H = 2, 3, 4
    rng = np.random.default_rng(1)
    params = random_params(mod, I, H, rng)
    x_t = rng.standard_normal((B, I))
    state = {n: rng.standard_normal((B, H)) * 0.5 for n in mod.STATE}
    jac = mod.step_jacobian(x_t, state, params)
    for key, ref in reference_jacobian(cell, mod, x_t, state, params).items():
        assert rel_error(jac[key], ref) < 1e-12, key
