"""`derive-cells train`: the article's model trained with the derived gradients."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from derive_cells.cli import (
    OUTPUT_PATH,
    FiniteFloat,
    check_outputs,
    fail,
    load_cells,
    spec_files,
    write_output,
)

COMMAND = "derive-cells train"
PLOT_FORMATS = {".svg": "svg", ".png": "png"}
PROGRESS_AFTER = 2.0  # seconds: shorter commands print no progress


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


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _table(rows: list[tuple]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def runs_table(result: dict) -> str:
    """One row per run, then (for a sweep) the test metric per cell and task parameter."""
    runs, key = result["runs"], result.get("sweep")
    metric = runs[0]["metric"]
    name = "acc" if metric == "accuracy" else "MSE"
    head = ["cell"] + ([key] if key else []) + [
        "train loss", f"train {name}", "test loss", f"test {name}",
        f"epoch {'>=' if metric == 'accuracy' else '<='} {runs[0]['target']:g}", "s/epoch",
        "decay/step", "half-life"]
    rows = [tuple(head)]
    for r in runs:
        e, d = r["epochs"][-1], r["decay"] or {}
        rows.append(tuple([r["cell"]] + ([str(r["info"][key])] if key else []) + [
            *(format(e[k], ".4f" if metric == "accuracy" else ".3g") for k in
              ("train_loss", "train_metric", "test_loss", "test_metric")), _fmt(r["reached"], "d"),
            _fmt(r["seconds_per_epoch"], ".3f"), _fmt(d.get("rate_per_step"), ".4f"),
            _fmt(d.get("half_life"), ".3g")]))
    lines = [result["description"], ""] + _table(rows)
    if key and len({r["info"][key] for r in runs}) > 1:
        values = sorted({r["info"][key] for r in runs})
        cells = list(dict.fromkeys(r["cell"] for r in runs))
        grid = [tuple(["cell"] + [f"{key}={v}" for v in values])]
        for c in cells:
            by = {r["info"][key]: r["epochs"][-1]["test_metric"] for r in runs if r["cell"] == c}
            grid.append(tuple([c] + [_fmt(by.get(v), ".3f" if metric == "accuracy" else ".2g")
                                     for v in values]))
        lines += ["", f"test {metric} after {result['config']['epochs']} epochs "
                      f"(chance {runs[0]['chance']:.3f}):", *_table(grid)]
    cfg = result["config"]
    lines += ["", f"budget: {cfg['epochs']} epochs x {result['train_size']} training rows, batch "
                  f"{cfg['batch_size']}, {cfg['optimizer']} lr {cfg['lr']:g}, clip "
                  f"{_fmt(cfg['clip'], 'g')}, H={cfg['hidden']}"
                  f"{', embedding ' + str(cfg['embed']) if result.get('tokens', True) else ''}, "
                  f"{cfg['dtype']}, backend {cfg['backend']}, seed {cfg['seed']}",
              "decay/step: the gradient's factor per step back through time at the initial "
              "weights (derive-cells decay, the read-out's state); half-life in steps."]
    return "\n".join(lines) + "\n"


def check_table(results: list[dict]) -> str:
    rows = [("cell", "reference", "steps", "max loss rel. error", "max param rel. error",
             "worst param", "result")]
    for a in results:
        rows.append((a["cell"], a["reference"], str(a["steps"]), f"{a['max_loss_error']:.2e}",
                     f"{a['max_param_error']:.2e}", a["worst_param"],
                     "ok" if a["passed"] else "FAIL"))
    tol = results[0]["tolerance"] if results else 0
    return "\n".join(_table(rows) + [
        "", f"float64 SGD from the same weights on the same batches; every step's loss and the "
            f"final parameters must agree to {tol:g} (relative)."]) + "\n"


@click.command("train")
@click.argument("cells", nargs=-1, required=True, metavar="CELL_OR_SPEC...")
@click.option("--task", type=click.Choice(["sentiment", "distance", "adding", "reviews"]),
              default="sentiment", show_default=True,
              help="sentiment: synthetic reviews with negations; distance: one decisive word d "
                   "steps before the end; adding: the adding problem over T steps; reviews: "
                   "real movie-review snippets (fetched once with pip, checked by hash).")
@click.option("--distance", "distances", type=IntList(0, 1000), default="1,5,10,20,40,80",
              show_default=True, help="distance task: the distances d to train at, each from "
                                      "scratch (comma-separated, 0 to 1000).")
@click.option("--steps", "-T", "steps", type=IntList(2, 2000), default="50", show_default=True,
              help="adding task: sequence lengths T (comma-separated, 2 to 2000).")
@click.option("--backend", type=click.Choice(["numpy", "torch", "torch.nn"]), default="numpy",
              show_default=True,
              help="numpy: the emitted NumPy module and NumPy optimizers, no torch imported; "
                   "torch: the emitted Torch module and torch.optim; torch.nn: torch.nn's own "
                   "RNN/LSTM/GRU (autograd over the spec for other cells), for comparison.")
@click.option("--optimizer", type=click.Choice(["adam", "sgd"]), default="adam",
              show_default=True)
@click.option("--lr", type=FiniteFloat(1e-8, 100), default=None,
              help="Learning rate (default: 0.01 for adam, 0.5 for sgd).")
@click.option("--epochs", type=click.IntRange(1, 10_000), default=10, show_default=True)
@click.option("--batch-size", type=click.IntRange(1, 100_000), default=32, show_default=True)
@click.option("--hidden", "-H", type=click.IntRange(1, 1024), default=32, show_default=True,
              help="Hidden size H.")
@click.option("--embed", type=click.IntRange(1, 1024), default=16, show_default=True,
              help="Embedding size (token tasks).")
@click.option("--clip", type=FiniteFloat(0, 1e6), default=1.0, show_default=True,
              help="Clip the gradient by global norm (Pascanu et al. 2013); 0: no clipping.")
@click.option("--forget-bias", type=FloatList(100), default=None,
              help="Forget-gate bias at initialisation for cells with a forget gate 'f' "
                   "(comma-separated: one run per value, e.g. 0,1); other cells run once.")
@click.option("--train-size", type=click.IntRange(1, 200_000), default=None,
              help="Training rows (default: 2000; reviews: the whole split).")
@click.option("--test-size", type=click.IntRange(1, 100_000), default=None,
              help="Test rows (default: 500; reviews: the whole split).")
@click.option("--seed", type=click.IntRange(0, 2**32 - 2), default=0, show_default=True,
              help="Seed of the data, the initial weights and the batch order.")
@click.option("--dtype", type=click.Choice(["float32", "float64"]), default="float32",
              show_default=True)
@click.option("--target", type=FiniteFloat(0, 1e6), default=None,
              help="Report the first epoch at which the test accuracy reaches this (default "
                   "0.9), or the test MSE falls to it (default 0.01).")
@click.option("--decay/--no-decay", default=True, show_default=True,
              help="Measure each run's gradient decay rate at its initial weights (needs torch "
                   "for the theory beside it; --no-decay keeps a numpy run torch-free).")
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
              help="Write learning curves (and for a sweep, the test metric against distance "
                   "or length) to FILE (.svg or .png).")
@click.option("-o", "--output", type=OUTPUT_PATH, metavar="FILE",
              help="Write the table or JSON to FILE ('-': stdout, the default).")
def train(cells, task, distances, steps, backend, optimizer, lr, epochs, batch_size, hidden,
          embed, clip, forget_bias, train_size, test_size, seed, dtype, target, decay, check,
          check_steps, data_dir, fmt, plot, output):
    """Train the article's model with the derived gradients: token embedding -> the cell over
    each sequence's own length -> sigmoid read-out of the last state, thresholded at 0.5, with
    binary cross-entropy (the adding task: a linear read-out and squared error).

    Every cell is trained from scratch on the same data, batches and budget; a sweep (several
    --distance or --steps values) trains every cell at every value. The table gives the final
    train and test loss and accuracy (or MSE), the first epoch at the --target, seconds per
    epoch and the gradient decay rate at the initial weights.

    \b
      derive-cells train rnn lstm gru --task sentiment --plot curves.svg
      derive-cells train rnn lstm gru simplified_gru --task distance --forget-bias 0,1
      derive-cells train rnn lstm gru --task adding --steps 50,100 --epochs 30
      derive-cells train lstm gru --task reviews --epochs 5
      derive-cells train rnn lstm gru my_cell.toml --check

    Progress goes to stderr for runs over a few seconds.

    Exit status: 0 ok, 1 a --check disagreement or a diverged run, 2 usage or input error
    (including a reviews archive that cannot be fetched or fails its hash).
    """
    if plot and Path(plot).suffix.lower() not in PLOT_FORMATS:
        _fail(f"--plot {plot}: the file must end in .svg or .png")
    ctx = click.get_current_context()
    for option, name, applies in (("--distance", "distances", "distance"),
                                  ("--steps", "steps", "adding")):
        given = ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT
        if given and task != applies:
            _fail(f"{option} applies to --task {applies} only, not {task}")
    if check or backend != "numpy" or (decay and not check):
        _need_torch(check, backend, decay)
    from derive_cells.derivation import derive
    from derive_cells.verify import experiment
    from derive_cells.verify.train import Config

    loaded = load_cells(cells, COMMAND)
    check_outputs({"--plot": plot, "-o": output}, spec_files(cells), COMMAND)
    config = Config(backend=backend, optimizer=optimizer, lr=lr, epochs=epochs,
                    batch_size=batch_size, embed=embed, hidden=hidden, clip=clip or None,
                    seed=seed, dtype=dtype, target=target)
    started = time.perf_counter()

    def progress(message: str) -> None:
        if time.perf_counter() - started > PROGRESS_AFTER:
            click.echo(f"train: {message}", err=True)

    derivs = [derive(cell) for cell in loaded]
    try:
        tasks = experiment.tasks_for(task, seed, distances[:1] if check else distances,
                                     steps[:1] if check else steps, train_size, test_size,
                                     data_dir)
        if check:
            agreements = experiment.check(derivs, tasks[0], config, forget_bias, check_steps,
                                          progress)
        else:
            result = experiment.run(derivs, tasks, config, forget_bias, decay, progress)
    except experiment.ExperimentError as exc:
        _fail(str(exc))
    except FloatingPointError as exc:
        click.echo(f"{COMMAND}: {exc}", err=True)
        sys.exit(1)
    if check:
        text = (json.dumps(agreements, indent=1) + "\n" if fmt == "json"
                else check_table(agreements))
        write_output(output or "-", text, COMMAND)
        sys.exit(0 if all(a["passed"] for a in agreements) else 1)
    if plot:
        _plot(result, plot)
    text = json.dumps(result, indent=1) + "\n" if fmt == "json" else runs_table(result)
    write_output(output or "-", text, COMMAND)


def _need_torch(check: bool, backend: str, decay: bool) -> None:
    try:
        import torch  # noqa: F401
    except ImportError:
        why = ("--check" if check else f"--backend {backend}" if backend != "numpy"
               else "the decay rate (use --no-decay to train without torch)")
        _fail(f"{why} needs torch (pip install torch)")


def _plot(result: dict, path: str) -> None:
    from derive_cells.reports.plots import learning_figure, render, sweep_figure

    runs, key = result["runs"], result["sweep"]
    fig = (sweep_figure(runs, key, f"{result['task']}: final test {runs[0]['metric']} "
                                   f"after {result['config']['epochs']} epochs")
           if key else learning_figure(runs, f"{result['task']}: learning curves"))
    write_output(path, render(fig, PLOT_FORMATS[Path(path).suffix.lower()]), COMMAND)
    click.echo(f"train: wrote {path}", err=True)
