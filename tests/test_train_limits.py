"""`derive-cells train` and Cell.train: one validation for both, a memory and time budget checked
before anything large is made, progress of the decay measurement, and Ctrl-C (exit 130 with the
finished runs written)."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import derive_cells
from derive_cells.derivation import derive
from derive_cells.spec import load_cell
from derive_cells.train import budget as train_budget
from derive_cells.train import experiment
from derive_cells.train.cli import train as train_command
from derive_cells.train.run import (
    CHOICES,
    FLOAT_RANGES,
    INT_RANGES,
    Config,
    Variant,
    train,
)
from derive_cells.train.tasks import VOCAB, make_task
from derive_cells.verify.modules import emit_and_import

ROOT = Path(__file__).parent.parent


def cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "derive_cells.cli", "train", *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=timeout)


# --- one validation for the command line and the API -------------------------------------------

REFUSED = [
    ({"lr": -0.1}, "lr"), ({"lr": 0}, "lr"), ({"lr": math.nan}, "lr"), ({"lr": 1e3}, "lr"),
    ({"clip": -1.0}, "clip"), ({"clip": math.nan}, "clip"), ({"clip": math.inf}, "clip"),
    ({"epochs": 0}, "epochs"), ({"epochs": -3}, "epochs"), ({"epochs": 2.5}, "epochs"),
    ({"epochs": True}, "epochs"), ({"backend": "jax"}, "backend"),
    ({"target": math.nan}, "target"), ({"target": -1}, "target"),
    ({"hidden": 0}, "hidden"), ({"batch_size": 0}, "batch_size"), ({"embed": 2000}, "embed"),
    ({"optimizer": "rmsprop"}, "optimizer"), ({"dtype": "float16"}, "dtype"),
    ({"seed": -1}, "seed"),
]


@pytest.mark.parametrize("kwargs, name", REFUSED)
def test_config_refuses_what_the_command_line_refuses(kwargs, name):
    with pytest.raises(ValueError, match=name):
        Config(**kwargs)


@pytest.mark.parametrize("kwargs, name", REFUSED[:14])
def test_cell_train_refuses_before_it_trains(kwargs, name):
    cell = derive_cells.load("rnn")
    start = time.perf_counter()
    with pytest.raises(ValueError, match=name):
        cell.train(**kwargs)
    assert time.perf_counter() - start < 5


@pytest.mark.parametrize("kwargs, message", [
    ({"task": "nope"}, "unknown task"),
    ({"task": "sentiment", "distances": [3]}, "distance task only"),
    ({"task": "distance", "distances": [-1]}, "distances must be"),
    ({"task": "distance", "distances": []}, "distances must be"),
    ({"task": "adding", "steps": [1]}, "steps must be"),
    ({"train_size": 0}, "train_size"),
    ({"test_size": 10**6}, "test_size"),
    ({"forget_bias": math.nan}, "forget biases"),
    ({"forget_bias": [0, 1e3]}, "forget biases"),
])
def test_cell_train_refuses_the_experiment_s_settings_as_the_command_line_does(kwargs, message):
    with pytest.raises(ValueError, match=message):
        derive_cells.load("lstm").train(**kwargs)


def test_the_command_line_s_ranges_are_the_config_s():
    """The click options are built from the same tables Config checks."""
    options = {p.name: p for p in train_command.params}
    for name, (low, high) in INT_RANGES.items():
        kind = options[name].type
        assert (kind.min, kind.max) == (low, high), name
    for name, (low, high) in FLOAT_RANGES.items():
        kind = options[name].type
        assert (kind.min, kind.max) == (low, high), name
    for name, allowed in CHOICES.items():
        assert tuple(options[name].type.choices) == allowed, name
    for name, (low, high) in experiment.SIZE_RANGES.items():
        assert (options[name].type.min, options[name].type.max) == (low, high)
    assert (options["distances"].type.low, options["distances"].type.high) == \
        experiment.SWEEP_RANGES["distance"]
    assert (options["steps"].type.low, options["steps"].type.high) == \
        experiment.SWEEP_RANGES["steps"]
    assert options["forget_bias"].type.limit == experiment.FORGET_BIAS_LIMIT


def test_config_normalizes_what_it_accepts():
    config = Config(clip=0, lr=1, epochs=3)
    assert config.clip is None  # 0: no clipping, as --clip 0
    assert isinstance(config.lr, float) and config.learning_rate == 1.0


@pytest.mark.parametrize("args, message", [
    (["--lr", "-0.1"], "--lr"), (["--lr", "0"], "--lr"), (["--clip", "nan"], "--clip"),
    (["--clip", "-1"], "--clip"), (["--epochs", "0"], "--epochs"),
    (["--backend", "jax"], "--backend"), (["--target", "nan"], "--target"),
])
def test_cli_refuses_the_same_values(args, message):
    done = cli("rnn", "--no-decay", *args)
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


# --- the budget -------------------------------------------------------------------------------

@pytest.mark.parametrize("args, message", [
    # the data alone: 200000 sequences of 2000 steps
    (["lstm", "--task", "adding", "--steps", "2000", "--train-size", "200000", "--no-decay"],
     "the data would take"),
    # one training step's saved forward values: 2000 rows x 2000 steps x H = 512
    (["lstm", "--task", "adding", "--steps", "2000", "--batch-size", "100000", "--hidden",
      "512", "--no-decay"], "a training step of 2000 rows of 2000 steps"),
    # the decay measurement that `derive-cells decay` refuses (step-Jacobian spectra)
    (["lstm", "--hidden", "1024"], "measuring the gradient decay"),
    # time: days of training
    (["rnn", "--epochs", "10000", "--train-size", "200000", "--no-decay"], "would take about"),
    # --check keeps the same memory budget
    (["lstm", "--check", "--task", "adding", "--steps", "2000", "--batch-size", "5000",
      "--train-size", "5000", "--hidden", "256"], "a training step of"),
])
def test_cli_refuses_a_run_over_budget_before_it_starts(args, message):
    start = time.perf_counter()
    done = cli(*args, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr
    assert "Traceback" not in done.stderr and "MemoryError" not in done.stderr
    assert time.perf_counter() - start < 60  # refused, not attempted


def test_cell_train_refuses_a_run_over_budget():
    with pytest.raises(ValueError, match="the data would take"):
        derive_cells.load("rnn").train(task="adding", steps=[2000], train_size=200_000)
    with pytest.raises(ValueError, match="would take about"):
        derive_cells.load("rnn").train(epochs=10_000, train_size=200_000, decay=False)


@pytest.mark.parametrize("name, hidden, features", [("gru", 48, None), ("lstm", 24, 2),
                                                     ("rnn", 64, 2)])
def test_the_memory_estimate_bounds_the_traced_peak(name, hidden, features):
    """Fitted at small sizes, the training step's bytes hold at the run's size: at or above the
    traced peak, by at most the margin and a little."""
    from derive_cells.train.model import NumpyModel, init_params

    deriv = derive(load_cell(name))
    module = emit_and_import(deriv, "numpy", Path(tempfile.mkdtemp()))
    shape = train_budget.Shape(400, 100, 90, None if features else len(VOCAB), features)
    config = Config(hidden=hidden)
    cost = train_budget.step_cost(module, deriv, shape, config)
    batch = train_budget._batch(shape, 400, 90)
    params = init_params(module, deriv, batch, config.embed, hidden, 0, None, config.dtype)
    model = NumpyModel(module, params, "binary")
    traced = train_budget._peak(lambda: model.gradients(batch))
    assert traced <= cost.memory(400, 90) <= 1.2 * traced


def test_the_estimate_is_given_before_the_first_run():
    seen = []
    deriv = derive(load_cell("gru"))
    result = experiment.run_task([deriv], "distance", Config(epochs=1, hidden=4),
                                 distances=[2, 3], train_size=32, test_size=8, decay=False,
                                 estimated=seen.append)
    (estimate,) = seen
    assert estimate.runs == len(result["runs"]) == 2
    assert 0 < estimate.memory < 2**30 and 0 < estimate.seconds < 60
    assert "2 runs, about" in estimate.describe()


def test_the_decay_measurement_shows_progress():
    deriv = derive(load_cell("lstm"))
    module = emit_and_import(deriv, "numpy", Path(tempfile.mkdtemp()))
    task = make_task("sentiment", n_train=32, n_test=8)
    messages = []
    run = train(Variant("lstm", deriv, {"numpy": module}), task, Config(epochs=1, hidden=4),
                progress=messages.append)
    assert run.decay is not None
    first = next(i for i, m in enumerate(messages) if "measuring the gradient decay" in m)
    done = next(i for i, m in enumerate(messages) if "gradient decay measured" in m)
    assert first < done < next(i for i, m in enumerate(messages) if "epoch 1/1" in m)
    assert "T=50 steps of the task's test rows, B=16, H=4" in messages[first]


# --- Ctrl-C ------------------------------------------------------------------------------------

DRIVER = """
import signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with it ignored
from derive_cells.train import cli as train_cli
train_cli.PROGRESS_AFTER = -1.0  # progress from the start, so the test can wait for a run
from derive_cells.cli import main
sys.argv = ["derive-cells", "train", *sys.argv[1:]]
main()
"""

# a first run of a few milliseconds, then runs over hundreds of steps
SWEEP = ["rnn", "--task", "distance", "--distance", "2,400,800", "--train-size", "64",
         "--test-size", "16", "--epochs", "3", "--hidden", "4", "--no-decay"]


def interrupt_after(args: list[str], line: str, tmp_path: Path):
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    proc = subprocess.Popen([sys.executable, str(driver), *args], cwd=tmp_path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen = []
    for text in proc.stderr:
        seen.append(text)
        if line in text:
            proc.send_signal(signal.SIGINT)
            break
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, "".join(seen) + err


def test_ctrl_c_writes_the_finished_runs_json_to_the_output_file(tmp_path):
    output = tmp_path / "runs.json"
    rc, out, err = interrupt_after([*SWEEP, "--format", "json", "-o", str(output)],
                                   "run 1/3 done", tmp_path)
    assert rc == 130, err
    assert "interrupted; 1 of 3 runs finished, written to" in err
    assert "Traceback" not in err and "Aborted" not in err
    result = json.loads(output.read_text())
    assert result["interrupted"] == {"finished": 1, "planned": 3}
    (run,) = result["runs"]
    assert run["cell"] == "rnn" and run["info"]["distance"] == 2 and len(run["epochs"]) == 4


def test_ctrl_c_prints_the_finished_runs_table(tmp_path):
    rc, out, err = interrupt_after(SWEEP, "run 1/3 done", tmp_path)
    assert rc == 130, err
    assert "interrupted (Ctrl-C): 1 of 3 runs finished" in out
    rows = [line for line in out.splitlines() if line.startswith("rnn ")]
    assert len(rows) == 1 and rows[0].split()[1] == "2"


def test_ctrl_c_before_a_run_finished_writes_nothing(tmp_path):
    args = ["rnn", "--task", "distance", "--distance", "600", "--train-size", "64",
            "--test-size", "16", "--epochs", "50", "--hidden", "4", "--no-decay"]
    rc, out, err = interrupt_after(args, "epoch 1/50", tmp_path)
    assert rc == 130, err
    assert "interrupted before the first run finished" in err and out == ""
    assert "Traceback" not in err

