"""The same model as train/model.py on Torch, with torch.optim and autograd for everything
outside the cell. Two ways to run the cell:

- ``torch``: the emitted Torch module, whose autograd.Function runs the derived backward;
- ``torch.nn``: an independent reference: torch.nn.RNN/LSTM/GRU where the cell is one of
  them, else autograd over a direct Torch evaluation of the spec (verify/reference.py). Each
  row runs the whole padded sequence and the output is read at the row's last valid step,
  which needs no lengths support at all.
"""

from __future__ import annotations

import numpy as np
import torch

from derive_cells.train.model import BIAS, CELL, EMBEDDING, WEIGHT
from derive_cells.train.tasks import Dataset
from derive_cells.verify import reference

DTYPES = {np.dtype("float32"): torch.float32, np.dtype("float64"): torch.float64}


class TorchModel:
    """The model on Torch; the cell through the emitted module (backend 'torch') or the
    reference (backend 'torch.nn')."""

    def __init__(self, module, cell, params: dict[str, np.ndarray], kind: str,
                 optimizer: str = "sgd", lr: float = 0.1, clip: float | None = None,
                 backend: str = "torch"):
        self.module, self.spec, self.kind, self.clip = module, cell, kind, clip
        self.backend, self._nn = backend, None
        self.params = {name: torch.tensor(np.array(value), requires_grad=True)
                       for name, value in params.items()}
        self.cell = {name[len(CELL):]: value for name, value in self.params.items()
                     if name.startswith(CELL)}
        make = {"sgd": lambda ps: torch.optim.SGD(ps, lr=lr),
                "adam": lambda ps: torch.optim.Adam(ps, lr=lr)}[optimizer]
        self.optimizer = make(list(self.params.values()))
        if backend == "torch.nn" and cell.name not in reference.NN_MODULES:
            self.backend = "autograd"  # no torch.nn module has this cell

    def _inputs(self, data: Dataset) -> torch.Tensor:
        if data.tokens:
            return self.params[EMBEDDING][torch.from_numpy(data.inputs.T)]
        return torch.from_numpy(data.inputs.transpose(1, 0, 2).copy()).to(
            self.params[WEIGHT].dtype)

    def _last(self, x: torch.Tensor, lengths: np.ndarray) -> torch.Tensor:
        B, H = x.shape[1], self.params[WEIGHT].shape[0]
        rows, last = torch.arange(B), torch.from_numpy(lengths - 1)
        if self.backend == "torch":
            output = getattr(self.module, "OUTPUT", self.module.STATE[0])
            out, state_T, _ = self.module.forward(x, {}, self.cell,
                                                  lengths=torch.from_numpy(lengths), check=False)
            return state_T[output] if output in state_T else out[last, rows]
        if self.backend == "torch.nn":  # the module runs with our tensors as its parameters
            if self._nn is None:
                self._nn = reference.NN_MODULES[self.spec.name][1](x.shape[-1], H).to(x.dtype)
            weights = {f"{n}_l0": v for n, v in self.cell.items()}
            out = torch.func.functional_call(self._nn, weights, (x,))[0]
        else:
            state0 = {s: x.new_zeros(B, H) for s in self.spec.state}
            out, _ = reference.run(self.spec, x, state0, self.cell)
        return out[last, rows]

    def _scores(self, data: Dataset) -> torch.Tensor:
        h = self._last(self._inputs(data), data.lengths)
        return h @ self.params[WEIGHT] + self.params[BIAS][0]

    def _loss(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.kind == "binary":
            return torch.nn.functional.binary_cross_entropy_with_logits(z, y)
        return torch.nn.functional.mse_loss(z, y)

    def step(self, data: Dataset) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        z = self._scores(data)
        loss = self._loss(z, torch.from_numpy(data.targets).to(z.dtype))
        loss.backward()
        for p in self.params.values():  # parameters the loss never reaches get a zero update
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        if self.clip is not None:
            torch.nn.utils.clip_grad_norm_(list(self.params.values()), self.clip)
        self.optimizer.step()
        return float(loss.detach())

    def gradients(self, data: Dataset) -> tuple[float, dict[str, np.ndarray]]:
        """The batch's mean loss and every parameter's gradient (no update)."""
        for p in self.params.values():
            p.grad = None
        z = self._scores(data)
        loss = self._loss(z, torch.from_numpy(data.targets).to(z.dtype))
        loss.backward()
        return float(loss.detach()), {n: (p.grad.numpy().copy() if p.grad is not None else
                                          np.zeros(tuple(p.shape))) for n, p in
                                      self.params.items()}

    @torch.no_grad()
    def evaluate(self, data: Dataset, batch_size: int = 1000) -> tuple[float, float]:
        from derive_cells.train.model import loss_of, metric_of

        zs = [self._scores(data.subset(np.arange(i, min(i + batch_size, len(data)))))
              for i in range(0, len(data), batch_size)]
        z = torch.cat(zs).numpy()
        return loss_of(self.kind, z, data.targets)[0], metric_of(self.kind, z, data.targets)

    def state(self) -> dict[str, np.ndarray]:
        return {name: value.detach().numpy().copy() for name, value in self.params.items()}
