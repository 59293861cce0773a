"""Training runs: one cell on one task with the derived gradients, epoch by epoch, and the
distance sweep (every cell from scratch at every distance on the same budget).

A run records the loss of every step, the train and test loss and accuracy (or MSE) after every
epoch (epoch 0: before training), the epoch at which the test metric first reached the target,
the seconds per epoch, and the gradient's decay rate per step, watched on a fixed probe batch
of the task's own sequences at the initial weights (epoch 0) and after every epoch (decay_at,
decay_rate), with the horizon it predicts from the initial weights (predicted_horizon).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np

from derive_cells.train.model import CELL, NumpyModel, init_params
from derive_cells.train.tasks import Task, batches

DEFAULT_LR = {"sgd": 0.5, "adam": 0.01}
DEFAULT_TARGET = {"binary": 0.9, "regression": 0.01}  # test accuracy >= / test MSE <=
DECAY_EPSILON = 1e-3  # predicted_horizon: the distance at which the rate at init compounds below

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
    """A cell as trained: its derivation and emitted modules, and the gate biases it starts
    with (None: PyTorch's initialisation unchanged): forget_bias (gate f), gate_bias (gate ->
    value), chrono (T_max of chrono initialisation; gate_bias is set after it)."""

    label: str
    deriv: object
    modules: dict  # target -> emitted module
    forget_bias: float | None = None
    gate_bias: dict | None = None
    chrono: float | None = None


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
    gate_bias: dict | None = None  # gate -> initial bias; None: none set
    init: str = "pytorch"  # or "chrono" (with tmax)
    tmax: float | None = None
    predicted_horizon: float | None = None  # ln(DECAY_EPSILON) / ln(rate at init); None: no decay

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


def initialisations(cells: list, gate_biases: dict[str, list[float]] | None,
                    chrono: float | None = None) -> list[tuple[object, dict | None,
                                                                float | None]]:
    """(derivation, gate biases, chrono T_max) of every run: for each cell, one run per
    combination of the values of the given gates it has (gate_biases: gate -> values; None:
    PyTorch's initialisation of that gate), or one with PyTorch's initialisation for a cell
    that has none of them; and one more with chrono initialisation when asked and the cell has
    a keeping gate."""
    import itertools

    from derive_cells.emit.torch_layer import chrono_gates
    from derive_cells.verify.decay.measurement import _roles

    out = []
    for deriv in cells:
        gates = _roles(deriv)[2]
        mine = {g: v for g, v in (gate_biases or {}).items() if g in gates}
        runs = [(deriv, {g: v for g, v in zip(mine, combo, strict=True) if v is not None}
                 or None, None) for combo in itertools.product(*mine.values())] if mine else []
        out += runs or [(deriv, None, None)]
        if chrono is not None and chrono_gates(deriv, gates):
            out.append((deriv, None, chrono))
    return out


def init_label(deriv, gate_bias: dict | None, chrono: float | None) -> str:
    """The cell's name and the gate biases it starts with: "lstm (b_f=3)", "gru (b_z=3)",
    "lstm (chrono, T_max=160)"."""
    if chrono is not None:
        return f"{deriv.cell.name} (chrono, T_max={chrono:g})"
    if gate_bias:
        return f"{deriv.cell.name} ({', '.join(f'b_{g}={v:g}' for g, v in gate_bias.items())})"
    return deriv.cell.name


def make_model(variant: Variant, task: Task, config: Config, params=None):
    """The model of a variant on a task, with the initial weights init_params draws."""
    if params is None:
        params = init_params(variant.modules["numpy"], variant.deriv, task.train, config.embed,
                             config.hidden, config.seed, variant.forget_bias, config.dtype,
                             variant.gate_bias, variant.chrono)
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
    run.gate_bias, run.tmax = variant.gate_bias, variant.chrono
    run.init = "pytorch" if variant.chrono is None else "chrono"
    probe = probe_batch(task, config) if decay else None
    if decay:
        run.decay = decay_at(variant, task, config, params, progress, probe)
        run.predicted_horizon = horizon(run.decay["rate_per_step"])
    rng = np.random.default_rng(config.seed + 1)  # the batch order: the same on every backend

    def record(epoch: int, seconds: float, rows) -> None:  # rows: the epoch's training rows
        train_loss, train_metric = model.evaluate(rows)
        test_loss, test_metric = model.evaluate(task.test)
        run.epochs.append(dict(epoch=epoch, train_loss=train_loss, train_metric=train_metric,
                               test_loss=test_loss, test_metric=test_metric, seconds=seconds))
        run.epochs[-1]["decay_rate"] = (None if probe is None else run.decay["rate_per_step"]
                                        if epoch == 0 else decay_rate(variant, probe, model.state(),
                                                                      config, run.decay))
        if run.reached is None and epoch and _reached(kind, test_metric, target):
            run.reached = epoch

    record(0, 0.0, task.train)
    for epoch in range(1, config.epochs + 1):
        start = time.perf_counter()
        rows = task.epoch_rows(epoch)  # generated tasks: fresh rows every epoch
        for index in batches(len(rows), config.batch_size, rng):
            try:
                loss = model.step(rows.subset(index))
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
        record(epoch, seconds, rows)
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


@dataclass(frozen=True)
class Probe:
    """The sequences the decay is watched on: each of `rows` fixed test rows (drawn per seed)
    preceded by other test rows, the last burn_in + steps steps of that stream. The first
    burn_in steps only run forward (a state that starts at zero hides slow decay); the gradient
    of the read-out's loss at the probe row's last step is measured over the last `steps`."""

    inputs: np.ndarray  # (B, burn_in + steps) token ids, or (B, burn_in + steps, F) features
    labels: np.ndarray  # (B,) 0/1: the sign of each row's adjoint (its rate does not depend on it)
    rows: np.ndarray  # (B,) the test rows that end the probe sequences
    steps: int
    burn_in: int


def probe_batch(task: Task, config: Config) -> Probe:
    """The fixed probe batch of a run (the same for every epoch, cell and variant of a seed)."""
    from derive_cells.train.budget import decay_setup

    test = task.test
    n, shape = len(test), test.inputs.shape
    setup = decay_setup(int(shape[1]), 1, config)
    total = setup.burn_in + setup.steps
    rng = np.random.default_rng([int(config.seed), 0xDECA])
    rows = rng.choice(n, size=setup.batch, replace=n < setup.batch)
    lengths = np.maximum(np.asarray(test.lengths), 1)
    streams = []
    for r in rows:
        pieces, size = [test.inputs[r, :lengths[r]]], int(lengths[r])
        while size < total:
            k = int(rng.integers(n))
            pieces.insert(0, test.inputs[k, :lengths[k]])
            size += int(lengths[k])
        streams.append(np.concatenate(pieces)[-total:])
    targets = np.asarray(test.targets, np.float64)[rows]
    labels = (targets > (0.5 if test.kind == "binary" else 1.0)).astype(np.float64)
    return Probe(np.stack(streams), labels, rows, setup.steps, setup.burn_in)


def horizon(rate: float | None, epsilon: float = DECAY_EPSILON) -> float | None:
    """The distance d at which rate**d falls below epsilon: ln(epsilon) / ln(rate); None where
    the rate is not below 1 (no vanishing) or was not measured."""
    if rate is None or not 0 < rate < 1:
        return None
    return math.log(epsilon) / math.log(rate)


def _probe_measurement(variant: Variant, probe: Probe, params: dict, config: Config,
                       theory: bool):
    """`derive-cells decay`'s measurement (verify/decay/measurement.measure) on the probe: the
    cell's weights, the probe's embedded inputs, the model's read-out weight, burn-in."""
    from derive_cells.train.budget import decay_setup
    from derive_cells.train.model import WEIGHT, time_major
    from derive_cells.verify.decay.measurement import measure

    cell_params = {n[len(CELL):]: v for n, v in params.items() if n.startswith(CELL)}
    x = time_major(probe.inputs, params)  # (burn_in + steps, B, I) with the current embedding
    setup = decay_setup(probe.steps, int(x.shape[-1]), config)
    return setup, measure(variant.modules["numpy"], variant.deriv, setup, params=cell_params,
                          inputs=x, readout=params[WEIGHT], labels=probe.labels, theory=theory)


def _state(variant: Variant) -> str:
    cell = variant.deriv.cell
    return cell.output if cell.output in cell.state else cell.state[0]


def decay_rate(variant: Variant, probe: Probe, params: dict, config: Config,
               record: dict | None = None) -> float | None:
    """The measured rate per step of the read-out's state on the probe at these weights (no
    theory: NumPy only). record: a run's decay dict, which counts the measurement's seconds."""
    start = time.perf_counter()
    _, m = _probe_measurement(variant, probe, params, config, theory=False)
    if record is not None:
        record["measurements"] = record.get("measurements", 0) + 1
        record["seconds"] = record.get("seconds", 0.0) + time.perf_counter() - start
    return m.rate_per_step[_state(variant)]


def decay_at(variant: Variant, task: Task, config: Config, params: dict,
             progress=None, probe: Probe | None = None) -> dict:
    """The gradient decay rate per step at the run's initial weights, measured as
    `derive-cells decay` does (verify/decay/measurement.measure, with burn-in) on the run's
    probe batch of the task's own sequences, for the state the read-out reads; the theory beside
    it (gate product or bound) only where torch is installed."""
    probe = probe if probe is not None else probe_batch(task, config)
    try:  # the theory (measurement._predict) builds the step Jacobian's factors with torch
        import torch  # noqa: F401

        theory = True
    except ImportError:
        theory = False
    start = time.perf_counter()
    if progress:
        progress(f"{variant.label}: measuring the gradient decay at the initial weights "
                 f"(burn-in {probe.burn_in} + T={probe.steps} steps of the task's test rows, "
                 f"B={len(probe.rows)}, H={config.hidden}) ...")
    setup, m = _probe_measurement(variant, probe, params, config, theory)
    seconds = time.perf_counter() - start
    if progress:
        progress(f"{variant.label}: gradient decay measured ({seconds:.1f} s)")
    state = _state(variant)
    return {"state": state, "steps": setup.steps, "burn_in": setup.burn_in,
            "probe_rows": [int(r) for r in probe.rows], "epsilon": DECAY_EPSILON,
            "rate_per_step": m.rate_per_step[state], "half_life": m.half_life[state],
            "rates": m.rate_per_step,
            "predicted_rate_per_step": m.predicted_rate_per_step.get(state),
            "prediction": m.prediction.get(state), "theory": theory,
            "measurements": 1, "seconds": seconds}
