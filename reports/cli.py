"""`derive-cells report`: one document that tells a cell's whole story."""

from __future__ import annotations

from pathlib import Path

import click

from derive_cells.command import (
    OUTPUT_PATH,
    check_outputs,
    fail,
    load_cells,
    require_torch,
    spec_files,
    write_output,
)


def _fail(message: str) -> None:
    fail(message, "derive-cells report")


@click.command("report")
@click.argument("cells", nargs=-1, required=True, metavar="CELL_OR_SPEC...")
@click.option("-o", "--output", required=True, type=OUTPUT_PATH, metavar="FILE",
              help="The document to write (.html, .tex or .pdf; '-': stdout, with --format "
                   "html or pdf).")
@click.option("--format", "fmt", type=click.Choice(["html", "tex", "pdf"]), default=None,
              help="Default: from the output file's extension.")
@click.option("--train", "train", metavar="TASK|RESULT.json", default=None,
              help="Add a Learning section: train the cells on TASK (sentiment, distance, "
                   "adding, reviews; the defaults of derive-cells train) or show a result "
                   "written by `derive-cells train --format json -o RESULT.json`.")
@click.option("--train-epochs", type=click.IntRange(1, 10_000), default=10, show_default=True,
              help="Epochs of the training that --train TASK runs.")
def report(cells, output, fmt, train, train_epochs):
    """Write an HTML, LaTeX or PDF report of one or several cells.

    The forward equations, the derived BPTT adjoint equations step by step, the parameter
    gradients, the per-step Jacobian, the emitted code with each line tied to its equation,
    the verification results and the gradient-decay plot with rates beside the theory.
    Several cells add a comparison: decay curves on one plot, parameters and multiply-adds
    per step, verification summary.

    \b
      derive-cells report lstm -o lstm.html
      derive-cells report rnn lstm gru -o cells.html
      derive-cells report lstm -o lstm.tex      (figures as PDF files beside it)
      derive-cells report lstm -o lstm.pdf      (runs pdflatex)
      derive-cells report rnn lstm gru --train sentiment -o cells.html

    HTML needs nothing else; a reader opens it in any browser, offline. Exit status: 0 ok,
    2 usage or input error (including --format pdf without pdflatex).
    """
    from derive_cells.reports import write

    try:
        fmt = write.report_format(output, fmt)
    except write.ReportError as exc:
        _fail(str(exc))
    require_torch("derive-cells report", "report (its verification and decay sections)")
    loaded = load_cells(cells, "derive-cells report")
    inputs = spec_files(cells)
    check_outputs({"-o": output}, inputs, "derive-cells report")
    progress = lambda m: click.echo(f"report: {m}", err=True)  # noqa: E731
    learning = _learning(train, train_epochs, loaded, progress) if train else None
    stem = "report" if output == "-" else Path(output).stem
    try:
        document, figures = write.render(loaded, fmt, stem, learning, progress)
    except write.ReportError as exc:
        raise click.ClickException(str(exc)) from None
    if figures:
        check_outputs({"-o": output, **write.figure_paths(output, figures)}, inputs,
                      "derive-cells report")
    for name, pdf in figures.items():
        write_output(str(Path(output).parent / name), pdf, "derive-cells report")
    write_output(output, document, "derive-cells report")
    if output != "-":
        click.echo(f"report: wrote {output}", err=True)


TASKS = ("sentiment", "distance", "adding", "reviews")


def _learning(train: str, epochs: int, cells, progress) -> dict:
    """A saved training result (a .json file), or the cells trained on a task now."""
    import json

    if train not in TASKS:
        path = Path(train)
        if path.suffix.lower() != ".json" or not path.is_file():
            _fail(f"--train {train}: neither a task ({', '.join(TASKS)}) nor a .json result "
                  "file of derive-cells train")
        try:
            result = json.loads(path.read_text(encoding="utf-8"))
            runs = result["runs"]
            for key in ("task", "description", "config", "train_size"):
                result[key]  # noqa: B018
            if not runs or not all("epochs" in r and r["epochs"] for r in runs):
                raise KeyError("runs")
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
            _fail(f"--train {train}: not a result of derive-cells train --format json ({exc})")
        return result
    from derive_cells.derivation import derive
    from derive_cells.train import experiment
    from derive_cells.train.run import Config

    config = Config(epochs=epochs)
    try:
        tasks = experiment.tasks_for(train, config.seed,
                                     distances=[1, 5, 10, 20, 40, 80] if train == "distance"
                                     else None)
        progress(f"training on {train} ({epochs} epochs per cell) ...")
        return experiment.run([derive(c) for c in cells], tasks, config, progress=progress)
    except experiment.ExperimentError as exc:
        _fail(str(exc))
    except FloatingPointError as exc:
        _fail(f"--train {train}: {exc}")
