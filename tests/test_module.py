"""Emitted modules: finite differences, Jacobians, dtypes, extremes, bad input, step API."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import BUILTINS, TARGETS, random_params, rel_error
from reference import simplified_gru_step

TORCH_CELLS = {
    "rnn": lambda I, H: torch.nn.RNNCell(I, H, nonlinearity="tanh"),
    "rnn_relu": lambda I, H: torch.nn.RNNCell(I, H, nonlinearity="relu"),
    "lstm": lambda I, H: torch.nn.LSTMCell(I, H),
    "gru": lambda I, H: torch.nn.GRUCell(I, H),
}


def _problem(mod, T=3, B=2, I=3, H=4, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    params = random_params(mod, I, H, rng, dtype)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    state0 = {n: (rng.standard_normal((B, H)) * 0.5).astype(dtype) for n in mod.STATE}
    d_out = rng.standard_normal((T, B, H)).astype(dtype)
    d_T = {n: rng.standard_normal((B, H)).astype(dtype) for n in mod.STATE}
    return params, x, state0, d_out, d_T


def _loss(mod, x, state0, params, d_out, d_T) -> float:
    out, s_T, _ = mod.forward(x, state0, params)
    return float((out * d_out).sum() + sum((s_T[n] * d_T[n]).sum() for n in mod.STATE))


@pytest.mark.parametrize("cell", BUILTINS)
@pytest.mark.parametrize("target", TARGETS)
def test_central_finite_differences(runner, target, cell):
    """Every element of every gradient against central differences of the module's own forward."""
    mod = runner(cell, target)
    params, x, state0, d_out, d_T = _problem(mod)
    _, _, cache = mod.forward(x, state0, params)
    d_x, d_s0, d_p = mod.backward(d_out, d_T, cache)
    eps = 6e-6

    def numeric(array):
        grad = np.zeros_like(array)
        for idx in np.ndindex(array.shape):
            keep = array[idx]
            array[idx] = keep + eps
            up = _loss(mod, x, state0, params, d_out, d_T)
            array[idx] = keep - eps
            down = _loss(mod, x, state0, params, d_out, d_T)
            array[idx] = keep
            grad[idx] = (up - down) / (2 * eps)
        return grad

    if cell == "rnn_relu":  # keep away from relu's kink, where differences are meaningless
        _, _, c = mod.forward(x, state0, params)
        h_prev = np.asarray(c["states"]["h"][:-1])
        z = (x @ params["weight_ih"].T + params["bias_ih"] + params["bias_hh"]
             + h_prev @ params["weight_hh"].T)
        assert np.min(np.abs(z)) > 1e3 * eps
    assert rel_error(d_x, numeric(x)) < 1e-7
    for n in mod.STATE:
        assert rel_error(d_s0[n], numeric(state0[n])) < 1e-7, n
    for n in mod.PARAMS:
        assert rel_error(d_p[n], numeric(params[n])) < 1e-7, n


@pytest.mark.parametrize("cell", BUILTINS)
@pytest.mark.parametrize("target", TARGETS)
def test_step_jacobian_against_autograd(runner, target, cell):
    mod = runner(cell, target)
    B, I, H = 3, 4, 5
    params, x, state0, _, _ = _problem(mod, T=1, B=B, I=I, H=H, seed=11)
    jac = mod.step_jacobian(x[0], state0, params)
    tp = {n: torch.tensor(v) for n, v in params.items()}
    xs = torch.tensor(x[0])
    if cell == "simplified_gru":
        def step(c):
            return (simplified_gru_step(xt, c, tp),)
    else:
        m = TORCH_CELLS[cell](I, H).double()
        with torch.no_grad():
            for name, value in tp.items():
                getattr(m, name).copy_(value)

        def step(*s):
            out = m(xt, tuple(s) if len(s) > 1 else s[0])
            return out if isinstance(out, tuple) else (out,)

    for b in range(B):
        xt = xs[b:b + 1]
        prev = tuple(torch.tensor(state0[n][b:b + 1]) for n in mod.STATE)
        full = torch.autograd.functional.jacobian(step, prev)
        for i, s in enumerate(mod.STATE):
            for j, sp in enumerate(mod.STATE):
                ref = full[i][j][0, :, 0, :].numpy()
                assert rel_error(jac[s, sp][b], ref) < 1e-12, (s, sp, b)
    # not vacuous: the recurrent block really depends on the recurrent weights
    assert np.abs(jac[mod.STATE[0], mod.STATE[0]]).max() > 1e-3


@pytest.mark.parametrize("cell", BUILTINS)
@pytest.mark.parametrize("target", TARGETS)
def test_step_api_agrees_with_sequence_api(runner, target, cell):
    mod = runner(cell, target)
    params, x, state0, d_out, d_T = _problem(mod, T=1, seed=5)
    out, s_T, cache = mod.forward(x, state0, params)
    new, saved = mod.step_forward(x[0], state0, params)
    for n in mod.STATE:
        np.testing.assert_array_equal(new[n], s_T[n])
    d_in = {n: d_T[n] + (d_out[0] if n == mod.OUTPUT else 0) for n in mod.STATE}
    d_x_t, d_s, d_p = mod.step_backward(d_in, saved, params)
    ref = mod.backward(d_out, d_T, cache)
    assert rel_error(d_x_t, ref[0][0]) < 1e-15
    for n in mod.STATE:
        assert rel_error(d_s[n], ref[1][n]) < 1e-15
    for n in mod.PARAMS:
        assert rel_error(d_p[n], ref[2][n]) < 1e-15


@pytest.mark.parametrize("cell", BUILTINS)
@pytest.mark.parametrize("target", TARGETS)
def test_float32_stays_float32_and_agrees_with_float64(runner, target, cell):
    mod = runner(cell, target)
    p64, x64, s64, d64, dT64 = _problem(mod, T=6, B=3, I=5, H=8, seed=2)
    as32 = lambda tree: {k: v.astype(np.float32) for k, v in tree.items()}  # noqa: E731
    out32, sT32, cache32 = mod.forward(x64.astype(np.float32), as32(s64), as32(p64))
    g32 = mod.backward(d64.astype(np.float32), as32(dT64), cache32)
    out64, _, cache64 = mod.forward(x64, s64, p64)
    g64 = mod.backward(d64, dT64, cache64)
    arrays = [out32, g32[0], *sT32.values(), *g32[1].values(), *g32[2].values()]
    assert all(a.dtype == np.float32 for a in arrays)
    assert rel_error(out32, out64) < 1e-5
    assert rel_error(g32[0], g64[0]) < 1e-4
    for n in mod.PARAMS:
        assert rel_error(g32[2][n], g64[2][n]) < 1e-4, n


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cell", BUILTINS)
@pytest.mark.parametrize("target", TARGETS)
def test_extreme_preactivations_are_finite_and_silent(runner, target, cell, dtype):
    """Weights x40 and inputs x10 saturate every gate: no overflow, invalid or divide warning."""
    mod = runner(cell, target)
    rng = np.random.default_rng(4)
    T, B, I, H = 8, 4, 6, 10
    params = random_params(mod, I, H, rng, dtype, scale=40.0)
    x = (rng.standard_normal((T, B, I)) * 10).astype(dtype)
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # underflow is benign
        out, s_T, cache = mod.forward(x, None, params)
        d_x, d_s, d_p = mod.backward(np.ones_like(out), None, cache)
    assert np.isfinite(out).all() and np.isfinite(d_x).all()
    assert all(np.isfinite(v).all() for v in [*s_T.values(), *d_s.values(), *d_p.values()])
    if cell != "rnn_relu":
        assert np.abs(out).max() > 0.9  # the gates really saturated
    if cell == "lstm":
        ref = mod.forward(x.astype(np.float64), None,
                          {k: v.astype(np.float64) for k, v in params.items()})[0]
        assert rel_error(out, ref) < (1e-12 if dtype == np.float64 else 1e-5)


@pytest.mark.parametrize("target", TARGETS)
def test_bad_inputs_raise_value_error_naming_the_array(runner, target):
    mod = runner("lstm", target)
    params, x, state0, _, _ = _problem(mod, T=2, B=2, I=3, H=4)

    def raises(match, *args):
        with pytest.raises(ValueError, match=match):
            mod.forward(*args)

    raises(r"params\['weight_hh'\]: expected shape \(16, 4\) \(H = 4, from state0\['h'\]\), "
           r"got \(16, 5\)", x, state0, {**params, "weight_hh": np.zeros((16, 5))})
    raises(r"params\['weight_ih'\]: expected shape \(16, 2\) .*, got \(16, 3\)", x[:, :, :2],
           state0, params)
    # without initial states, H comes from the columns of weight_hh, not from a transposed
    # weight_ih's rows
    raises(r"params\['weight_ih'\]: expected shape \(16, 3\) \(H = 4, from the columns of "
           r"params\['weight_hh'\]\), got \(3, 16\)", x, None,
           {**params, "weight_ih": params["weight_ih"].T.copy()})
    raises(r"params\['bias_ih'\]: dtype (torch\.)?float32 differs from x's (torch\.)?float64",
           x, state0,
           {**params, "bias_ih": params["bias_ih"].astype(np.float32)})
    raises(r"state0\['c'\]: expected shape \(2, 4\) .*, got \(3, 4\)", x,
           {**state0, "c": np.zeros((3, 4))}, params)
    raises(r"state0: unknown state\(s\) \['q'\]", x, {"q": np.zeros((2, 4))}, params)
    raises(r"x: expected a floating-point array of shape \(T, B, I\)", x[0], state0, params)
    raises(r"x: expected a floating-point array", x.astype(np.int64), state0, params)
    raises(r"params: unknown \['weight_hh_l0'\], missing \['weight_hh'\]", x, state0,
           {**{k: v for k, v in params.items() if k != "weight_hh"},
            "weight_hh_l0": params["weight_hh"]})
    x_nan = x.copy()
    x_nan[1, 0, 2] = np.nan
    raises(r"x: not finite \(NaN or infinity\) at index \(1, 0, 2\)", x_nan, state0, params)
    raises(r"params\['weight_hh'\]: not finite .* at index \(3, 1\)", x, state0,
           {**params, "weight_hh": np.where(np.arange(64).reshape(16, 4) == 13, np.inf,
                                            params["weight_hh"])})
    raises(r"state0\['c'\]: not finite", x, {**state0, "c": state0["c"] * np.nan}, params)
    out, _, cache = mod.forward(x, state0, params)
    with pytest.raises(ValueError, match=r"d_state_T\['c'\]: not finite"):
        mod.backward(None, {"c": np.full((2, 4), -np.inf)}, cache)
    with pytest.raises(ValueError, match=r"d_outputs: expected shape \(2, 2, 4\)"):
        mod.backward(out[:1], None, cache)
    with pytest.raises(ValueError, match=r"d_state_T\['h'\]: dtype (torch\.)?float32"):
        mod.backward(None, {"h": np.zeros((2, 4), np.float32)}, cache)


@pytest.mark.parametrize("target", TARGETS)
def test_missing_state_starts_at_zero(runner, target):
    mod = runner("lstm", target)
    params, x, _, _, _ = _problem(mod)
    a = mod.forward(x, None, params)[0]
    b = mod.forward(x, {"h": np.zeros((2, 4))}, params)[0]
    c = mod.forward(x, {"h": np.zeros((2, 4)), "c": np.ones((2, 4))}, params)[0]
    np.testing.assert_array_equal(a, b)
    assert rel_error(a, c) > 1e-3
