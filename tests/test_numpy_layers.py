"""README's recipe for the NumPy module with lengths, two stacked bidirectional layers, run as it
is written there, against torch.nn.LSTM(num_layers=2, bidirectional=True) on the same batch as a
PackedSequence (enforce_sorted=False): outputs, final states, d_x and every parameter gradient."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import rel_error
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

README = Path(__file__).resolve().parents[1] / "README.md"


def _recipe() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    found = [b for b in blocks if "def bidirectional(" in b]
    assert len(found) == 1, "README.md: the bidirectional recipe is missing or repeated"
    return found[0]


@pytest.fixture
def recipe(emitted, monkeypatch):
    """The README block executed with the emitted NumPy LSTM module as `lstm_bptt`."""
    monkeypatch.setitem(sys.modules, "lstm_bptt", emitted("lstm", "numpy"))
    np.random.seed(0)
    torch.manual_seed(0)
    namespace: dict = {}
    exec(compile(_recipe(), "README.md (bidirectional recipe)", "exec"), namespace)
    return namespace


def _nn_packed(lstm, x, lengths, w_out=None, w_hn=None):
    """nn.LSTM over the batch packed: padded outputs, h_n, c_n, d_x and the parameters' .grad
    for loss = <w_out, outputs> + <w_hn, (h_n, c_n)> (w_out=None: outputs.sum())."""
    lstm.zero_grad(set_to_none=True)
    xt = torch.tensor(x, requires_grad=True)
    packed = pack_padded_sequence(xt, torch.tensor(lengths), enforce_sorted=False)
    out, (h_n, c_n) = lstm(packed)
    out, _ = pad_packed_sequence(out, total_length=x.shape[0])
    loss = out.sum() if w_out is None else (out * torch.tensor(w_out)).sum()
    if w_hn is not None:
        loss = loss + (h_n * torch.tensor(w_hn[0])).sum() + (c_n * torch.tensor(w_hn[1])).sum()
    loss.backward()
    grads = {n: p.grad.numpy() for n, p in lstm.named_parameters()}
    return out.detach().numpy(), h_n.detach().numpy(), c_n.detach().numpy(), \
        xt.grad.numpy(), grads


def _compare_params(d_params, grads):
    assert len(grads) == 2 * 2 * 4
    for k in range(2):
        for d, sfx in enumerate(("", "_reverse")):
            for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                assert rel_error(d_params[k][d][n], grads[f"{n}_l{k}{sfx}"]) <= 1e-10, \
                    (k, sfx, n)


def test_readme_recipe_matches_nn_lstm_packed(recipe):
    ns = recipe
    lstm, x, lengths = ns["lstm"], ns["x"], ns["lengths"]
    assert x.dtype == np.float64 and len(set(lengths.tolist())) == len(lengths)
    assert list(lengths) != sorted(lengths, reverse=True)  # unsorted: enforce_sorted=False
    out, h_n, c_n, d_x, grads = _nn_packed(lstm, x, lengths)
    assert ns["h"].shape == out.shape == (50, 4, 32)
    assert rel_error(ns["h"], out) <= 1e-10
    for t in range(x.shape[0]):  # exactly zero past each row's end
        assert not ns["h"][t, lengths <= t].any()
    for k in range(2):
        for d in range(2):
            assert rel_error(ns["states"][k][d]["h"], h_n[2 * k + d]) <= 1e-10, (k, d)
            assert rel_error(ns["states"][k][d]["c"], c_n[2 * k + d]) <= 1e-10, (k, d)
    assert rel_error(ns["d_h"], d_x) <= 1e-10
    _compare_params(ns["d_params"], grads)


def test_recipe_functions_with_state_adjoints(recipe):
    """The recipe's two functions under a loss that also reads every final state."""
    ns, rng = recipe, np.random.default_rng(1)
    lstm, layers, x, lengths = ns["lstm"], ns["layers"], ns["x"], np.array([3, 50, 1, 26])
    w_out = rng.standard_normal((50, 4, 32))
    w_hn = rng.standard_normal((2, 4, 4, 16))  # (h_n, c_n) of (layers * directions, B, H)
    out, h_n, c_n, d_x, grads = _nn_packed(lstm, x, lengths, w_out, w_hn)
    h, caches = x, []
    for k, params in enumerate(layers):
        h, s_T, cache = ns["bidirectional"](h, lengths, params)
        caches.append(cache)
        for d in range(2):
            assert rel_error(s_T[d]["h"], h_n[2 * k + d]) <= 1e-10
            assert rel_error(s_T[d]["c"], c_n[2 * k + d]) <= 1e-10
    assert rel_error(h, out) <= 1e-10
    d_h, d_params = w_out, [None, None]
    for k in (1, 0):
        d_T = tuple({"h": w_hn[0, 2 * k + d], "c": w_hn[1, 2 * k + d]} for d in range(2))
        d_h, d_params[k] = ns["bidirectional_backward"](d_h, d_T, caches[k])
    assert rel_error(d_h, d_x) <= 1e-10
    _compare_params(d_params, grads)
