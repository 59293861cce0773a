"""What a training experiment will cost, estimated before anything large is made: the memory of
its data, parameters, optimizer state and the largest batch's saved forward values, and its
time; refused over the budgets of `derive-cells decay` (verify/decay/measurement.py), so that
a run fits a small machine (two cores, a few GiB to spare).

The data's bytes follow from the task's sizes. The saved forward values are measured: one
training step of the emitted NumPy module at a few batch sizes and lengths, its peak allocation
traced (tracemalloc sees NumPy's arrays), fitted as c + r B + m B T and taken at the run's batch
and length (within 2% of the traced peak for the built-in cells at B = 1000, T = 20 to 300;
MARGIN is added).
The time is a model calibrated on two cores (matrix products at RATE, a fixed cost per step and
node), and the decay measurement at the initial weights is checked with decay's own
check_budget."""

from __future__ import annotations

import math
import tracemalloc
from dataclasses import dataclass

import numpy as np

from derive_cells.train.model import CELL, NumpyModel, init_params
from derive_cells.train.tasks import REVIEW_LENGTH, VOCAB, Dataset, Task
from derive_cells.verify.decay.measurement import (
    MEMORY_BUDGET,
    Setup,
    SetupError,
    check_budget,
    jacobian_work,
)

RATE = 2e9  # floating-point operations per second of the matrix products, two cores
STEP_SECONDS = 20e-6  # Python's cost of one time step of one batch ...
NODE_SECONDS = 2.5e-6  # ... and of each node of the derivation in that step
TIME_BUDGET = 24 * 3600.0  # seconds: longer experiments are refused
EVAL_BATCH = 1000  # rows per forward pass when a model is evaluated (NumpyModel.evaluate)
DECAY_BATCH = 16  # sequences the decay measurement at the initial weights runs at once
DECAY_BURN_IN = 100  # steps of the task's own sequences run before the measured ones
DECAY_WINDOW = 50  # at least this many measured steps (more: the task's longest sequence)
MARGIN = 1.1  # on the fitted bytes of a training step
TRANSIENT = 2  # a data set's generator holds this many more copies of its inputs at its peak
DEFAULT_SIZES = (2000, 500)  # the generators' train and test rows
DISTANCE_PREFIX = 5  # the distance task's longest neutral prefix (tasks.distance)


class BudgetError(ValueError):
    """An experiment that would not fit the memory or time budget."""


@dataclass(frozen=True)
class Shape:
    """One task's data as the budget sees it: rows, the longest sequence, and token ids from a
    vocabulary of `vocab` words or `features` floats per step."""

    n_train: int
    n_test: int
    steps: int
    vocab: int | None
    features: int | None
    fresh: bool = False  # fresh training rows every epoch (the generated tasks)

    @property
    def data_bytes(self) -> int:
        per_row = self.steps * (self.features or 1) * 8 + 16  # inputs, length and target
        return (self.n_train + self.n_test) * per_row

    @property
    def epoch_bytes(self) -> int:
        """A fresh-row task keeps epoch 1's rows and draws each later epoch's beside them."""
        return self.n_train * (self.steps * (self.features or 1) * 8 + 16) if self.fresh else 0

    @property
    def transient_bytes(self) -> int:
        return TRANSIENT * max(self.n_train, self.n_test) * self.steps * (self.features or 1) * 8


def shapes_for(task: str, points: list[dict], train_size: int | None,
               test_size: int | None) -> list[Shape] | None:
    """The shapes of a synthetic task's sweep points, before their data is made (None for
    reviews, whose size is known once it is read)."""
    n_train = train_size or DEFAULT_SIZES[0]
    n_test = test_size or DEFAULT_SIZES[1]
    if task == "sentiment":
        return [Shape(n_train, n_test, REVIEW_LENGTH[1], len(VOCAB), None, True)]
    if task == "distance":
        return [Shape(n_train, n_test, p["distance"] + 1 + DISTANCE_PREFIX, len(VOCAB), None,
                      True) for p in points]
    if task == "adding":
        return [Shape(n_train, n_test, p["steps"], None, 2, True) for p in points]
    return None


def shape_of(task: Task) -> Shape:
    train, test = task.train, task.test
    steps = max(int(train.inputs.shape[1]), int(test.inputs.shape[1]), 1)
    if train.tokens:
        return Shape(len(train), len(test), steps, len(train.vocab), None, task.fresh)
    return Shape(len(train), len(test), steps, None, int(train.inputs.shape[-1]), task.fresh)


def data_bytes(shapes: list[Shape]) -> int:
    """Every sweep point's data is kept; the largest one's generator needs a few copies more,
    and a fresh-row task one epoch's rows more while it trains."""
    return sum(s.data_bytes for s in shapes) + max(s.transient_bytes + s.epoch_bytes
                                                   for s in shapes)


def check_data(shapes: list[Shape]) -> None:
    """Refuse data that alone would not fit the memory budget."""
    need = data_bytes(shapes)
    if need > MEMORY_BUDGET:
        largest = max(shapes, key=lambda s: s.data_bytes)
        raise BudgetError(
            f"the data would take {_gib(need)} (at most {_gib(MEMORY_BUDGET)}): "
            f"{_count(len(shapes), 'data set')}, the largest of {largest.n_train} + "
            f"{largest.n_test} rows of {largest.steps} steps; use fewer rows (--train-size, "
            "--test-size), shorter sequences or fewer sweep points")


@dataclass
class Estimate:
    runs: int
    memory: int  # bytes at the peak
    seconds: float

    def describe(self) -> str:
        return (f"{_count(self.runs, 'run')}, about "
                f"{_duration(self.seconds)} and {_gib(self.memory)} at the peak (estimated)")


def _peak(fn) -> int:
    """Bytes fn allocates at its peak above what was allocated before it."""
    tracing = tracemalloc.is_tracing()
    if not tracing:
        tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        fn()
        return max(tracemalloc.get_traced_memory()[1] - base, 0)
    finally:
        if not tracing:
            tracemalloc.stop()


def _batch(shape: Shape, rows: int, steps: int) -> Dataset:
    if shape.vocab:
        inputs = (np.arange(rows * steps).reshape(rows, steps) % max(shape.vocab - 1, 1)) + 1
    else:
        inputs = np.full((rows, steps, shape.features), 0.5)
    return Dataset("budget", inputs.astype(np.int64) if shape.vocab else inputs,
                   np.full(rows, steps, np.int64), (np.arange(rows) % 2).astype(np.float64),
                   "binary", VOCAB[:1] + ("w",) * (shape.vocab - 1) if shape.vocab else None)


@dataclass(frozen=True)
class StepCost:
    """A training step's peak bytes c + r B + m B T, the parameters' bytes, the matrices'
    weights W (2 W operations per row and step forward, 4 W backward) and the node count."""

    c: float
    r: float
    m: float
    param_bytes: int
    weights: int
    nodes: int

    def memory(self, rows: int, steps: int) -> float:
        return MARGIN * max(self.c + self.r * rows + self.m * rows * steps, 0.0)


def step_cost(module, deriv, shape: Shape, config) -> StepCost:
    """Measure the emitted NumPy module's training step at a few small sizes."""
    H = config.hidden
    small = _batch(shape, 2, 2)
    params = init_params(module, deriv, small, config.embed, H, config.seed, None, config.dtype)
    model = NumpyModel(module, params, "binary", optimizer="sgd", lr=0.0, clip=None)
    width = max(H, config.embed if shape.vocab else shape.features)
    b1, t1, t2 = max(8, 2**14 // width), 8, 24  # large enough that the fit holds
    peaks = {(b, t): _peak(lambda b=b, t=t: model.gradients(_batch(shape, b, t)))
             for b, t in ((b1, t1), (b1, t2), (2 * b1, t1))}
    m = (peaks[b1, t2] - peaks[b1, t1]) / (b1 * (t2 - t1))
    r = (peaks[2 * b1, t1] - peaks[b1, t1]) / b1 - m * t1
    c = peaks[b1, t1] - r * b1 - m * b1 * t1
    weights = sum(v.size for n, v in params.items() if n.startswith(CELL) and v.ndim == 2)
    return StepCost(c, r, max(m, 0.0), sum(v.nbytes for v in params.values()), weights,
                    len(deriv.nodes))


def decay_setup(shape_steps: int, input_size: int, config) -> Setup:
    """The decay measurement at a run's initial weights (train.decay_at)."""
    return Setup(steps=max(shape_steps, DECAY_WINDOW), batch=DECAY_BATCH, hidden=config.hidden,
                 input_size=input_size, seed=config.seed, dtype="float64",
                 burn_in=DECAY_BURN_IN)


def estimate(variants: list, shapes: list[Shape], config, decay: bool) -> Estimate:
    """Memory and time of training every variant on every shape; BudgetError over budget."""
    memory, seconds, costs = 0.0, 0.0, {}
    for v in variants:
        for shape in shapes:
            key = (id(v.deriv), shape.vocab, shape.features)
            if key not in costs:
                costs[key] = step_cost(v.modules["numpy"], v.deriv, shape, config)
            cost = costs[key]
            batch = min(config.batch_size, shape.n_train)
            evaluated = min(EVAL_BATCH, max(shape.n_train, shape.n_test))
            need = (4 * cost.param_bytes + max(cost.memory(batch, shape.steps),
                                               cost.memory(evaluated, shape.steps)))
            if need > MEMORY_BUDGET:
                raise BudgetError(
                    f"{v.label}: a training step of {batch} rows of {shape.steps} steps at "
                    f"hidden size {config.hidden} would keep about {_gib(need)} (at most "
                    f"{_gib(MEMORY_BUDGET)}); use a smaller --batch-size or --hidden, or "
                    "shorter sequences")
            memory = max(memory, need)
            seconds += _seconds(cost, shape, config)
            if decay:
                seconds += _decay(v, shape, config, cost)
    if seconds > TIME_BUDGET:
        raise BudgetError(
            f"{_count(len(variants) * len(shapes), 'run')} would take about "
            f"{_duration(seconds)} on two cores (at most {_duration(TIME_BUDGET)}); use fewer "
            "--epochs, fewer rows (--train-size), a smaller --hidden or shorter sequences")
    return Estimate(len(variants) * len(shapes), int(memory + data_bytes(shapes)), seconds)


def _seconds(cost: StepCost, shape: Shape, config) -> float:
    per_step = STEP_SECONDS + NODE_SECONDS * cost.nodes
    T, epochs = shape.steps, config.epochs
    train_rows = epochs * shape.n_train * T
    train_batches = epochs * math.ceil(shape.n_train / config.batch_size) * T
    eval_rows = (epochs + 1) * (shape.n_train + shape.n_test) * T
    eval_batches = (epochs + 1) * (math.ceil(shape.n_train / EVAL_BATCH)
                                   + math.ceil(shape.n_test / EVAL_BATCH)) * T
    return ((6 * train_rows + 2 * eval_rows) * cost.weights / RATE
            + (train_batches + eval_batches / 2) * per_step)


def _decay(variant, shape: Shape, config, cost: StepCost) -> float:
    """Check the decay measurement with decay's own budget; its seconds."""
    input_size = config.embed if shape.vocab else shape.features
    setup = decay_setup(shape.steps, input_size, config)
    try:
        check_budget(variant.modules["numpy"], variant.deriv, setup)
    except SetupError as exc:
        reason = str(exc).split("; use ")[0].removeprefix(f"{variant.deriv.cell.name}: ")
        raise BudgetError(
            f"{variant.label}: measuring the gradient decay at the initial weights (as "
            f"`derive-cells decay --steps {setup.steps} --batch {setup.batch} --hidden "
            f"{setup.hidden}` would) is over its budget: {reason}; use a smaller --hidden, "
            "or --no-decay") from None
    work = jacobian_work(variant.deriv, setup)
    per_step = STEP_SECONDS + NODE_SECONDS * cost.nodes
    watched = config.epochs + 1  # at the initial weights and after every epoch
    steps = setup.burn_in + 2 * setup.steps  # burn-in forward, then forward and backward
    return work / RATE + watched * (6 * cost.weights * setup.batch * steps / RATE
                                    + steps * per_step)


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'s' if n != 1 else ''}"


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 / 10 else f"{n / 2**20:.0f} MiB"


def _duration(seconds: float) -> str:
    for unit, size in (("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"
