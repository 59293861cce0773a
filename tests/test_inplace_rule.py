"""The in-place rule each emitted module documents in its docstring, and the behaviour it
describes: backward reads what forward was given (x, state0, params), not copies. NumPy cannot
notice an in-place change in between, so the rule is written down, as PyTorch writes down its own;
autograd through the Torch module raises instead."""

from __future__ import annotations

import numpy as np
import pytest
import torch

RULE = {"numpy": "backward() reads what forward() was given, not copies",
        "torch": "The explicit backward(d_outputs, d_state_T,\ncache) reads the cache"}


def _inputs(mod):
    rng = np.random.default_rng(0)
    T, B, I, H = 4, 3, 5, 6
    x = rng.standard_normal((T, B, I))
    state0 = {n: rng.standard_normal((B, H)) for n in mod.STATE}
    params = {n: rng.standard_normal(mod._dims(s, I, H)) * 0.5 for n, s in mod.PARAMS.items()}
    return x, state0, params


def _flat(grads) -> np.ndarray:
    d_x, d_state0, d_params = grads
    arrays = [d_x, *d_state0.values(), *d_params.values()]
    return np.concatenate([np.asarray(a).ravel() for a in arrays])


@pytest.mark.parametrize("target", ["numpy", "torch"])
def test_docstring_states_the_rule(emitted, target):
    doc = emitted("lstm", target).__doc__
    assert RULE[target] in doc
    assert "in place" in doc


@pytest.mark.parametrize("edit", ["x", "state0", "params"])
def test_numpy_in_place_edit_between_forward_and_backward_changes_gradients(emitted, edit):
    """What the docstring warns of: the edit goes unnoticed and the gradients change; on
    copies (the remedy it gives) they do not."""
    mod = emitted("lstm", "numpy")
    x, state0, params = _inputs(mod)
    out, _, cache = mod.forward(x, state0, params)
    d_out = np.random.default_rng(1).standard_normal(out.shape)
    before = _flat(mod.backward(d_out, None, cache))
    target = {"x": x, "state0": state0["c"], "params": params["weight_hh"]}[edit]
    target *= 0.5
    assert not np.array_equal(_flat(mod.backward(d_out, None, cache)), before)
    x, state0, params = _inputs(mod)
    out, _, cache = mod.forward(x.copy(), {n: v.copy() for n, v in state0.items()},
                                {n: v.copy() for n, v in params.items()})
    before = _flat(mod.backward(d_out, None, cache))
    x *= 0.5
    params["weight_hh"] *= 0.5
    assert np.array_equal(_flat(mod.backward(d_out, None, cache)), before)


def test_torch_autograd_raises_on_an_in_place_edit(emitted):
    mod = emitted("lstm", "torch")
    x, _, params = _inputs(mod)
    x = torch.tensor(x)
    params = {n: torch.tensor(v, requires_grad=True) for n, v in params.items()}
    out, _, _ = mod.forward(x, {}, params)
    with torch.no_grad():
        x.mul_(0.5)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()


def test_torch_explicit_backward_reads_the_cache(emitted):
    """The explicit backward has no such check, as its docstring says."""
    mod = emitted("lstm", "torch")
    x, _, params = _inputs(mod)
    x, params = torch.tensor(x), {n: torch.tensor(v) for n, v in params.items()}
    with torch.no_grad():
        out, _, cache = mod.forward(x, {}, params)
    d_out = torch.ones_like(out)
    d_x, _, d_params = mod.backward(d_out, None, cache)
    x.mul_(0.5)
    params["weight_hh"].mul_(0.5)
    d_x2, _, d_params2 = mod.backward(d_out, None, cache)
    assert not torch.equal(d_params2["weight_ih"], d_params["weight_ih"])  # reads x
    assert not torch.equal(d_x2, d_x)  # reads weight_hh
