"""A training experiment as the command line, Cell.train and the report run it: every cell (and
forget bias) trained on the task, or on every point of a sweep (distances, sequence lengths),
with the cells emitted once into a temporary folder; or the --check agreement of each cell.

The settings are checked here for every caller (check_settings, and Config for its fields), and
the memory and time before anything large is made (train/budget.py)."""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from derive_cells.train import budget as train_budget
from derive_cells.train.run import Config, Variant, _info, init_label, initialisations, train
from derive_cells.train.tasks import TASKS, Task, make_task

SWEEP_KEY = {"distance": "distance", "adding": "steps"}
# What an experiment accepts besides its Config, the command line's options and Cell.train alike.
SWEEP_RANGES = {"distance": (0, 1000), "steps": (2, 2000)}
SIZE_RANGES = {"train_size": (1, 200_000), "test_size": (1, 100_000)}
FORGET_BIAS_LIMIT = 100.0  # |gate bias| at most (--forget-bias, --gate-bias)
INITS = ("pytorch", "chrono")  # --init
TMAX_RANGE = (3, 1_000_000)  # --tmax: chrono's T_max


class ExperimentError(ValueError):
    """Settings or data that cannot make the experiment (exit status 2 on the command line)."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during an experiment; result holds the runs that had finished (the same data as
    a whole experiment's, with fewer runs)."""

    def __init__(self, result):
        super().__init__()
        self.result = result


def _integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_settings(task: str, distances=None, steps=None, train_size=None, test_size=None,
                   forget_biases=None, gate_biases=None, init=None, tmax=None) -> None:
    """Refuse (ExperimentError) what the command line refuses."""
    if task not in TASKS:
        raise ExperimentError(f"unknown task {task!r}; known tasks: {', '.join(TASKS)}")
    for name, values, applies, key in (("distances", distances, "distance", "distance"),
                                       ("steps", steps, "adding", "steps")):
        if values is None:
            continue
        if task != applies:
            raise ExperimentError(f"{name} apply to the {applies} task only, not {task}")
        low, high = SWEEP_RANGES[key]
        if (not isinstance(values, (list, tuple)) or not values
                or not all(_integer(v) and low <= v <= high for v in values)):
            raise ExperimentError(f"{name} must be a non-empty list of integers in "
                                  f"{low}..{high}; got {values!r}")
    for name, value in (("train_size", train_size), ("test_size", test_size)):
        low, high = SIZE_RANGES[name]
        if value is not None and not (_integer(value) and low <= value <= high):
            raise ExperimentError(f"{name} must be an integer in {low}..{high}, or None; "
                                  f"got {value!r}")
    if forget_biases is not None and not (
            isinstance(forget_biases, (list, tuple)) and forget_biases
            and all(isinstance(b, (int, float)) and not isinstance(b, bool) and math.isfinite(b)
                    and abs(b) <= FORGET_BIAS_LIMIT for b in forget_biases)):
        raise ExperimentError(f"forget biases must be numbers in -{FORGET_BIAS_LIMIT:g}.."
                              f"{FORGET_BIAS_LIMIT:g}; got {forget_biases!r}")
    if gate_biases is not None:
        if not isinstance(gate_biases, dict) or not all(isinstance(g, str) for g in gate_biases):
            raise ExperimentError(f"gate biases must be a dict gate name -> list of values; "
                                  f"got {gate_biases!r}")
        for gate, values in gate_biases.items():
            if not (isinstance(values, (list, tuple)) and values and all(
                    b is None or (isinstance(b, (int, float)) and not isinstance(b, bool)
                                  and math.isfinite(b) and abs(b) <= FORGET_BIAS_LIMIT)
                    for b in values)):
                raise ExperimentError(f"gate {gate!r}: biases must be numbers in "
                                      f"-{FORGET_BIAS_LIMIT:g}..{FORGET_BIAS_LIMIT:g} (or None: "
                                      f"PyTorch's initialisation); got "
                                      f"{values!r}")
        if forget_biases is not None and "f" in gate_biases:
            raise ExperimentError("forget biases given twice: --forget-bias is --gate-bias f=...")
    if init is not None and init not in INITS:
        raise ExperimentError(f"init must be one of {', '.join(INITS)}; got {init!r}")
    if (init == "chrono") != (tmax is not None):
        raise ExperimentError("--init chrono needs --tmax N (chrono's T_max), and --tmax goes "
                              "with --init chrono only")
    low, high = TMAX_RANGE
    if tmax is not None and not (_integer(tmax) and low <= tmax <= high):
        raise ExperimentError(f"tmax must be an integer in {low}..{high}; got {tmax!r}")


def _sweep(task: str, distances=None, steps=None) -> list[dict]:
    return {"distance": [{"distance": d} for d in distances or [10]],
            "adding": [{"steps": t} for t in steps or [50]]}.get(task, [{}])


def _shapes(task: str, sweep: list[dict], train_size=None, test_size=None):
    """The data's shapes when they are known before it is made; data that would not fit the
    memory budget is refused here."""
    shapes = train_budget.shapes_for(task, sweep, train_size, test_size)
    if shapes:
        try:
            train_budget.check_data(shapes)
        except train_budget.BudgetError as exc:
            raise ExperimentError(str(exc)) from None
    return shapes


def tasks_for(task: str, seed: int, distances=None, steps=None, train_size=None,
              test_size=None, data_dir=None) -> list[Task]:
    """The task, or one task per sweep point (--distance / --steps values); data that would not
    fit the memory budget is refused before it is made."""
    check_settings(task, distances, steps, train_size, test_size)
    sweep = _sweep(task, distances, steps)
    _shapes(task, sweep, train_size, test_size)
    try:
        return [make_task(task, seed, train_size, test_size, data_dir=data_dir, **point)
                for point in sweep]
    except ValueError as exc:  # the reviews data (DataError), a size out of range
        raise ExperimentError(str(exc)) from None


def _variants(derivs, forget_biases, folder: Path, targets, gate_biases=None,
              tmax=None) -> list[Variant]:
    """One Variant per cell and initialisation (run.initialisations); forget_biases are gate
    f's. A gate no cell has, or chrono for cells without a keeping gate, is refused."""
    from derive_cells.emit.torch_layer import chrono_gates
    from derive_cells.verify.decay.measurement import _roles
    from derive_cells.verify.modules import emit_and_import

    gate_biases = dict(gate_biases or {})
    if forget_biases:
        gate_biases["f"] = list(forget_biases)
    known = {d.cell.name: list(_roles(d)[2]) for d in derivs}
    for gate in gate_biases:
        if not any(gate in gates for gates in known.values()):
            option = ("--forget-bias needs a cell with a forget gate 'f'" if gate == "f"
                      and forget_biases else f"--gate-bias {gate}: no cell has a gate {gate!r}")
            raise ExperimentError(
                f"{option} with a bias; the gates whose bias can be "
                "set are " + "; ".join(f"{c}: {', '.join(g) or 'none'}"
                                       for c, g in known.items()))
    if tmax is not None and not any(chrono_gates(d, _roles(d)[2]) for d in derivs):
        raise ExperimentError("--init chrono: no cell has a keeping gate (a gate with a bias "
                              "that multiplies a previous state, as the LSTM's f or the GRU's z)")
    chosen = initialisations(derivs, gate_biases, tmax)
    made = {id(d): {t: emit_and_import(d, t, folder) for t in targets} for d in derivs}
    return [Variant(init_label(d, g, c), d, made[id(d)], (g or {}).get("f"), g, c)
            for d, g, c in chosen]


def run_task(derivs, task: str, config: Config, distances=None, steps=None, train_size=None,
             test_size=None, data_dir=None, forget_biases=None, decay: bool = True,
             progress=None, estimated=None, *, gate_biases=None, init=None,
             tmax=None) -> dict:
    """The experiment as the command line and Cell.train run it: the settings checked, the
    cells emitted, the memory and time estimated (ExperimentError over budget) before the data
    is made (for reviews: once it is read), then run."""
    check_settings(task, distances, steps, train_size, test_size, forget_biases, gate_biases,
                   init, tmax)
    sweep = _sweep(task, distances, steps)
    shapes = _shapes(task, sweep, train_size, test_size)
    with tempfile.TemporaryDirectory(prefix="derive-cells-train-") as tmp:
        chosen = _variants(derivs, forget_biases, Path(tmp), _targets(config), gate_biases,
                           tmax)
        estimate = _estimate(chosen, shapes, config, decay) if shapes else None
        tasks = tasks_for(task, config.seed, distances, steps, train_size, test_size, data_dir)
        estimate = estimate or _estimate(chosen, [train_budget.shape_of(t) for t in tasks],
                                         config, decay)
        return _train_all(chosen, tasks, config, decay, progress, estimate, estimated)


def run(derivs, tasks: list[Task], config: Config, forget_biases=None, decay: bool = True,
        progress=None, estimated=None, *, gate_biases=None, init=None, tmax=None) -> dict:
    """Train every variant on every task; the result as JSON-ready data. Before the first run,
    its memory and time are estimated (ExperimentError over budget) and passed to estimated;
    Ctrl-C raises Interrupted with the runs that had finished."""
    check_settings(tasks[0].name, forget_biases=forget_biases, gate_biases=gate_biases,
                   init=init, tmax=tmax)
    with tempfile.TemporaryDirectory(prefix="derive-cells-train-") as tmp:
        chosen = _variants(derivs, forget_biases, Path(tmp), _targets(config), gate_biases,
                           tmax)
        estimate = _estimate(chosen, [train_budget.shape_of(t) for t in tasks], config, decay)
        return _train_all(chosen, tasks, config, decay, progress, estimate, estimated)


def _targets(config: Config) -> tuple[str, ...]:
    return ("numpy",) if config.backend == "numpy" else ("numpy", "torch")


def _estimate(chosen, shapes, config: Config, decay: bool):
    try:
        return train_budget.estimate(chosen, shapes, config, decay)
    except train_budget.BudgetError as exc:
        raise ExperimentError(str(exc)) from None


def _train_all(chosen, tasks, config: Config, decay: bool, progress, estimate,
               estimated) -> dict:
    if estimated:
        estimated(estimate)
    planned = [(task, v) for task in tasks for v in chosen]
    runs = []
    try:
        for k, (task, v) in enumerate(planned, 1):
            start = time.perf_counter()
            runs.append(train(v, task, config, progress, decay))
            if progress:
                e = runs[-1].final
                progress(f"run {k}/{len(planned)} done: {v.label} [{task.name}{_info(task)}] "
                         f"test {runs[-1].metric} {e['test_metric']:.4f} "
                         f"({time.perf_counter() - start:.1f} s)")
    except KeyboardInterrupt:
        raise Interrupted(_result(tasks, config, runs, len(planned))) from None
    return _result(tasks, config, runs)


def _result(tasks: list[Task], config: Config, runs: list, planned: int | None = None) -> dict:
    name = tasks[0].name
    key = SWEEP_KEY.get(name) if len(tasks) > 1 else None
    out = {"task": name, "description": describe(tasks, key), "sweep": key,
           "train_size": len(tasks[0].train), "fresh_rows": tasks[0].fresh,
           "tokens": tasks[0].train.tokens,
           "config": {**config.__dict__, "lr": config.learning_rate},
           "runs": [r.as_dict() for r in runs]}
    if planned is not None:
        out["interrupted"] = {"finished": len(runs), "planned": planned}
    return out


def describe(tasks: list[Task], key: str | None) -> str:
    """The first task's description, and the other sweep points."""
    if not key:
        return tasks[0].description
    rest = ", ".join(str(t.train.info[key]) for t in tasks[1:])
    return f"{tasks[0].description}; the same at {key} {rest}"


def check(derivs, task: Task, config: Config, forget_biases=None, steps: int = 20,
          progress=None, *, gate_biases=None, init=None, tmax=None) -> list[dict]:
    """The --check agreement of every variant (train/check.py)."""
    from derive_cells.train.check import agreement

    check_settings(task.name, forget_biases=forget_biases, gate_biases=gate_biases, init=init,
                   tmax=tmax)
    out = []
    with tempfile.TemporaryDirectory(prefix="derive-cells-train-") as tmp:
        chosen = _variants(derivs, forget_biases, Path(tmp), ("numpy", "torch"), gate_biases,
                           tmax)
        _estimate(chosen, [train_budget.shape_of(task)],
                  replace(config, dtype="float64", epochs=1), decay=False)
        try:
            for v in chosen:
                if progress:
                    progress(f"{v.label}: {steps} SGD steps, NumPy and reference ...")
                out.append(agreement(v, task, config, steps).as_dict())
        except KeyboardInterrupt:
            raise Interrupted(out) from None
    return out
