"""Every accepted spec gives correct code or a clear refusal: regressions of wrong gradients.

The specs in tests/specs/ (tied matrices, dead equations, functions of parameters, cancelled
terms, shared biases) are compared with autograd in test_user_specs.py; this file holds the
checks that need more than a comparison: returned arrays that must be distinct, the Torch
module's honesty about in-place edits and second-order gradients, the numerics of the
elementwise helpers, and specs that the parser must refuse.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TARGETS, random_params, rel_error
from test_spec_errors import assert_refused, eq, make_spec, write

from derive_cells.spec import load_cell

SPECS = Path(__file__).parent / "specs"


def _run(mod, target, params, x, state0, d_out, d_T):
    conv = torch.tensor if target == "torch" else np.asarray
    out, s_T, cache = mod.forward(conv(x), {k: conv(v) for k, v in state0.items()},
                                  {k: conv(v) for k, v in params.items()})
    d_T = {k: conv(v) for k, v in d_T.items()}
    return d_T, mod.backward(None if d_out is None else conv(d_out), d_T, cache)


@pytest.mark.parametrize("target", TARGETS)
def test_parameters_sharing_a_gradient_get_separate_arrays(emitted, target):
    mod = emitted(str(SPECS / "shared_bias.toml"), target)
    rng = np.random.default_rng(3)
    params = random_params(mod, 3, 4, rng)
    x = rng.standard_normal((1, 2, 3))
    state0 = {n: rng.standard_normal((2, 4)) for n in mod.STATE}
    d_T = {n: rng.standard_normal((2, 4)) for n in mod.STATE}
    given, (d_x, d_s0, d_p) = _run(mod, target, params, x, state0, None, d_T)
    np.testing.assert_allclose(np.asarray(d_p["b1"]), np.asarray(d_p["b2"]))
    assert d_p["b1"] is not d_p["b2"]
    before = np.array(np.asarray(d_p["b2"]), copy=True)
    d_p["b1"] *= 0.5  # in-place clipping of one gradient leaves the other alone
    np.testing.assert_array_equal(np.asarray(d_p["b2"]), before)
    # c = c_prev + ...: d c_prev = d c, yet the returned array is not the caller's d_state_T
    arrays = [*d_s0.values(), *d_p.values(), *given.values()]
    assert len({id(a) for a in arrays}) == len(arrays)


def _lstm(I=3, H=4, seed=0):
    torch.manual_seed(seed)
    return torch.nn.LSTM(I, H).double()


def _lstm_params(module, emitted_mod):
    return {n: getattr(module, f"{n}_l0").detach().clone().requires_grad_()
            for n in emitted_mod.PARAMS}


def test_torch_first_order_matches_nn_lstm(emitted):
    mod = emitted("lstm", "torch")
    ref = _lstm()
    params = _lstm_params(ref, mod)
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    out, _, _ = mod.forward(x, None, params)
    grads = torch.autograd.grad((out**2).sum(), list(params.values()))
    ref_out, _ = ref(x)
    ref_grads = torch.autograd.grad((ref_out**2).sum(), [getattr(ref, f"{n}_l0")
                                                         for n in params])
    for a, b in zip(grads, ref_grads, strict=True):
        assert rel_error(a, b) < 1e-12


def test_torch_second_order_raises_instead_of_a_wrong_number(emitted):
    """A gradient penalty needs the gradient's own graph; the derived backward refuses it."""
    mod = emitted("lstm", "torch")
    ref = _lstm()
    params = _lstm_params(ref, mod)
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    out, _, _ = mod.forward(x, None, params)
    with pytest.raises(RuntimeError, match="first-order gradients only"):
        torch.autograd.grad(out.sum(), list(params.values()), create_graph=True)
    # and with a loss that is linear in the outputs, where a silent constant would be wrong
    out, _, _ = mod.forward(x, None, params)
    with pytest.raises(RuntimeError, match="create_graph"):
        torch.autograd.grad((out**2).sum(), list(params.values()), create_graph=True)
    # nn.LSTM's gradient penalty for comparison: it is a real, nonzero second-order quantity
    ref_out, _ = ref(x)
    (g,) = torch.autograd.grad(ref_out.sum(), [ref.weight_hh_l0], create_graph=True)
    (gg,) = torch.autograd.grad((g**2).sum(), [ref.weight_hh_l0])
    assert float(gg.norm()) > 0


@pytest.mark.parametrize("which", ["weight_hh", "x"])
def test_torch_in_place_edit_before_backward_raises(emitted, which):
    mod = emitted("lstm", "torch")
    params = _lstm_params(_lstm(), mod)
    x = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)
    leaf = {k: v for k, v in params.items()}
    out, _, _ = mod.forward(x * 1.0 if which == "weight_hh" else x, None, leaf)
    with torch.no_grad():
        if which == "weight_hh":
            params["weight_hh"].mul_(0.5)  # as an optimizer step before backward would
        else:
            x.mul_(0.5)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_numpy_sigmoid_is_exact_over_the_float_range(emitted, dtype):
    mod = emitted("lstm", "numpy")
    z = np.array([-1000, -745, -100, -80, -40, -1, 0, 1, 40, 80, 100, 1000], dtype=dtype)
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="ignore"):
        warnings.simplefilter("error")
        s = mod._sigmoid(z)
    exact = torch.sigmoid(torch.tensor(z.astype(np.float64))).numpy()
    assert s.dtype == dtype
    tiny = np.finfo(dtype).tiny
    np.testing.assert_allclose(s, exact.astype(dtype), rtol=4 * np.finfo(dtype).eps,
                               atol=tiny)
    if dtype == np.float64:
        assert np.log(s[2]) == -100.0  # log(sigmoid(-100)): was -80 with a clipped exp
        assert s[0] == 0.0 and s[-1] == 1.0


@pytest.mark.parametrize("target", TARGETS)
def test_softplus_derivative_keeps_its_digits_far_left(tmp_path, target):
    """softplus'(z) = sigmoid(z) ~ 4e-18 at z = -40, where 1 - exp(-softplus(z)) is 0."""
    from derive_cells.derivation import derive
    from derive_cells.emit import emit
    from derive_cells.verify.modules import import_file

    path = write(tmp_path, make_spec(eq("h", "softplus(W @ x + U @ h_prev + b)")))
    source = emit(derive(load_cell(str(path))), target)
    file = tmp_path / f"softplus_{target}.py"
    file.write_text(source)
    mod = import_file(file, f"softplus_far_left_{target}")
    H, I = 3, 2
    zeros = {n: np.zeros(mod.PARAMS[n][0] == "H" and (H, I) if n == "W" else
                         (H, H) if n == "U" else (H,)) for n in mod.PARAMS}
    params = {**zeros, "b": np.full(H, -40.0)}
    x = np.zeros((1, 1, I))
    _, (_, _, d_p) = _run(mod, target, params, x, {"h": np.zeros((1, H))}, np.ones((1, 1, H)),
                          {})
    exact = float(torch.sigmoid(torch.tensor(-40.0, dtype=torch.float64)))
    np.testing.assert_allclose(np.asarray(d_p["b"]), exact, rtol=1e-12)


# --- specs that used to be accepted and then broke: now refused at parse time -------------

@pytest.mark.parametrize(("equations", "reason", "equation"), [
    ([eq("h", "tanh(W @ x + V @ b + U @ h_prev)")], "operand of @ must depend on", "h"),
    ([eq("h", "tanh(W @ x + V @ sigmoid(2 * b) + U @ h_prev)")], "operand of @", "h"),
    ([eq("h", "sigmoid(3 + P)")], "depends on parameters and constants only", "h"),
    ([eq("positive", "sigmoid(W @ x)"), eq("h", "positive * h_prev")],
     "a name the emitted module defines", "positive"),
    ([eq("h", "tanh(W @ x + U @ h_prev + expm1)")], "a name the emitted module defines", "h"),
    ([eq("h", "tanh(W @ x + U @ h_prev + 1e-320)")], "smaller than", "h"),
    ([eq("h", "tanh(W @ x + U @ h_prev) * 1e-200 * 1e-200")], "smaller than", "h"),
    ([eq("h", "tanh(W @ x + U @ h_prev + log(-1))")], "not a finite real number", "h"),
    ([eq("h", "tanh(W @ x + U @ h_prev + sqrt(-2))")], "not a finite real number", "h"),
    ([eq("h", "tanh(W @ x + U @ h_prev + exp(1000))")], "not a finite real number", "h"),
])
def test_constructs_that_cannot_be_emitted_are_refused(tmp_path, equations, reason, equation):
    assert_refused(write(tmp_path, make_spec(*equations)), reason, equation)


@pytest.mark.parametrize(("top", "inp", "reason"), [
    ('title = "a\\u0000b"', '"x"', "control characters"),
    ('title = "line\\nbreak"', '"x"', "control characters"),
    ('title = "bell\\u0007"', '"x"', "control characters"),
    ("", '"h_prev"', "previous state's value"),
    ("", '"h"', "also the name of a state"),
])
def test_names_and_titles_that_break_a_module_are_refused(tmp_path, top, inp, reason):
    spec = make_spec(eq("h", "tanh(W @ x + U @ h_prev)").replace("@ x", f"@ {inp[1:-1]}"),
                     top=top, inp=inp)
    assert_refused(write(tmp_path, spec), reason)


def test_state_named_like_another_states_previous_value_is_refused(tmp_path):
    spec = make_spec(eq("h", "tanh(W @ x + U @ h_prev)"), eq("h_prev", "h * 2"),
                     state='["h", "h_prev"]')
    assert_refused(write(tmp_path, spec), ("previous value", "cannot be assigned"))


def test_constant_function_arguments_fold_to_their_value(tmp_path):
    cell = load_cell(str(write(tmp_path, make_spec(
        eq("h", "tanh(W @ x / sqrt(2) + U @ h_prev + log(2) + relu(-3) + softplus(0))")))))
    (_, expr, _), = cell.equations
    numbers = sorted(float(n) for n in expr.atoms(*[type(n) for n in expr.atoms()
                                                    if n.is_Number]))
    assert any(abs(n - 2 ** -0.5) < 1e-15 for n in numbers), numbers
    assert any(abs(n - (np.log(2) + np.log(2))) < 1e-15 for n in numbers), numbers


REFUSED = sorted((SPECS / "refused").glob("*.toml"))


@pytest.mark.parametrize("path", REFUSED, ids=lambda p: p.stem)
def test_shrunk_examples_that_broke_emitted_modules_are_refused(path):
    """Minimal specs the property-based test found crashing or wrong: now refused at parse
    time, by the CLI with exit status 2 and one line naming the file."""
    from click.testing import CliRunner

    from derive_cells.cli import main

    assert_refused(path, None)
    result = CliRunner().invoke(main, [str(path), "--emit", "numpy"])
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0], result.stderr
