"""A training experiment as the command line and the report run it: every cell (and forget
bias) trained on the task, or on every point of a sweep (distances, sequence lengths), with the
cells emitted once into a temporary folder; or the --check agreement of each cell."""

from __future__ import annotations

import tempfile
from pathlib import Path

from derive_cells.verify.tasks import Task, make_task
from derive_cells.verify.train import Config, Variant, label, train, variants

SWEEP_KEY = {"distance": "distance", "adding": "steps"}


class ExperimentError(ValueError):
    """Settings or data that cannot make the experiment (exit status 2 on the command line)."""


def tasks_for(task: str, seed: int, distances=None, steps=None, train_size=None,
              test_size=None, data_dir=None) -> list[Task]:
    """The task, or one task per sweep point (--distance / --steps values)."""
    sweep = {"distance": [{"distance": d} for d in distances or [10]],
             "adding": [{"steps": t} for t in steps or [50]]}.get(task, [{}])
    try:
        return [make_task(task, seed, train_size, test_size, data_dir=data_dir, **point)
                for point in sweep]
    except ValueError as exc:  # the reviews data (DataError) or a size out of range
        raise ExperimentError(str(exc)) from None


def _variants(derivs, forget_biases, folder: Path, targets) -> list[Variant]:
    from derive_cells.verify.modules import emit_and_import

    pairs = variants(derivs, forget_biases)
    if forget_biases and all(b is None for _, b in pairs):
        raise ExperimentError("--forget-bias needs a cell with a forget gate 'f'")
    several = {d.cell.name: sum(e is d for e, _ in pairs) > 1 for d in derivs}
    made = {id(d): {t: emit_and_import(d, t, folder) for t in targets} for d in derivs}
    return [Variant(label(d, b, several[d.cell.name]), d, made[id(d)], b) for d, b in pairs]


def run(derivs, tasks: list[Task], config: Config, forget_biases=None, decay: bool = True,
        progress=None) -> dict:
    """Train every variant on every task; the result as JSON-ready data."""
    targets = ("numpy",) if config.backend == "numpy" else ("numpy", "torch")
    with tempfile.TemporaryDirectory(prefix="derive-cells-train-") as tmp:
        chosen = _variants(derivs, forget_biases, Path(tmp), targets)
        runs = [train(v, task, config, progress, decay) for task in tasks for v in chosen]
    name = tasks[0].name
    key = SWEEP_KEY.get(name) if len(tasks) > 1 else None
    return {"task": name, "description": describe(tasks, key), "sweep": key,
            "train_size": len(tasks[0].train), "tokens": tasks[0].train.tokens,
            "config": {**config.__dict__, "lr": config.learning_rate},
            "runs": [r.as_dict() for r in runs]}


def describe(tasks: list[Task], key: str | None) -> str:
    """The first task's description, and the other sweep points."""
    if not key:
        return tasks[0].description
    rest = ", ".join(str(t.train.info[key]) for t in tasks[1:])
    return f"{tasks[0].description}; the same at {key} {rest}"


def check(derivs, task: Task, config: Config, forget_biases=None, steps: int = 20,
          progress=None) -> list[dict]:
    """The --check agreement of every variant (verify/train_check.py)."""
    from derive_cells.verify.train_check import agreement

    out = []
    with tempfile.TemporaryDirectory(prefix="derive-cells-train-") as tmp:
        for v in _variants(derivs, forget_biases, Path(tmp), ("numpy", "torch")):
            if progress:
                progress(f"{v.label}: {steps} SGD steps, NumPy and reference ...")
            out.append(agreement(v, task, config, steps).as_dict())
    return out
