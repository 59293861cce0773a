"""Fresh training rows every epoch (disjoint from the fixed test set, reproducible by seed), and
--gate-bias / chrono initialisation setting exactly the stated biases, on the NumPy model and on
the emitted nn.Module layer."""

from __future__ import annotations

import numpy as np
import pytest

from derive_cells.command import load_cells
from derive_cells.derivation import derive
from derive_cells.train import experiment
from derive_cells.train.model import CELL, init_params
from derive_cells.train.tasks import _keys, adding, distance, sentiment


def _rows(ds):
    return [ds.inputs[n, : ds.lengths[n]].tobytes() for n in range(len(ds))]


@pytest.mark.parametrize("make", [lambda s: sentiment(s, 300, 200),
                                  lambda s: distance(0, s, 300, 200),
                                  lambda s: distance(12, s, 300, 200),
                                  lambda s: adding(10, s, 300, 200)])
def test_fresh_rows_differ_per_epoch_avoid_the_test_set_and_follow_the_seed(make):
    task, again, other = make(0), make(0), make(1)
    assert task.fresh and task.epoch_rows(1) is task.train
    epochs = [task.epoch_rows(e) for e in (1, 2, 3)]
    assert len({tuple(_rows(e)) for e in epochs}) == 3  # rows differ between epochs
    test = _keys(task.test)
    for e in epochs:
        assert len(e) == 300 and not test & set(_rows(e))  # no test row is ever trained on
    for e in (1, 2, 5):  # reproducible by seed, different for another seed
        a, b = task.epoch_rows(e), again.epoch_rows(e)
        assert np.array_equal(a.inputs, b.inputs) and np.array_equal(a.targets, b.targets)
        assert not np.array_equal(a.targets, other.epoch_rows(e).targets) or not np.array_equal(
            a.inputs[:, :3], other.epoch_rows(e).inputs[:, :3])
    assert np.array_equal(task.test.inputs, again.test.inputs)


def test_distance_zero_collides_without_exclusion_and_never_with_it():
    """At d = 0 a one-word row is just the decisive word: the test set holds some of them, so
    training rows must be drawn again to stay disjoint."""
    task = distance(0, 0, 2000, 500, prefix=(0, 1))
    assert (task.test.lengths == 1).any()
    for e in (1, 2):
        assert not _keys(task.test) & set(_rows(task.epoch_rows(e)))
    assert np.mean(task.train.targets) == 0.5


def test_adding_targets_are_the_marked_sums():
    rows = adding(8, 3, 50, 20).epoch_rows(2)
    marked = rows.inputs[:, :, 1] == 1
    assert (marked.sum(axis=1) == 2).all()
    np.testing.assert_allclose(rows.targets, (rows.inputs[:, :, 0] * marked).sum(axis=1))


def _deriv(name):
    return derive(load_cells([name], "test")[0])


def _blocks(name, seed=0, **init):
    from derive_cells.verify.modules import emit_and_import

    d = _deriv(name)
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        module = emit_and_import(d, "numpy", Path(tmp))
    params = init_params(module, d, sentiment(0, 4, 4).train, 5, 6, seed, None, "float64",
                         **init)
    H = 6
    out = {}
    for name_, members in module.BLOCKS.items():
        for j, m in enumerate(members):
            if params[CELL + name_].ndim == 1:
                out[m] = params[CELL + name_][j * H:(j + 1) * H]
    return out


def test_gate_bias_sets_the_first_bias_and_zeroes_the_others_numpy():
    lstm = _blocks("lstm", gate_bias={"f": 3.0})
    assert (lstm["b_if"] == 3.0).all() and (lstm["b_hf"] == 0.0).all()
    gru = _blocks("gru", gate_bias={"z": -2.5})
    assert (gru["b_iz"] == -2.5).all() and (gru["b_hz"] == 0.0).all()
    assert (np.abs(gru["b_ir"]) <= 6 ** -0.5).all()  # other gates untouched


def test_chrono_sets_log_uniform_biases_numpy_seeded():
    T = 160
    a, b = _blocks("lstm", chrono=T), _blocks("lstm", chrono=T)
    bf = a["b_if"]
    assert ((bf >= 0) & (bf <= np.log(T - 1))).all() and np.unique(bf).size == bf.size
    np.testing.assert_array_equal(a["b_ii"], -bf)
    assert (a["b_hf"] == 0).all() and (a["b_hi"] == 0).all()
    np.testing.assert_array_equal(bf, b["b_if"])  # deterministic for a seed
    assert not np.array_equal(bf, _blocks("lstm", seed=1, chrono=T)["b_if"])
    gru = _blocks("gru", chrono=T)
    assert ((gru["b_iz"] >= 0) & (gru["b_iz"] <= np.log(T - 1))).all()
    assert (gru["b_hz"] == 0).all()
    sg = _blocks("simplified_gru", chrono=T)  # keeps with 1 - Gamma_u: b_u = -log u
    assert ((sg["b_u"] <= 0) & (sg["b_u"] >= -np.log(T - 1))).all()
    with pytest.raises(ValueError, match="keeping gate"):
        _blocks("rnn", chrono=T)


def test_emitted_layer_gate_bias_and_chrono():
    torch = pytest.importorskip("torch")
    import tempfile
    from pathlib import Path

    from derive_cells.verify.modules import emit_and_import

    with tempfile.TemporaryDirectory() as tmp:
        lstm = emit_and_import(_deriv("lstm"), "torch", Path(tmp))
        gru = emit_and_import(_deriv("gru"), "torch", Path(tmp))
        rnn = emit_and_import(_deriv("rnn"), "torch", Path(tmp))
    H, T = 5, 40
    torch.manual_seed(0)
    layer = lstm.LSTM(3, H, num_layers=2, bidirectional=True, init="chrono", tmax=T)
    for k in ("_l0", "_l1", "_l0_reverse"):
        b_ih, b_hh = getattr(layer, "bias_ih" + k), getattr(layer, "bias_hh" + k)
        bi, bf = b_ih[:H], b_ih[H:2 * H]
        assert ((bf >= 0) & (bf <= np.log(T - 1) + 1e-6)).all()
        assert torch.equal(bi, -bf) and (b_hh[:2 * H] == 0).all()
    torch.manual_seed(0)
    again = lstm.LSTM(3, H, num_layers=2, bidirectional=True, init="chrono", tmax=T)
    assert torch.equal(again.bias_ih_l0, layer.bias_ih_l0)  # seeded by torch's generator
    z = gru.GRU(3, H, z=3.0)
    assert (z.bias_ih_l0[H:2 * H] == 3).all() and (z.bias_hh_l0[H:2 * H] == 0).all()
    g = gru.GRU(3, H, init="chrono", tmax=T, z=1.0)  # keyword gate biases after chrono
    assert (g.bias_ih_l0[H:2 * H] == 1).all()
    with pytest.raises(ValueError, match="keeping gate"):
        rnn.RNN(3, H, init="chrono", tmax=T)
    with pytest.raises(ValueError, match="tmax"):
        lstm.LSTM(3, H, init="chrono")
    with pytest.raises(ValueError, match="tmax"):
        lstm.LSTM(3, H, init="chrono", tmax=2)


def test_variants_and_labels_per_gate_and_chrono(tmp_path):
    derivs = [_deriv(n) for n in ("rnn", "lstm", "gru")]
    chosen = experiment._variants(derivs, None, tmp_path, ("numpy",),
                                  {"f": [0.0, 3.0], "z": [3.0]}, 160)
    assert [v.label for v in chosen] == ["rnn", "lstm (b_f=0)", "lstm (b_f=3)",
                                         "lstm (chrono, T_max=160)", "gru (b_z=3)",
                                         "gru (chrono, T_max=160)"]
    with pytest.raises(experiment.ExperimentError, match="gates whose bias can be set are"):
        experiment._variants(derivs, None, tmp_path, ("numpy",), {"q": [1.0]})
    with pytest.raises(experiment.ExperimentError, match="keeping gate"):
        experiment._variants(derivs[:1], None, tmp_path, ("numpy",), None, 160)
    for bad in ({"init": "chrono"}, {"tmax": 10}, {"init": "chrono", "tmax": 2},
                {"gate_biases": {"f": [float("nan")]}}):
        with pytest.raises(experiment.ExperimentError):
            experiment.check_settings("sentiment", **bad)


def test_cli_unknown_gate_exits_2_naming_the_gates():
    from click.testing import CliRunner

    from derive_cells.train.cli import train

    done = CliRunner().invoke(train, ["lstm", "--gate-bias", "q=1", "--no-decay", "--epochs",
                                      "1", "--train-size", "8", "--test-size", "8"])
    assert done.exit_code == 2 and "i, f, g, o" in done.output


def test_default_keeps_pytorch_init_and_chrono_is_one_more_run(tmp_path):
    """z=default,3: one run with PyTorch's initialisation of z and one with b_z = 3; chrono adds a
    run beside a cell's others (simplified_gru, with no gate given, keeps its default run)."""
    derivs = [_deriv(n) for n in ("gru", "simplified_gru")]
    chosen = experiment._variants(derivs, None, tmp_path, ("numpy",), {"z": [None, 3.0]}, 160)
    assert [v.label for v in chosen] == ["gru", "gru (b_z=3)", "gru (chrono, T_max=160)",
                                         "simplified_gru", "simplified_gru (chrono, T_max=160)"]
    assert [v.gate_bias for v in chosen] == [None, {"z": 3.0}, None, None, None]
    from click.testing import CliRunner

    from derive_cells.train.cli import GateBias, train

    assert GateBias(10).convert("z=default,3", None, None) == ("z", [None, 3.0])
    done = CliRunner().invoke(train, ["gru", "--gate-bias", "z=default", "--gate-bias", "z=x",
                                      "--no-decay"])
    assert done.exit_code == 2
