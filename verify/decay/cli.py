"""`derive-cells decay`: how fast the gradient vanishes (or explodes) back through time."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import click

from derive_cells.command import (
    OUTPUT_PATH,
    FiniteFloat,
    check_outputs,
    fail,
    load_cells,
    require_torch,
    spec_files,
    write_output,
)

PLOT_FORMATS = {".svg": "svg", ".png": "png"}
MAX_STEPS, MAX_BATCH, MAX_HIDDEN, MAX_INPUT = 100_000, 1024, 1024, 4096
MAX_SCALE = 1000.0  # --gain, --input-scale: far beyond this every gate is saturated anyway
MAX_BIAS = 1000.0


def _fail(message: str) -> None:
    fail(message, "derive-cells decay")


def _fmt(value, spec: str = ".4g") -> str:
    return "-" if value is None else format(value, spec)


def table(measurements: list[dict]) -> str:
    rows = [("cell", "state", "rate/step", "predicted", "prediction", "time const.",
             "half-life", "log10 norm at d=T-1", "mean sigma_max(J)")]
    for m in measurements:
        for s in m["log10_norm"]:
            last = m["log10_norm"][s][-1]  # "-": exactly zero or not finite (see the notes)
            rows.append((m["cell"], s, _fmt(m["rate_per_step"][s]),
                         _fmt(m["predicted_rate_per_step"][s]), m["prediction"][s] or "-",
                         _fmt(m["time_constant"][s], ".3g"), _fmt(m["half_life"][s], ".3g"),
                         _fmt(last, ".2f"), _fmt(m["jacobian"].get("sigma_max_mean"))))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    steps = {m["steps"] for m in measurements}
    lines.append(f"\nrates are factors per step, fitted (Theil-Sen) to log10 norms beyond the "
                 f"first {max(2, max(steps) // 10)} steps; time constant -1/ln(rate), "
                 "half-life ln 2 / -ln(rate).")
    notes = [f"  {m['cell']} {s}: {note}" for m in measurements
             for s, note in m.get("notes", {}).items()]
    if notes:
        lines += ["notes:", *notes]
    return "\n".join(lines) + "\n"


@click.command("decay")
@click.argument("cells", nargs=-1, required=True, metavar="CELL_OR_SPEC...")
@click.option("--steps", "-T", type=click.IntRange(2, MAX_STEPS), default=100, show_default=True,
              help=f"Sequence length T (2 to {MAX_STEPS}).")
@click.option("--batch", "-B", type=click.IntRange(1, MAX_BATCH), default=16, show_default=True,
              help=f"Sequences measured at once (1 to {MAX_BATCH}).")
@click.option("--hidden", "-H", type=click.IntRange(1, MAX_HIDDEN), default=32,
              show_default=True, help=f"Hidden size H (1 to {MAX_HIDDEN}).")
@click.option("--input-size", "-I", type=click.IntRange(1, MAX_INPUT), default=None,
              help=f"Input size I (1 to {MAX_INPUT}; default: the hidden size).")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True,
              help="Seed of the random parameters and inputs (0 to 2**32-1).")
@click.option("--recurrent-init", type=click.Choice(["pytorch", "orthogonal"]),
              default="pytorch", show_default=True,
              help="pytorch: U(+-1/sqrt(H)) like every parameter; orthogonal: random orthogonal "
                   "recurrent matrices.")
@click.option("--gain", type=FiniteFloat(0, MAX_SCALE), default=1.0, show_default=True,
              help=f"Scale every recurrent (H x H) matrix (0 to {MAX_SCALE:g}); 0 makes them "
                   "zero.")
@click.option("--input-scale", type=FiniteFloat(0, MAX_SCALE), default=1.0, show_default=True,
              help=f"Inputs are standard normal times this (0 to {MAX_SCALE:g}); 0 feeds zeros.")
@click.option("--bias", type=FiniteFloat(-MAX_BIAS, MAX_BIAS), default=None,
              help="Set every bias vector (a vector only ever added to a product) to B "
                   f"(-{MAX_BIAS:g} to {MAX_BIAS:g}).")
@click.option("--forget-bias", type=FiniteFloat(-MAX_BIAS, MAX_BIAS), default=None,
              help="Then set the forget gate's pre-activation bias to F in total (split over "
                   "its bias vectors: PyTorch's two get F/2 each).")
@click.option("--dtype", type=click.Choice(["float64", "float32"]), default="float64",
              show_default=True, help="Precision of the forward and backward passes.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True)
@click.option("--plot", type=OUTPUT_PATH, metavar="FILE",
              help="Write a plot of the decay (a file ending .svg or .png).")
@click.option("-o", "--output", type=OUTPUT_PATH, metavar="FILE",
              help="Write the table or JSON to FILE ('-': stdout, the default).")
def decay(cells, steps, batch, hidden, input_size, seed, recurrent_init, gain, input_scale,
          bias, forget_bias, dtype, fmt, plot, output):
    """Measure how the gradient of a last-step loss decays back through time.

    The loss is a sentiment-style read-out of the last output, sigmoid(w . o_T + b) with binary
    cross-entropy. Its adjoint is propagated back with the emitted backward, renormalized every
    step and summed in log space (float64), so decay far below 1e-308 is still measured. For
    each state: log10 ||dL/ds_{T-d}|| at every distance d, the fitted rate per step, the time
    constant and half-life, beside the theory: the gate product of a direct path (LSTM's
    forget gate on c, GRU's update gate), or a bound on the step Jacobian's norm where every
    factor between the previous state and the new one has a largest value (Pascanu et al.
    2013: gamma*sigma_max(W) for a plain RNN; 3*sigma_max(U) for tanh(W x + U (3 h_prev) + b);
    no bound when a factor has none, as an input product), and the singular values of the
    derived step Jacobian along the way.

    \b
      derive-cells decay rnn lstm gru --plot decay.svg
      derive-cells decay rnn --recurrent-init orthogonal --gain 0.5 --input-scale 0 --bias 0
      derive-cells decay lstm --gain 0 --input-scale 0 --bias 0 --forget-bias 3 --format json

    Sizes are bounded so that a run fits a small machine: besides each option's range, a run
    that would keep more than 8 GiB of forward values (steps x batch x hidden), or take the
    singular values of step Jacobians beyond about 2e12 operations (batch x (states x
    hidden)^3), is refused with exit status 2 before it starts.

    Exit status: 0 ok, 2 usage or input error.
    """
    if plot and Path(plot).suffix.lower() not in PLOT_FORMATS:
        _fail(f"--plot {plot}: the file must end in .svg or .png")
    require_torch("derive-cells decay", "decay (its predictions)")
    from derive_cells.derivation import derive
    from derive_cells.verify.decay.measurement import Setup, SetupError, check_budget, measure
    from derive_cells.verify.modules import emit_and_import

    loaded = load_cells(cells, "derive-cells decay")
    check_outputs({"--plot": plot, "-o": output}, spec_files(cells), "derive-cells decay")
    setup = Setup(steps, batch, hidden, input_size, seed, recurrent_init, gain, input_scale,
                  bias, forget_bias, dtype)
    results, skipped = [], []
    with tempfile.TemporaryDirectory(prefix="derive-cells-decay-") as tmp:
        emitted = []
        for cell in loaded:  # every cell within budget before the first one runs
            deriv = derive(cell)
            module = emit_and_import(deriv, "numpy", Path(tmp))
            try:
                check_budget(module, deriv, setup)
            except SetupError as exc:
                _fail(str(exc))
            emitted.append((cell, deriv, module))
        for cell, deriv, module in emitted:
            click.echo(f"decay: {cell.name} T={steps} B={batch} H={hidden} {dtype} ...",
                       err=True)
            progress = lambda msg: click.echo(f"decay: {msg}", err=True)  # noqa: E731
            try:
                m = measure(module, deriv, setup, progress=progress)
            except SetupError as exc:
                if len(loaded) == 1 or forget_bias is None:
                    _fail(str(exc))
                skipped.append(cell.name)  # several cells: --forget-bias is for those with f
                click.echo(f"decay: {cell.name} has no forget gate; --forget-bias does not "
                           "apply to it", err=True)
                no_forget = Setup(**{**setup.__dict__, "forget_bias": None})
                m = measure(module, deriv, no_forget, progress=progress)
            results.append(m.as_dict())
    if skipped and len(skipped) == len(loaded):
        _fail("--forget-bias needs a cell with a forget gate 'f'")
    if fmt == "json":
        text = json.dumps(results[0] if len(results) == 1 else results, indent=1) + "\n"
    else:
        text = table(results)
    if plot:
        from derive_cells.plots import render
        from derive_cells.verify.decay.plots import decay_figure

        data = render(decay_figure(results), PLOT_FORMATS[Path(plot).suffix.lower()])
        write_output(plot, data, "derive-cells decay")
        click.echo(f"decay: wrote {plot}", err=True)
    write_output(output or "-", text, "derive-cells decay")
