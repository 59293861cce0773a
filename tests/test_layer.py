"""The nn.Module of every emitted Torch module (derive/emit/torch_layer.py): torch.nn.LSTM's
constructor, call and return conventions over forward().

References: torch.nn.LSTM/GRU/RNN with the same state_dict (layers, directions, batch_first,
padded input with lengths, PackedSequence, dropout), and for a user spec autograd over
verify/reference.py composed layer by layer and direction by direction, each row on its own.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import rel_error
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from derive_cells.derivation import derive
from derive_cells.emit.plan import make_plan
from derive_cells.emit.torch_layer import class_name, roles
from derive_cells.spec import load_cell
from derive_cells.verify import reference

SPECS = Path(__file__).parent / "specs"
NN = {"lstm": ("LSTM", lambda **k: torch.nn.LSTM(**k)),
      "gru": ("GRU", lambda **k: torch.nn.GRU(**k)),
      "rnn": ("RNN", lambda **k: torch.nn.RNN(**k)),
      "rnn_relu": ("RNNRelu", lambda **k: torch.nn.RNN(nonlinearity="relu", **k))}
F64 = torch.float64


def _pair(emitted, cell, **kw):
    """(ours, torch.nn's) with the same parameters, float64."""
    name, make = NN[cell]
    ours = getattr(emitted(cell, "torch"), name)(3, 4, dtype=F64, **kw)
    theirs = make(input_size=3, hidden_size=4, dtype=F64, **kw)
    theirs.load_state_dict(ours.state_dict())
    return ours, theirs


def _states(s):
    return s if isinstance(s, tuple) else (s,)


def _grads(module):
    return {n: p.grad.clone() for n, p in module.named_parameters()}


@pytest.mark.parametrize("kind", ["full", "lengths", "packed"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["time_major", "batch_first"])
@pytest.mark.parametrize("cell", list(NN))
def test_matches_torch_nn(emitted, cell, batch_first, kind):
    ours, theirs = _pair(emitted, cell, num_layers=2, bidirectional=True, batch_first=batch_first)
    T, B, D = 5, 4, 2
    g = torch.Generator().manual_seed(1)
    lengths = torch.tensor([3, 5, 1, 4]) if kind != "full" else torch.full((B,), T)
    x = torch.randn((B, T, 3) if batch_first else (T, B, 3), generator=g, dtype=F64)
    n_states = len(_states(theirs(x)[1]))
    hx = [torch.randn(2 * D, B, 4, generator=g, dtype=F64) for _ in range(n_states)]
    d_out = torch.randn((B, T, D * 4) if batch_first else (T, B, D * 4), generator=g, dtype=F64)
    d_T = [torch.randn(2 * D, B, 4, generator=g, dtype=F64) for _ in range(n_states)]
    mask = (torch.arange(T)[:, None] < lengths[None, :]).to(F64)[..., None]
    d_out = d_out * (mask.transpose(0, 1) if batch_first else mask)
    results = []
    for module in (ours, theirs):
        xi = x.clone().requires_grad_()
        hi = [h.clone().requires_grad_() for h in hx]
        h_arg = hi[0] if n_states == 1 else tuple(hi)
        if kind == "full":
            out, s = module(xi, h_arg)
        elif kind == "lengths" and module is ours:
            out, s = module(xi, h_arg, lengths=lengths)
        else:
            packed = pack_padded_sequence(xi, lengths, batch_first=batch_first,
                                          enforce_sorted=False)
            out, s = module(packed, h_arg)
            assert isinstance(out, torch.nn.utils.rnn.PackedSequence)
            if kind == "packed" and module is ours:
                reference_packed = theirs(packed, h_arg)[0]
                assert torch.equal(out.batch_sizes, reference_packed.batch_sizes)
                assert torch.equal(out.sorted_indices, reference_packed.sorted_indices)
                assert torch.equal(out.unsorted_indices, reference_packed.unsorted_indices)
            out = pad_packed_sequence(out, batch_first=batch_first, total_length=T)[0]
        s = _states(s)
        loss = (out * d_out).sum() + sum((a * b).sum() for a, b in zip(s, d_T, strict=True))
        module.zero_grad()
        loss.backward()
        results.append((out.detach(), [a.detach() for a in s], xi.grad, [h.grad for h in hi],
                        _grads(module)))
    (o1, s1, dx1, dh1, dp1), (o2, s2, dx2, dh2, dp2) = results
    assert rel_error(o1, o2) < 1e-12
    for a, b in zip(s1 + dh1, s2 + dh2, strict=True):
        assert rel_error(a, b) < 1e-12
    assert rel_error(dx1, dx2) < 1e-10
    assert dp1.keys() == dp2.keys()
    for name in dp1:
        assert rel_error(dp1[name], dp2[name]) < 1e-10, name


@pytest.mark.parametrize("cell", list(NN))
@torch.no_grad()
def test_dropout_matches_torch_nn(emitted, cell):
    ours, theirs = _pair(emitted, cell, num_layers=3, bidirectional=True, dropout=0.5)
    x = torch.randn(6, 3, 3, dtype=F64)
    ours.eval(), theirs.eval()
    evaluated = ours(x)[0]
    assert torch.equal(evaluated, theirs(x)[0]) or rel_error(evaluated, theirs(x)[0]) < 1e-14
    ours.train(), theirs.train()
    torch.manual_seed(7)
    trained = ours(x)[0]
    torch.manual_seed(7)
    reference_trained = theirs(x)[0]
    # the same dropout calls, in the same order, on the same shapes: the same masks
    assert rel_error(trained, reference_trained) < 1e-12
    assert rel_error(trained, evaluated) > 1e-3
    # without dropout, train and eval agree
    plain, _ = _pair(emitted, cell, num_layers=3, bidirectional=True)
    assert torch.equal(plain.train()(x)[0], plain.eval()(x)[0])


@pytest.mark.parametrize("cell", list(NN))
def test_state_dict_both_ways_and_no_bias(emitted, cell):
    name, make = NN[cell]
    theirs = make(input_size=3, hidden_size=4, num_layers=2, bidirectional=True)
    ours = getattr(emitted(cell, "torch"), name)(3, 4, num_layers=2, bidirectional=True)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(4, 2, 3)
    assert rel_error(ours(x)[0].detach(), theirs(x)[0].detach()) < 1e-5
    ours, theirs = _pair(emitted, cell, bias=False, num_layers=2)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    x = torch.randn(4, 2, 3, dtype=F64)
    assert rel_error(ours(x)[0].detach(), theirs(x)[0].detach()) < 1e-12


def test_reset_parameters_and_forget_bias(emitted):
    mod = emitted("lstm", "torch")
    layer = mod.LSTM(3, 16, num_layers=2, bidirectional=True)
    bound = 16 ** -0.5
    for p in layer.parameters():
        assert p.abs().max() <= bound and p.abs().max() > 0.8 * bound
    H = 4
    layer = mod.LSTM(3, H, num_layers=2, bidirectional=True, f=1.0, dtype=F64)
    for suffix in ("_l0", "_l0_reverse", "_l1", "_l1_reverse"):
        b_ih, b_hh = getattr(layer, "bias_ih" + suffix), getattr(layer, "bias_hh" + suffix)
        assert torch.equal(b_ih[H:2 * H] + b_hh[H:2 * H], torch.ones(H, dtype=F64))
        assert not torch.equal(b_ih[:H], torch.zeros(H, dtype=F64))  # other gates: random
    layer.reset_parameters()  # keeps the constructor's gate bias
    assert torch.equal(layer.bias_ih_l1[H:2 * H] + layer.bias_hh_l1[H:2 * H],
                       torch.ones(H, dtype=F64))
    with pytest.raises(TypeError, match=r"\['i', 'f', 'g', 'o'\]"):
        mod.LSTM(3, 4, forget=1.0)
    with pytest.raises(ValueError, match="bias=False"):
        mod.LSTM(3, 4, bias=False, f=1.0)
    gru = emitted("gru", "torch").GRU(3, H, z=2.0)
    assert torch.equal(gru.bias_ih_l0[H:2 * H], torch.full((H,), 2.0))
    assert torch.equal(gru.bias_hh_l0[H:2 * H], torch.zeros(H))


def test_roles_and_class_names():
    def table(cell):
        d = derive(load_cell(cell))
        return roles(d, make_plan(d))

    role, gates = table(str(SPECS / "peephole_lstm.toml"))
    assert role["p_i"] == ("elementwise", "i") and role["p_o"] == ("elementwise", "o")
    assert role["b_f"] == ("bias", "f") and gates["f"] == ("b_f",)
    role, gates = table("gru")
    assert gates["n"] == ("b_in", "b_hn") and gates["z"] == ("b_iz", "b_hz")
    role, _ = table(str(SPECS / "indrnn.toml"))
    assert role == {"u": ("elementwise", "h"), "b": ("bias", "h")}
    names = {c: class_name(c, set()) for c in
             ("lstm", "gru", "rnn", "rnn_relu", "simplified_gru", "peephole_lstm", "indrnn")}
    assert names == {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN", "rnn_relu": "RNNRelu",
                     "simplified_gru": "SimplifiedGRU", "peephole_lstm": "PeepholeLSTM",
                     "indrnn": "IndRNN"}
    assert class_name("cell_function", {"CellFunction"}) == "CellFunctionLayer"
    assert class_name("none", set()) == "NoneLayer"
    assert class_name("type_error", set()) == "TypeErrorLayer"


def test_user_spec_against_reference(emitted):
    spec_path = str(SPECS / "peephole_lstm.toml")
    mod, cell = emitted(spec_path, "torch"), load_cell(spec_path)
    layer = mod.PeepholeLSTM(3, 4, num_layers=2, bidirectional=True, dtype=F64)
    T, B, L, D = 5, 3, 2, 2
    lengths = [4, 5, 2]
    x = torch.randn(T, B, 3, dtype=F64, requires_grad=True)
    hx = tuple(torch.randn(L * D, B, 4, dtype=F64, requires_grad=True) for _ in mod.STATE)
    d_out = torch.randn(T, B, D * 4, dtype=F64)
    d_T = [torch.randn(L * D, B, 4, dtype=F64) for _ in mod.STATE]
    out, final = layer(x, hx, lengths=torch.tensor(lengths))
    loss = (out * d_out).sum() + sum((a * b).sum() for a, b in zip(final, d_T, strict=True))
    ours = torch.autograd.grad(loss, [x, *hx, *layer.parameters()])

    names = [n for n, _ in layer.named_parameters()]
    params = [p.detach().clone().requires_grad_() for p in layer.parameters()]
    by_name = dict(zip(names, params, strict=True))
    ref_out = torch.zeros(T, B, D * 4, dtype=F64)
    ref_final = [[[None] * B for _ in range(L * D)] for _ in mod.STATE]
    for b, n in enumerate(lengths):
        inp = x[:n, b:b + 1]
        for k in range(L):
            outs = []
            for direction in range(D):
                j = k * D + direction
                suffix = f"_l{k}" + ("_reverse" if direction else "")
                p = {name: by_name[name + suffix] for name in mod.PARAMS}
                s0 = {s: h[j, b:b + 1] for s, h in zip(mod.STATE, hx, strict=True)}
                seq = inp.flip(0) if direction else inp
                o, s_T = reference.run(cell, seq, s0, p)
                outs.append(o.flip(0) if direction else o)
                for m, s in enumerate(mod.STATE):
                    ref_final[m][j][b] = s_T[s][0]
            inp = torch.cat(outs, dim=2)
        ref_out = ref_out.index_put((torch.arange(n), torch.tensor([b])), inp[:, 0])
    ref_final = [torch.stack([torch.stack(row) for row in f]) for f in ref_final]
    assert rel_error(out.detach(), ref_out.detach()) < 1e-12
    for a, r in zip(final, ref_final, strict=True):
        assert rel_error(a.detach(), r.detach()) < 1e-12
    ref_loss = (ref_out * d_out).sum() + sum((a * b).sum()
                                             for a, b in zip(ref_final, d_T, strict=True))
    ref = torch.autograd.grad(ref_loss, [x, *hx, *params])
    for name, a, r in zip(["x", *mod.STATE, *names], ours, ref, strict=True):
        assert rel_error(a, r) < 1e-10, name


def test_unbatched_and_hx_shape(emitted):
    layer = emitted("lstm", "torch").LSTM(3, 4, num_layers=2, dtype=F64)
    x = torch.randn(5, 3, dtype=F64)
    out, (h, c) = layer(x)
    out1, (h1, c1) = layer(x[:, None])
    assert out.shape == (5, 4) and h.shape == (2, 4)
    assert torch.equal(out, out1[:, 0]) and torch.equal(c, c1[:, 0])
    with pytest.raises(ValueError, match=r"hx\['c'\]"):
        layer(x[:, None], (torch.zeros(2, 1, 4, dtype=F64), torch.zeros(1, 1, 4, dtype=F64)))


def test_autocast_bfloat16_training_step(emitted):
    torch.manual_seed(0)
    layer = emitted("lstm", "torch").LSTM(3, 8, num_layers=2, bidirectional=True, f=1.0)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
    x, target = torch.randn(6, 4, 3), torch.randn(6, 4, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, (h, c) = layer(x, lengths=torch.tensor([6, 3, 5, 1]))
        loss = ((out.float() - target) ** 2).mean()
    assert out.dtype == torch.bfloat16 and torch.isfinite(loss)
    loss.backward()
    for p in layer.parameters():
        assert p.grad is not None and p.grad.dtype == torch.float32
        assert torch.isfinite(p.grad).all()
    optimizer.step()


@pytest.mark.parametrize("cell", list(NN))
def test_nonfinite_input_gives_nonfinite_grads(emitted, cell):
    ours, theirs = _pair(emitted, cell, num_layers=2)
    x = torch.randn(5, 2, 3, dtype=F64)
    x[2, 1, 0] = float("inf")
    for module in (ours, theirs):
        out, _ = module(x)
        out.sum().backward()  # no error: a GradScaler would skip the step
        assert not all(torch.isfinite(p.grad).all() for p in module.parameters())


def test_grad_scaler_skips_a_step_with_an_infinity(emitted):
    """torch.amp.GradScaler finds the non-finite gradients, skips the optimizer step and lowers
    its scale; the next, finite step goes through."""
    layer = emitted("lstm", "torch").LSTM(3, 4, num_layers=2)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    before = {n: p.detach().clone() for n, p in layer.named_parameters()}
    x = torch.randn(5, 2, 3)
    x[1, 0, 2] = float("inf")
    for batch, skipped in ((x, True), (torch.randn(5, 2, 3), False)):
        optimizer.zero_grad()
        out, _ = layer(batch)
        scaler.scale(out.square().mean()).backward()
        scale = scaler.get_scale()
        scaler.step(optimizer)
        scaler.update()
        same = all(torch.equal(p, before[n]) for n, p in layer.named_parameters())
        assert same == skipped
        assert (scaler.get_scale() < scale) == skipped


@pytest.mark.parametrize("spec", ["no_matrix_product", "readout", "indrnn", "name_clash",
                                  "unused_param", "dotted_name"])
def test_user_specs_build_and_run(emitted, spec):
    """Any spec's layer runs, 2 layers, both directions, hx=None (zeros fix H even where no
    parameter does), bias=False included."""
    mod = emitted(str(SPECS / f"{spec}.toml"), "torch")
    cls = next(v for v in vars(mod).values()
               if isinstance(v, type) and issubclass(v, torch.nn.Module))
    for bias in (True, False):
        layer = cls(3, 4, num_layers=2, bidirectional=True, bias=bias, dtype=F64)
        x = torch.randn(5, 2, 3, dtype=F64, requires_grad=True)
        out, final = layer(x, lengths=torch.tensor([5, 3]))
        assert out.shape == (5, 2, 8)
        assert torch.equal(out[3:, 1], torch.zeros(2, 8, dtype=F64))
        final = final if isinstance(final, tuple) else (final,)
        (out.sum() + sum(s.sum() for s in final)).backward()
        assert x.grad is not None and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("batch_first", [False, True], ids=["time_major", "batch_first"])
@pytest.mark.parametrize("cell", list(NN))
def test_empty_batch_as_torch_nn(emitted, cell, batch_first):
    """B = 0: empty output and final states of torch.nn's shapes, and backward runs, giving
    torch.nn's (zero) gradients."""
    ours, theirs = _pair(emitted, cell, num_layers=2, bidirectional=True,
                         batch_first=batch_first)
    shape = (0, 5, 3) if batch_first else (5, 0, 3)
    results = []
    for module in (ours, theirs):
        x = torch.zeros(shape, dtype=F64, requires_grad=True)
        hx = [torch.zeros(4, 0, 4, dtype=F64, requires_grad=True)
              for _ in _states(theirs(x)[1])]
        for given in (None, hx[0] if len(hx) == 1 else tuple(hx)):
            out, final = module(x, given)
            module.zero_grad()
            (out.sum() + sum(s.sum() for s in _states(final))).backward()
            results.append((out.shape, [s.shape for s in _states(final)], x.grad.shape,
                            {n: p.grad for n, p in module.named_parameters()}))
    for (o1, s1, dx1, dp1), (o2, s2, dx2, dp2) in zip(results[:2], results[2:], strict=True):
        assert o1 == o2 == ((0, 5, 8) if batch_first else (5, 0, 8))
        assert s1 == s2 == [(4, 0, 4)] * len(s1)
        assert dx1 == dx2 == shape
        assert dp1.keys() == dp2.keys()
        for name in dp1:
            assert torch.equal(dp1[name], dp2[name]), name


def test_empty_batch_of_a_user_spec(emitted):
    mod = emitted(str(SPECS / "no_matrix_product.toml"), "torch")
    cls = next(v for v in vars(mod).values()
               if isinstance(v, type) and issubclass(v, torch.nn.Module))
    out, final = cls(3, 4, num_layers=2, bidirectional=True, dtype=F64)(
        torch.zeros(5, 0, 3, dtype=F64))
    assert out.shape == (5, 0, 8)
    assert all(s.shape == (4, 0, 4) for s in _states(final))


@pytest.mark.parametrize(("shape", "batch_first"), [((0, 2, 3), False), ((2, 0, 3), True),
                                                    ((0, 3), False)],
                         ids=["time_major", "batch_first", "unbatched"])
def test_no_time_steps_is_refused_naming_the_input(emitted, shape, batch_first):
    """torch.nn.LSTM refuses T = 0 ('Expected sequence length to be larger than 0'); so does the
    layer, with a message that names the input, its shape and what is missing."""
    ours, theirs = _pair(emitted, "lstm", batch_first=batch_first)
    x = torch.zeros(shape, dtype=F64)
    with pytest.raises(RuntimeError, match="sequence length"):
        theirs(x)
    with pytest.raises(ValueError, match=r"^input: no time steps \(T = 0, input shape "
                       + repr(shape).replace("(", r"\(").replace(")", r"\)")):
        ours(x)


def test_hx_entries_none_start_at_zeros(emitted):
    layer = emitted("lstm", "torch").LSTM(3, 4, num_layers=2, dtype=F64)
    x = torch.randn(5, 2, 3, dtype=F64)
    h0, zeros = torch.randn(2, 2, 4, dtype=F64), torch.zeros(2, 2, 4, dtype=F64)
    out, (h, c) = layer(x)
    for hx in ((None, None), [None, None]):
        out1, (h1, c1) = layer(x, hx)
        assert torch.equal(out1, out) and torch.equal(h1, h) and torch.equal(c1, c)
    out1, (h1, c1) = layer(x, (h0, None))
    out2, (h2, c2) = layer(x, (h0, zeros))
    assert torch.equal(out1, out2) and torch.equal(c1, c2)
    assert not torch.equal(out1, out)
    out1, (h1, c1) = layer(x[:, 0], (None, zeros[:, 0]))  # unbatched
    assert rel_error(out1.detach(), out[:, 0].detach()) < 1e-14
    with pytest.raises(ValueError, match=r"hx\['h'\]: expected a tensor .* or None .*got int"):
        layer(x, (1, None))
    gru = emitted("gru", "torch").GRU(3, 4, dtype=F64)
    assert torch.equal(gru(x, (None,))[0], gru(x)[0])


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), "1.0", None,
                                   torch.tensor([0.0, float("nan")])])
def test_gate_bias_must_be_finite(emitted, value):
    mod = emitted("lstm", "torch")
    with pytest.raises(ValueError, match=r"LSTM: the bias of gate 'f' must be a finite number"):
        mod.LSTM(8, 16, f=value)
    layer = mod.LSTM(8, 16, f=2)
    before = {n: p.clone() for n, p in layer.named_parameters()}
    with pytest.raises(ValueError, match="finite number"):
        layer.set_gate_bias("f", value)
    assert all(torch.equal(p, before[n]) for n, p in layer.named_parameters())
    assert torch.isfinite(layer(torch.randn(3, 2, 8))[0]).all()


@pytest.mark.parametrize("form", ["time_major", "batch_first", "unbatched", "packed"])
def test_wrong_input_size_names_the_input(emitted, form):
    layer = emitted("lstm", "torch").LSTM(8, 16, batch_first=form == "batch_first")
    x = torch.randn(5, 8, 7)[:, :3] if form != "unbatched" else torch.randn(5, 7)
    if form == "packed":
        x = pack_padded_sequence(x, torch.tensor([5, 4, 2]))
    with pytest.raises(ValueError, match=r"^input: expected input_size = 8 features in its last "
                       r"dimension, got 7 \(input shape") as info:
        layer(x)
    assert "params" not in str(info.value)
