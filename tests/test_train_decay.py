"""The decay rate watched during training (issue 20): measured as `derive-cells decay` measures
it, on a fixed probe batch of the task's own sequences with burn-in, at the initial weights and
after every epoch; the horizon it predicts; the plot of both."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from derive_cells.derivation import derive
from derive_cells.spec import load_cell
from derive_cells.train.model import CELL, EMBEDDING, WEIGHT, init_params
from derive_cells.train.run import (
    DECAY_EPSILON,
    Config,
    Variant,
    horizon,
    probe_batch,
    train,
)
from derive_cells.train.tasks import make_task
from derive_cells.verify.decay.measurement import Setup, make_params, measure
from derive_cells.verify.modules import emit_and_import


def _variant(name: str, forget_bias=None) -> Variant:
    deriv = derive(load_cell(name))
    module = emit_and_import(deriv, "numpy", Path(tempfile.mkdtemp()))
    return Variant(name, deriv, {"numpy": module}, forget_bias)


def _decay_cli(*args: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "derive_cells.cli", "decay", *args, "--format",
                           "json"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.parametrize("name, forget_bias", [("rnn", None), ("lstm", 3.0), ("gru", None)])
def test_decay_rate_at_epoch_0_is_derive_cells_decay_rate_for_the_same_weights_and_probe(
        name, forget_bias):
    """(1) `derive-cells decay` (the command) gives the rate that measure() gives when handed
    the very weights, inputs, read-out and labels the command draws through the probe API
    (params=, inputs=, readout=, labels=); (2) a run's decay_rate at epoch 0 is measure()'s
    rate on the run's initial cell weights, its embedded probe batch with burn-in, and its
    read-out: so it is `derive-cells decay`'s rate for those weights and that probe."""
    v = _variant(name, forget_bias)
    T, B, H = 30, 4, 8
    cli = _decay_cli(name, "--steps", str(T), "--batch", str(B), "--hidden", str(H), "--seed",
                     "5", *(["--forget-bias", "3"] if forget_bias else []))
    setup = Setup(steps=T, batch=B, hidden=H, seed=5, forget_bias=forget_bias)
    rng = np.random.default_rng(5)  # measure()'s own order of draws
    params = make_params(v.modules["numpy"], v.deriv, setup, H, H, rng)
    x = rng.standard_normal((T, B, H))
    w = rng.uniform(-1 / math.sqrt(H), 1 / math.sqrt(H), H)
    labels = rng.integers(0, 2, B)
    explicit = measure(v.modules["numpy"], v.deriv, Setup(steps=T, batch=B, hidden=H, seed=99),
                       params=params, inputs=x, readout=w, labels=labels, theory=False)
    assert explicit.rate_per_step == pytest.approx(cli["rate_per_step"], rel=1e-12)

    task = make_task("distance", distance=6, n_train=64, n_test=40)
    config = Config(epochs=1, hidden=H, embed=5, seed=3)
    run = train(v, task, config)
    weights = init_params(v.modules["numpy"], v.deriv, task.train, config.embed, config.hidden,
                          config.seed, forget_bias, config.dtype)
    probe = probe_batch(task, config)
    tokens = probe.inputs.T  # (burn_in + steps, B)
    m = measure(v.modules["numpy"], v.deriv,
                Setup(steps=probe.steps, batch=len(probe.rows), hidden=H, input_size=5,
                      burn_in=probe.burn_in),
                params={n[len(CELL):]: p for n, p in weights.items() if n.startswith(CELL)},
                inputs=weights[EMBEDDING][tokens], readout=weights[WEIGHT],
                labels=probe.labels)
    state = run.decay["state"]
    assert run.epochs[0]["decay_rate"] == pytest.approx(m.rate_per_step[state], rel=1e-12)
    assert run.decay["rate_per_step"] == run.epochs[0]["decay_rate"]


def test_every_epoch_carries_a_decay_rate_and_the_run_its_predicted_horizon():
    task = make_task("sentiment", n_train=64, n_test=24)
    run = train(_variant("gru"), task, Config(epochs=3, hidden=6, embed=4))
    rates = [e["decay_rate"] for e in run.epochs]
    assert len(rates) == 4 and all(0 < r < 1 for r in rates)
    assert rates[1:] != [rates[0]] * 3  # measured at the weights of each epoch
    assert run.predicted_horizon == pytest.approx(math.log(DECAY_EPSILON) / math.log(rates[0]))
    assert run.decay["measurements"] == 4 and run.decay["seconds"] > 0
    assert json.loads(json.dumps(run.as_dict()))["epochs"][2]["decay_rate"] == rates[2]
    quiet = train(_variant("gru"), task, Config(epochs=1, hidden=6, embed=4), decay=False)
    assert quiet.predicted_horizon is None and quiet.epochs[1]["decay_rate"] is None


def test_horizon_is_where_the_rate_compounds_below_epsilon():
    assert horizon(0.5, 1e-3) == pytest.approx(math.log(1e-3) / math.log(0.5))
    assert 0.5 ** horizon(0.5) == pytest.approx(DECAY_EPSILON)
    assert horizon(1.0) is None and horizon(1.2) is None and horizon(None) is None


def test_the_probe_is_fixed_per_seed_from_the_test_rows_and_burns_in():
    task = make_task("distance", distance=4, n_train=64, n_test=40)
    a, b = probe_batch(task, Config(seed=1)), probe_batch(task, Config(seed=1))
    assert np.array_equal(a.inputs, b.inputs) and np.array_equal(a.rows, b.rows)
    assert not np.array_equal(a.inputs, probe_batch(task, Config(seed=2)).inputs)
    assert a.inputs.shape == (16, a.burn_in + a.steps) and a.burn_in >= 50
    for stream, row in zip(a.inputs, a.rows, strict=True):  # each ends with its own test row
        n = task.test.lengths[row]
        assert np.array_equal(stream[-n:], task.test.inputs[row, :n])
    assert np.array_equal(a.labels, task.test.targets[a.rows])
    assert 0 not in a.inputs  # the rows' own tokens only: no padding is fed


def test_burn_in_runs_the_first_steps_forward_only():
    """Measuring T steps after a burn-in of k is measuring the last T distances of the k + T
    step sequence: the same states, the same adjoints (the burn-in's own steps unmeasured)."""
    v = _variant("lstm", 3.0)
    H, B, k, T = 6, 3, 20, 25
    rng = np.random.default_rng(0)
    x, w, y = rng.standard_normal((k + T, B, H)), rng.uniform(-1, 1, H), np.array([0, 1, 1])
    setup = Setup(steps=T, batch=B, hidden=H, forget_bias=3.0, burn_in=k)
    burned = measure(v.modules["numpy"], v.deriv, setup, inputs=x, readout=w, labels=y,
                     theory=False)
    whole = measure(v.modules["numpy"], v.deriv, Setup(steps=k + T, batch=B, hidden=H,
                                                       forget_bias=3.0),
                    inputs=x, readout=w, labels=y, theory=False)
    for s in ("h", "c"):
        assert len(burned.log10_norm[s]) == T
        a, b = ([np.nan if v is None else v for v in m.log10_norm[s][:T]]
                for m in (burned, whole))
        np.testing.assert_allclose(a, b, rtol=1e-12)
        assert np.isfinite(a[1:]).all()
    with pytest.raises(ValueError, match="inputs must have shape"):
        measure(v.modules["numpy"], v.deriv, setup, inputs=x[:T], theory=False)


def test_a_sweep_plot_shows_accuracy_against_distance_and_the_decay_per_epoch(tmp_path):
    plot = tmp_path / "sweep.svg"
    done = subprocess.run([sys.executable, "-m", "derive_cells.cli", "train", "rnn", "gru",
                           "--task", "distance", "--distance", "2,4", "--epochs", "2",
                           "--hidden", "6", "--train-size", "64", "--test-size", "32",
                           "--target", "0.5", "--format", "json", "--plot", str(plot)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    runs = json.loads(done.stdout)["runs"]
    svg = plot.read_text()
    for name in ("rnn", "gru"):
        assert f'id="sweep-{name}"' in svg
        for d in (2, 4):
            assert f'id="decay-{name}-distance_{d}"' in svg
    for r in runs:  # a marker where (and only where) a run reached the target
        marked = f'id="reached-{r["cell"]}-distance_{r["info"]["distance"]}"' in svg
        assert marked == (r["reached"] is not None)
    assert "decay rate per step" in svg and "chance" in svg
    assert any(r["reached"] is not None for r in runs)
