"""Variable-length sequences and the reverse direction in both targets.

Row b of a padded batch runs its first lengths[b] steps (PyTorch's packed-sequence semantics:
afterwards its state is carried, its outputs are zero, state_T is its state after its own last
step); reverse=True runs each row from its last valid step back to its first. References: each
row on its own through autograd over verify/reference.py, and torch.nn.LSTM/GRU/RNN over the same
batch as a PackedSequence.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import BUILTINS, TARGETS, random_params, rel_error
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from derive_cells.spec import load_cell
from derive_cells.verify import reference

SPECS = Path(__file__).parent / "specs"
CELLS = [*BUILTINS, str(SPECS / "peephole_lstm.toml"), str(SPECS / "zoo.toml"),
         str(SPECS / "readout.toml")]


def _problem(mod, lengths, I=3, H=4, seed=0):
    rng = np.random.default_rng(seed)
    T, B = max(lengths), len(lengths)
    params = random_params(mod, I, H, rng)
    x = rng.standard_normal((T, B, I))
    state0 = {n: rng.standard_normal((B, H)) * 0.5 for n in mod.STATE}
    d_out = rng.standard_normal((T, B, H))
    d_T = {n: rng.standard_normal((B, H)) for n in mod.STATE}
    return params, x, state0, d_out, d_T


def _per_row_reference(cell, mod, params, x, state0, d_out, d_T, lengths, reverse):
    """Each row alone, truncated to its length: outputs, final states and every gradient."""
    tx = torch.tensor(x, requires_grad=True)
    ts0 = {n: torch.tensor(v, requires_grad=True) for n, v in state0.items()}
    tp = {n: torch.tensor(v, requires_grad=True) for n, v in params.items()}
    T, B = x.shape[:2]
    outputs = torch.zeros(d_out.shape, dtype=torch.float64)
    finals, loss = {n: [] for n in mod.STATE}, 0
    for b, L in enumerate(lengths):
        xb = tx[:L, b:b + 1]
        xb = xb.flip(0) if reverse else xb
        out, s_T = reference.run(cell, xb, {n: v[b:b + 1] for n, v in ts0.items()}, tp)
        out = out.flip(0) if reverse else out
        outputs = outputs.index_put((torch.arange(L), torch.tensor([b])), out[:, 0])
        for n in mod.STATE:
            finals[n].append(s_T[n][0])
        loss = loss + (out[:, 0] * torch.tensor(d_out[:L, b])).sum()
        loss = loss + sum((s_T[n][0] * torch.tensor(d_T[n][b])).sum() for n in mod.STATE)
    leaves = [tx, *ts0.values(), *tp.values()]
    grads = torch.autograd.grad(loss, leaves, allow_unused=True)
    grads = [np.zeros(v.shape) if g is None else g.numpy()
             for g, v in zip(grads, leaves, strict=True)]
    return (outputs.detach().numpy(), {n: torch.stack(v).detach().numpy()
                                       for n, v in finals.items()},
            grads[0], dict(zip(ts0, grads[1:1 + len(ts0)], strict=True)),
            dict(zip(tp, grads[1 + len(ts0):], strict=True)))


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("lengths", [(5, 2, 3, 1), (4, 4, 4), (1,), (3, 5)],
                         ids=["mixed", "full", "one", "unsorted"])
@pytest.mark.parametrize("cell", CELLS, ids=lambda c: Path(c).stem)
@pytest.mark.parametrize("target", TARGETS)
def test_lengths_and_reverse_match_each_row_alone(runner, target, cell, lengths, reverse):
    mod, spec = runner(cell, target), load_cell(cell)
    params, x, state0, d_out, d_T = _problem(mod, lengths)
    n = np.array(lengths)
    out, s_T, cache = mod.forward(x, state0, params, lengths=n, reverse=reverse)
    d_x, d_s0, d_p = mod.backward(d_out, d_T, cache)
    ref_out, ref_T, ref_dx, ref_ds0, ref_dp = _per_row_reference(
        spec, mod, params, x, state0, d_out, d_T, lengths, reverse)
    assert rel_error(out, ref_out) < 1e-12
    for t in range(x.shape[0]):  # padded outputs are exactly zero
        assert not np.asarray(out)[t, n <= t].any()
    for s in mod.STATE:
        assert rel_error(s_T[s], ref_T[s]) < 1e-12, s
        assert rel_error(d_s0[s], ref_ds0[s]) < 1e-10, s
    assert rel_error(d_x, ref_dx) < 1e-10
    for name in mod.PARAMS:
        assert rel_error(d_p[name], ref_dp[name]) < 1e-10, name


NN = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_torch_lengths_match_nn_with_a_packed_sequence(emitted, cell):
    """The emitted Torch module with lengths against nn.LSTM/GRU/RNN on the same batch packed
    (unsorted, enforce_sorted=False): outputs, final states and every parameter's .grad."""
    mod = emitted(cell, "torch")
    torch.manual_seed(0)
    I, H, lengths = 3, 4, torch.tensor([2, 5, 1, 4])
    T, B = int(lengths.max()), len(lengths)
    ref = NN[cell](I, H).double()
    x = torch.randn(T, B, I, dtype=torch.float64)
    state0 = {n: torch.randn(B, H, dtype=torch.float64) for n in mod.STATE}
    params = {n: getattr(ref, f"{n}_l0").detach().clone().requires_grad_() for n in mod.PARAMS}
    out, s_T, _ = mod.forward(x, state0, params, lengths=lengths)
    w = torch.randn(T, B, H, dtype=torch.float64)
    loss = (out * w).sum() + sum((s_T[n] ** 2).sum() for n in mod.STATE)
    loss.backward()

    hx = tuple(state0[n][None] for n in mod.STATE)
    packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
    ref_packed, ref_hn = ref(packed, hx if cell == "lstm" else hx[0])
    ref_out, _ = pad_packed_sequence(ref_packed, total_length=T)
    ref_hn = ref_hn if cell == "lstm" else (ref_hn,)
    ref_loss = (ref_out * w).sum() + sum((h[0] ** 2).sum() for h in ref_hn)
    ref_loss.backward()
    assert rel_error(out.detach(), ref_out.detach()) < 1e-12
    for n, h in zip(mod.STATE, ref_hn, strict=True):
        assert rel_error(s_T[n].detach(), h[0].detach()) < 1e-12, n
    for n in mod.PARAMS:
        assert rel_error(params[n].grad, getattr(ref, f"{n}_l0").grad) < 1e-10, n


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize(("lengths", "match"), [
    ([0, 2], r"lengths: every length must be in 1\.\.T = 3"),
    ([4, 2], r"lengths: every length must be in 1\.\.T = 3"),
    ([1.0, 2.0], r"lengths: expected 2 integers"),
    ([1, 2, 3], r"lengths: expected 2 integers"),
    ([[1, 2]], r"lengths: expected 2 integers"),
])
def test_bad_lengths_raise_value_error(runner, target, lengths, match):
    mod = runner("lstm", target)
    params, x, state0, _, _ = _problem(mod, (3, 3))
    with pytest.raises(ValueError, match=match):
        mod.forward(x, state0, params, lengths=np.array(lengths))


@pytest.mark.parametrize("target", TARGETS)
def test_full_lengths_equal_no_lengths(runner, target):
    mod = runner("gru", target)
    params, x, state0, d_out, d_T = _problem(mod, (4, 4))
    a = mod.forward(x, state0, params)
    b = mod.forward(x, state0, params, lengths=np.array([4, 4]))
    np.testing.assert_array_equal(np.asarray(a[0]), np.asarray(b[0]))
    ga = mod.backward(d_out, d_T, a[2])
    gb = mod.backward(d_out, d_T, b[2])
    for name in mod.PARAMS:
        np.testing.assert_array_equal(np.asarray(ga[2][name]), np.asarray(gb[2][name]))
