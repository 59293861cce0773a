"""Agreement with PyTorch along a whole training run, not at one point.

The same model is trained twice in float64 with plain SGD, from the same initial weights on the
same batches: once with the emitted NumPy module (the derived backward, no autograd), once with
torch.nn.RNN/LSTM/GRU and autograd (or, for a cell torch.nn does not have, autograd over a
direct Torch evaluation of the spec). The loss of every step and the final parameters must agree
to a relative tolerance; any wrong gradient, at any step, sends the two runs apart.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from derive_cells.train.model import NumpyModel
from derive_cells.train.run import Config, Variant, make_model
from derive_cells.train.tasks import Task, batches

TOLERANCE = 1e-9


@dataclass
class Agreement:
    cell: str
    task: str
    reference: str  # what the NumPy run was compared with
    steps: int
    max_loss_error: float  # max over steps of |loss - reference| / |reference|
    worst_step: int
    max_param_error: float  # max over parameters of ||p - reference|| / ||reference||
    worst_param: str
    tolerance: float

    @property
    def passed(self) -> bool:
        return self.max_loss_error <= self.tolerance and self.max_param_error <= self.tolerance

    def as_dict(self) -> dict:
        return {**self.__dict__, "passed": self.passed}


def _relative(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = max(float(np.max(np.abs(b))), 1e-300)
    diff = np.linalg.norm((a - b) / scale)
    ref = np.linalg.norm(b / scale)
    return float(diff / ref) if ref > 0 else float(diff)


def agreement(variant: Variant, task: Task, config: Config, steps: int = 20,
              tolerance: float = TOLERANCE) -> Agreement:
    """Train `steps` SGD steps (float64) with NumPy and with the reference; compare."""
    from derive_cells.verify.reference import NN_MODULES

    config = replace(config, optimizer="sgd", dtype="float64")
    np_model, params = make_model(variant, task, replace(config, backend="numpy"))
    ref_model, _ = make_model(variant, task, replace(config, backend="torch.nn"), params)
    assert isinstance(np_model, NumpyModel)
    rng = np.random.default_rng(config.seed + 1)
    order: list[tuple] = []  # (the epoch's rows, a batch's index): as train() runs them
    epoch = 0
    while len(order) < steps:
        epoch += 1
        rows = task.epoch_rows(epoch)  # generated tasks: fresh rows every epoch
        order += [(rows, index) for index in batches(len(rows), config.batch_size, rng)]
    worst, worst_step = 0.0, 0
    for k, (rows, index) in enumerate(order[:steps]):
        batch = rows.subset(index)
        a, b = np_model.step(batch), ref_model.step(batch)
        error = abs(a - b) / max(abs(b), 1e-300)
        if not error <= worst:  # nan counts as the worst
            worst, worst_step = error, k + 1
    mine, theirs = np_model.state(), ref_model.state()
    param_errors = {n: _relative(mine[n], theirs[n]) for n in theirs}
    worst_param = max(param_errors, key=lambda n: (np.nan_to_num(param_errors[n], nan=np.inf)))
    name = variant.deriv.cell.name
    reference = (f"{NN_MODULES[name][0]} + autograd" if name in NN_MODULES else
                 "autograd over the spec's equations (verify/reference.py)")
    return Agreement(variant.label, task.name, reference, steps, worst, worst_step,
                     param_errors[worst_param], worst_param, tolerance)
