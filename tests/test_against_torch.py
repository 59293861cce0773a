"""Emitted modules (NumPy and Torch) against PyTorch's own modules and autograd, float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TARGETS, random_params, rel_error
from reference import simplified_gru

TORCH_MODULES = {
    "rnn": lambda I, H: torch.nn.RNN(I, H, nonlinearity="tanh"),
    "rnn_relu": lambda I, H: torch.nn.RNN(I, H, nonlinearity="relu"),
    "lstm": lambda I, H: torch.nn.LSTM(I, H),
    "gru": lambda I, H: torch.nn.GRU(I, H),
}
SHAPES = [(1, 1, 3, 4), (1, 4, 2, 3), (6, 1, 5, 4), (9, 3, 4, 7), (4, 5, 7, 2)]
TOL = 1e-10


def _run_torch(cell, module, x, state0, params, d_out, d_state_T):
    """Outputs, final states and gradients from torch, with the loss <d_out, out> + <d_s, s_T>."""
    T, B, I = x.shape
    H = next(iter(state0.values())).shape[-1]
    xt = torch.tensor(x, requires_grad=True)
    s0 = {n: torch.tensor(v, requires_grad=True) for n, v in state0.items()}
    if cell == "simplified_gru":
        p = {n: torch.tensor(v, requires_grad=True) for n, v in params.items()}
        out, c_T = simplified_gru(xt, s0["c"], p)
        final, leaves = {"c": c_T}, p
    else:
        m = TORCH_MODULES[cell](I, H).double()
        with torch.no_grad():
            for name, value in params.items():
                getattr(m, f"{name}_l0").copy_(torch.tensor(value))
        if cell == "lstm":
            out, (h_T, c_T) = m(xt, (s0["h"][None], s0["c"][None]))
            final = {"h": h_T[0], "c": c_T[0]}
        else:
            out, h_T = m(xt, s0["h"][None])
            final = {"h": h_T[0]}
        leaves = {n.removesuffix("_l0"): v for n, v in m.named_parameters()}
    loss = (out * torch.tensor(d_out)).sum()
    loss = loss + sum((final[n] * torch.tensor(d_state_T[n])).sum() for n in final)
    loss.backward()
    return (out.detach().numpy(), {n: v.detach().numpy() for n, v in final.items()},
            xt.grad.numpy(), {n: v.grad.numpy() for n, v in s0.items()},
            {n: v.grad.numpy() for n, v in leaves.items()})


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "T{}B{}I{}H{}".format(*s))
@pytest.mark.parametrize("cell", ["rnn", "rnn_relu", "lstm", "gru", "simplified_gru"])
@pytest.mark.parametrize("target", TARGETS)
def test_forward_and_gradients_match_torch(runner, target, cell, shape):
    mod = runner(cell, target)
    T, B, I, H = shape
    rng = np.random.default_rng(sum(shape) + len(cell))
    params = random_params(mod, I, H, rng)
    x = rng.standard_normal((T, B, I))
    state0 = {n: rng.standard_normal((B, H)) * 0.5 for n in mod.STATE}
    d_out = rng.standard_normal((T, B, H))
    d_state_T = {n: rng.standard_normal((B, H)) for n in mod.STATE}

    out, state_T, cache = mod.forward(x, state0, params)
    d_x, d_state0, d_params = mod.backward(d_out, d_state_T, cache)
    ref_out, ref_T, ref_dx, ref_ds0, ref_dp = _run_torch(cell, mod, x, state0, params, d_out,
                                                         d_state_T)
    checks = {"outputs": (out, ref_out), "d_x": (d_x, ref_dx)}
    checks.update({f"state_T[{n}]": (state_T[n], ref_T[n]) for n in mod.STATE})
    checks.update({f"d_state0[{n}]": (d_state0[n], ref_ds0[n]) for n in mod.STATE})
    assert set(d_params) == set(ref_dp) == set(mod.PARAMS)
    checks.update({f"d_params[{n}]": (d_params[n], ref_dp[n]) for n in ref_dp})
    for what, (ours, ref) in checks.items():
        assert ours.shape == ref.shape, what
        assert rel_error(ours, ref) <= TOL, f"{cell} {what}: rel error {rel_error(ours, ref):.2e}"


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("target", TARGETS)
def test_gradient_through_final_state_only_and_outputs_only(runner, target, cell):
    """Each entry point of the adjoint is used on its own, and the two add up."""
    mod = runner(cell, target)
    rng = np.random.default_rng(7)
    T, B, I, H = 5, 2, 3, 4
    params = random_params(mod, I, H, rng)
    x = rng.standard_normal((T, B, I))
    d_out = rng.standard_normal((T, B, H))
    d_T = {n: rng.standard_normal((B, H)) for n in mod.STATE}
    _, _, cache = mod.forward(x, None, params)
    only_out = mod.backward(d_out, None, cache)
    only_T = mod.backward(None, d_T, cache)
    both = mod.backward(d_out, d_T, cache)
    ref = _run_torch(cell, mod, x, {n: np.zeros((B, H)) for n in mod.STATE}, params, d_out, d_T)
    assert rel_error(both[0], ref[2]) <= TOL
    assert rel_error(only_out[0] + only_T[0], ref[2]) <= TOL
    assert rel_error(only_T[0], both[0]) > 1e-3  # the final-state adjoint really contributes
    for n in mod.PARAMS:
        assert rel_error(only_out[2][n] + only_T[2][n], ref[4][n]) <= TOL


@pytest.mark.parametrize("target", TARGETS)
def test_gru_hidden_bias_gradients_differ_and_lstm_equal(runner, target):
    """Trap 2: LSTM's two biases get equal gradients; GRU's b_hn block does not."""
    rng = np.random.default_rng(3)
    for cell, differs in (("lstm", ()), ("gru", (2,))):
        mod = runner(cell, target)
        params = random_params(mod, 3, 4, rng)
        _, _, cache = mod.forward(rng.standard_normal((4, 2, 3)), None, params)
        _, _, dp = mod.backward(rng.standard_normal((4, 2, 4)), None, cache)
        k = len(mod.BLOCKS["bias_ih"])
        pairs = zip(np.split(dp["bias_ih"], k), np.split(dp["bias_hh"], k), strict=True)
        for block, (a, b) in enumerate(pairs):
            if block in differs:
                assert rel_error(a, b) > 1e-3
            else:
                assert rel_error(a, b) < 1e-14
