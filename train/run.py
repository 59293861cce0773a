"""Training runs: one cell on one task with the derived gradients, epoch by epoch, and the
distance sweep (every cell from scratch at every distance on the same budget).

A run records the loss of every step, the train and test loss and accuracy (or MSE) after every
epoch (epoch 0: before training), the epoch at which the test metric first reached the target,
the seconds per epoch, and the gradient decay rate measured at the run's initial weights.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from derive_cells.train.model import CELL, EMBEDDING, NumpyModel, init_params
from derive_cells.train.tasks import Task, batches

DEFAULT_LR = {"sgd": 0.5, "adam": 0.01}
DEFAULT_TARGET = {"binary": 0.9, "regression": 0.01}  # test accuracy >= / test MSE <=

# What a run accepts, the command line's options and Cell.train alike (Config checks them).
CHOICES = {"backend": ("numpy", "torch", "torch.nn"), "optimizer": ("adam", "sgd"),
           "dtype": ("float32", "float64")}
INT_RANGES = {"epochs": (1, 10_000), "batch_size": (1, 100_000), "embed": (1, 1024),
              "hidden": (1, 1024), "seed": (0, 2**32 - 2)}
FLOAT_RANGES = {"lr": (1e-8, 100.0), "clip": (0.0, 1e6), "target": (0.0, 1e6)}  # None allowed


@dataclass(frozen=True)
class Config:
    backend: str = "numpy"  # numpy | torch | torch.nn
    optimizer: str = "adam"  # sgd | adam
    lr: float | None = None  # default: DEFAULT_LR[optimizer]
    epochs: int = 10
    batch_size: int = 32
    embed: int = 16
    hidden: int = 32
    clip: float | None = 1.0  # global gradient norm; None: no clipping
    seed: int = 0
    dtype: str = "float32"
    target: float | None = None  # default: DEFAULT_TARGET[kind]

    def __post_init__(self) -> None:
        """Refuse (ValueError) what the command line refuses; clip 0 means no clipping."""
        for name, allowed in CHOICES.items():
            value = getattr(self, name)
            if not isinstance(value, str) or value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
        for name, (low, high) in INT_RANGES.items():
            value = getattr(self, name)
            if (isinstance(value, bool) or not isinstance(value, (int, np.integer))
                    or not low <= value <= high):
                raise ValueError(f"{name} must be an integer in {low}..{high}; got {value!r}")
            object.__setattr__(self, name, int(value))
        for name, (low, high) in FLOAT_RANGES.items():
            value = getattr(self, name)
            if value is None:
                continue
            if (isinstance(value, bool) or not isinstance(value, (int, float, np.number))
                    or not math.isfinite(value) or not low <= value <= high):
                raise ValueError(f"{name} must be a finite number in {low:g}..{high:g}, or "
                                 f"None; got {value!r}")
            object.__setattr__(self, name, float(value))
        if self.clip == 0:
            object.__setattr__(self, "clip", None)

    @property
    def learning_rate(self) -> float:
        return DEFAULT_LR[self.optimizer] if self.lr is None else self.lr


@dataclass
class Variant:
    """A cell as trained: its derivation and emitted modules, and the forget bias it starts
    with (None: PyTorch's initialisation unchanged)."""

    label: str
    deriv: object
    modules: dict  # target -> emitted module
    forget_bias: float | None = None


@dataclass
class Run:
    cell: str
    task: str
    info: dict
    backend: str
    forget_bias: float | None
    metric: str  # "accuracy" or "mse"
    target: float
    chance: float
    epochs: list[dict] = field(default_factory=list)  # epoch, train/test loss and metric, seconds
    step_losses: list[float] = field(default_factory=list)
    reached: int | None = None  # first epoch with the test metric at the target
    seconds_per_epoch: float | None = None
    decay: dict | None = None  # rate per step and half-life at the initial weights

    @property
    def final(self) -> dict:
        return self.epochs[-1]

    def as_dict(self) -> dict:
        out = asdict(self)
        out["step_losses"] = [round(v, 12) for v in self.step_losses]
        return out


def variants(cells: list, forget_biases: list[float] | None) -> list[tuple[object, float | None]]:
    """(derivation, forget bias) pairs: every value for a cell with a forget gate 'f', one run
    with PyTorch's initialisation for the others."""
    from derive_cells.verify.decay.measurement import _roles

    out = []
    for deriv in cells:
        has_f = bool(_roles(deriv)[2].get("f"))
        for b in (forget_biases if forget_biases and has_f else [None]):
            out.append((deriv, b))
    return out


def label(deriv, forget_bias: float | None, several: bool) -> str:
    return deriv.cell.name + (f" (b_f={forget_bias:g})" if several and forget_bias is not None
                              else "")


def make_model(variant: Variant, task: Task, config: Config, params=None):
    """The model of a variant on a task, with the initial weights init_params draws."""
    if params is None:
        params = init_params(variant.modules["numpy"], variant.deriv, task.train, config.embed,
                             config.hidden, config.seed, variant.forget_bias, config.dtype)
    options = dict(optimizer=config.optimizer, lr=config.learning_rate, clip=config.clip)
    kind = task.train.kind
    if config.backend == "numpy":
        return NumpyModel(variant.modules["numpy"], params, kind, **options), params
    from derive_cells.train.model_torch import TorchModel

    return TorchModel(variant.modules["torch"], variant.deriv.cell, params, kind,
                      backend=config.backend, **options), params


def _reached(kind: str, metric: float, target: float) -> bool:
    return metric >= target if kind == "binary" else metric <= target


def train(variant: Variant, task: Task, config: Config, progress=None,
          decay: bool = True) -> Run:
    """Train from scratch; progress(message) after every epoch."""
    kind = task.train.kind
    target = config.target if config.target is not None else DEFAULT_TARGET[kind]
    model, params = make_model(variant, task, config)
    run = Run(variant.label, task.name, dict(task.train.info), model.backend,
              variant.forget_bias, "accuracy" if kind == "binary" else "mse", target,
              task.chance)
    if decay:
        run.decay = decay_at(variant, task, config, params, progress)
    rng = np.random.default_rng(config.seed + 1)  # the batch order: the same on every backend

    def record(epoch: int, seconds: float) -> None:
        train_loss, train_metric = model.evaluate(task.train)
        test_loss, test_metric = model.evaluate(task.test)
        run.epochs.append(dict(epoch=epoch, train_loss=train_loss, train_metric=train_metric,
                               test_loss=test_loss, test_metric=test_metric, seconds=seconds))
        if run.reached is None and epoch and _reached(kind, test_metric, target):
            run.reached = epoch

    record(0, 0.0)
    for epoch in range(1, config.epochs + 1):
        start = time.perf_counter()
        for index in batches(len(task.train), config.batch_size, rng):
            try:
                loss = model.step(task.train.subset(index))
                if not np.isfinite(loss):
                    raise FloatingPointError(f"the loss became {loss}")
            except (FloatingPointError, ValueError) as exc:
                if isinstance(exc, ValueError) and "finite" not in str(exc):
                    raise
                raise FloatingPointError(
                    f"{variant.label} diverged at epoch {epoch}, step {len(run.step_losses) + 1}"
                    f" ({exc}); try a smaller --lr, or --clip") from None
            run.step_losses.append(loss)
        seconds = time.perf_counter() - start
        record(epoch, seconds)
        if progress:
            e = run.epochs[-1]
            progress(f"{variant.label} [{task.name}{_info(task)}] epoch {epoch}/{config.epochs}: "
                     f"train loss {e['train_loss']:.4f}, test {run.metric} "
                     f"{e['test_metric']:.4f} ({seconds:.2f} s)")
    timed = [e["seconds"] for e in run.epochs[1:]]
    run.seconds_per_epoch = float(np.mean(timed)) if timed else None
    return run


def _info(task: Task) -> str:
    return "".join(f", {k}={v}" for k, v in task.train.info.items() if k in ("distance", "steps"))


def decay_at(variant: Variant, task: Task, config: Config, params: dict,
             progress=None) -> dict:
    """The gradient decay rate per step at the run's initial cell weights, measured as
    `derive-cells decay` does over the task's sequence length (inputs drawn from N(0, 1), as
    the embedding's rows are), for the state the read-out reads."""
    from derive_cells.train.budget import decay_setup
    from derive_cells.verify.decay.measurement import measure

    cell_params = {n[len(CELL):]: v for n, v in params.items() if n.startswith(CELL)}
    embedding = params.get(EMBEDDING)
    I = embedding.shape[1] if embedding is not None else task.train.inputs.shape[-1]
    setup = decay_setup(int(task.train.inputs.shape[1]), I, config)
    start = time.perf_counter()
    if progress:
        progress(f"{variant.label}: measuring the gradient decay at the initial weights "
                 f"(T={setup.steps}, B={setup.batch}, H={setup.hidden}) ...")
    m = measure(variant.modules["numpy"], variant.deriv, setup, params=cell_params,
                progress=progress)
    if progress:
        progress(f"{variant.label}: gradient decay measured ({time.perf_counter() - start:.1f} s)")
    cell = variant.deriv.cell
    state = cell.output if cell.output in cell.state else cell.state[0]
    return {"state": state, "steps": setup.steps, "rate_per_step": m.rate_per_step[state],
            "half_life": m.half_life[state], "rates": m.rate_per_step}
