"""Gather everything a report shows, for one or several cells: derivation, emitted code,
verification and gradient decay (the data path spec -> derivation -> code -> verify -> report)."""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

from derive_cells.derivation import derive
from derive_cells.emit import emit
from derive_cells.reports.content import CellContent, cell_content, regenerate_command
from derive_cells.spec import Cell
from derive_cells.verify.report import grouped

DECAY_STEPS = 100
FORGET_BIAS = 1.0


@dataclass
class Report:
    cells: list[CellContent]
    decay_setup: str
    learning: dict | None = None  # a `derive-cells train --format json` result

    @property
    def learning_rows(self) -> list[dict]:
        """One row per training run: what the Learning section's table shows, as text."""
        if not self.learning:
            return []
        key, out = self.learning.get("sweep"), []
        for r in self.learning["runs"]:
            e, d = r["epochs"][-1], r.get("decay") or {}
            out.append({"cell": r["cell"], "point": str(r["info"][key]) if key else "",
                        "train": format(e["train_metric"], ".3f" if r["metric"] == "accuracy"
                                        else ".2g"),
                        "test": format(e["test_metric"], ".3f" if r["metric"] == "accuracy"
                                       else ".2g"),
                        "reached": "–" if r["reached"] is None else str(r["reached"]),
                        "seconds": f"{r['seconds_per_epoch']:.2f}",
                        "decay": "–" if d.get("rate_per_step") is None else
                        f"{d['rate_per_step']:.3f}",
                        "horizon": "–" if r.get("predicted_horizon") is None else
                        f"{r['predicted_horizon']:.0f}",
                        "decay_end": "–" if e.get("decay_rate") is None else
                        f"{e['decay_rate']:.3f}"})
        return out

    @property
    def learning_budget(self) -> str:
        c = self.learning["config"]
        return (f"{c['epochs']} epochs of {self.learning['train_size']} training rows, batch "
                f"{c['batch_size']}, {c['optimizer']} (lr {c['lr']:g}), gradient clipping at "
                f"{c['clip'] if c['clip'] else 'none'}, H = {c['hidden']}"
                f"{', embedding ' + str(c['embed']) if self.learning.get('tokens', True) else ''}"
                f", {c['dtype']}, backend {c['backend']}, seed {c['seed']}")

    @property
    def title(self) -> str:
        return ", ".join(c.name for c in self.cells)


def _verification(cell: Cell, deriv, folder: Path) -> list[dict]:
    """One row per check: worst array and error over both backends and both dtypes."""
    from derive_cells.verify.checks import Checker
    from derive_cells.verify.modules import Runner, emit_and_import

    runners = {t: Runner(emit_and_import(deriv, t, folder), t) for t in ("numpy", "torch")}
    results, cache = [], {}
    for dtype in ("float64", "float32"):
        for target, runner in runners.items():
            other = runners["torch"] if target == "numpy" else None
            results += list(Checker(cell, runner, target, dtype, other, cache).all())
    rows = []
    for (_, backend, dtype, check), arrays in grouped(results):
        worst = max(arrays, key=lambda r: r.max_rel_error / r.tolerance)
        rows.append({"backend": backend, "dtype": dtype, "check": check, "array": worst.array,
                     "error": worst.max_rel_error, "tolerance": worst.tolerance,
                     "passed": all(r.passed for r in arrays)})
    return rows


def _decay(deriv, module, forget_bias: float | None = None) -> dict | None:
    """The decay measurement at PyTorch's initialization, or with the forget gate's bias set
    (None for a cell without a forget gate 'f' with a bias)."""
    from derive_cells.verify.decay.measurement import Setup, SetupError, measure

    try:
        return measure(module, deriv, Setup(steps=DECAY_STEPS,
                                            forget_bias=forget_bias)).as_dict()
    except SetupError:
        if forget_bias is None:
            raise
        return None


def build(cells: list[Cell], progress=None, learning: dict | None = None) -> Report:
    """learning: a training result (train.experiment.run) shown as the Learning section."""
    from derive_cells.verify.modules import emit_and_import

    contents = []
    with tempfile.TemporaryDirectory(prefix="derive-cells-report-") as tmp:
        for cell in cells:
            if progress:
                progress(f"{cell.name}: derivation, verification, decay ...")
            deriv = derive(cell)
            source = emit(deriv, "numpy", command=regenerate_command(cell.source, "numpy"))
            content = cell_content(deriv, source)
            folder = Path(tmp) / re.sub(r"\W", "_", cell.name)
            folder.mkdir()
            content.verification = _verification(cell, deriv, folder)
            module = emit_and_import(deriv, "numpy", folder)
            content.decay = _decay(deriv, module)
            # the common initialization of a forget gate (Jozefowicz et al. 2015), beside it
            content.decay_forget_bias = _decay(deriv, module, forget_bias=FORGET_BIAS)
            contents.append(content)
    return Report(contents, f"T={DECAY_STEPS}, B=16, H=I=32, PyTorch's initialization, "
                            "standard-normal inputs, float64", learning)
