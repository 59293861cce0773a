"""The article's model, on the derived code in NumPy alone (no autograd anywhere):

    tokens --embedding--> x (T, B, I) --cell over each row's own length--> h (B, H), the
    state after the row's last step --> z = w . h + b --> y_hat = sigmoid(z), BCE (binary tasks)
                                                     or z itself, MSE (regression tasks)

The backward pass is the emitted module's backward for the cell, the embedding's scatter-add,
and the read-out's two lines. Parameters are one flat dict named like a torch state_dict:
``embedding.weight`` (V, I) (token tasks only), ``cell.<name>`` (as the module's PARAMS),
``readout.weight`` (H,), ``readout.bias`` (1,). The Torch backends (train/model_torch.py) use
the same names and the same initial values.
"""

from __future__ import annotations

import math

import numpy as np

from derive_cells.train.optim import OPTIMIZERS, clip_by_global_norm
from derive_cells.train.tasks import Dataset

EMBEDDING, WEIGHT, BIAS = "embedding.weight", "readout.weight", "readout.bias"
CELL = "cell."


def init_params(module, deriv, data: Dataset, embed: int, hidden: int, seed: int,
                forget_bias: float | None = None, dtype: str = "float32",
                gate_bias: dict[str, float] | None = None,
                chrono: float | None = None) -> dict[str, np.ndarray]:
    """Initial values as PyTorch draws them: the embedding from N(0, 1) (nn.Embedding), the
    cell's parameters from U(+-1/sqrt(H)) (nn.LSTM), the read-out from U(+-1/sqrt(H))
    (nn.Linear). Then, as the emitted layer does: chrono (T_max) sets the CHRONO gates' biases to
    +-log U(1, T_max - 1) per unit (drawn from (seed, 1)), and gate_bias (gate -> value;
    forget_bias is {"f": value}) sets each named gate's pre-activation bias: its first bias
    (GATE_BIASES) to the value, its others to 0."""
    from derive_cells.verify.decay.measurement import Setup, make_params

    rng = np.random.default_rng(seed)
    out = {}
    if data.tokens:
        out[EMBEDDING] = rng.standard_normal((len(data.vocab), embed))
        I = embed
    else:
        I = data.inputs.shape[-1]
    setup = Setup(hidden=hidden, input_size=I, dtype="float64")
    cell = make_params(module, deriv, setup, I, hidden, rng)
    if forget_bias is not None:
        gate_bias = {"f": forget_bias, **(gate_bias or {})}
    set_gate_biases(module, deriv, cell, hidden, gate_bias, chrono, seed)
    out.update({CELL + name: value for name, value in cell.items()})
    bound = 1 / math.sqrt(hidden)
    out[WEIGHT] = rng.uniform(-bound, bound, hidden)
    out[BIAS] = rng.uniform(-bound, bound, 1)
    return {name: value.astype(dtype) for name, value in out.items()}


def set_gate_biases(module, deriv, cell: dict[str, np.ndarray], hidden: int,
                    gate_bias: dict[str, float] | None, chrono: float | None, seed: int) -> None:
    """Set gate biases in the packed cell parameters (in place), as the emitted layer's
    set_chrono_bias and set_gate_bias do; ValueError for a gate or a cell that has none."""
    from derive_cells.emit.torch_layer import chrono_gates
    from derive_cells.verify.decay.measurement import _roles

    gates = _roles(deriv)[2]
    values: dict[str, np.ndarray | float] = {}
    if chrono is not None:
        keep = chrono_gates(deriv, gates)
        if not keep:
            raise ValueError(f"{deriv.cell.name}: chrono initialisation needs a keeping gate "
                             "(one that multiplies a previous state) with a bias; it has none")
        u = np.random.default_rng([int(seed), 1]).uniform(1.0, float(chrono) - 1.0, hidden)
        values.update({g: sign * np.log(u) for g, sign in keep.items()})
    for gate, value in (gate_bias or {}).items():
        if gate not in gates:
            raise ValueError(f"{deriv.cell.name}: no gate {gate!r} with a bias; the gates whose "
                             f"bias can be set are {', '.join(gates) or 'none'}")
        values[gate] = float(value)
    for gate, value in values.items():
        for k, b in enumerate(gates[gate]):
            name, j = next((n, m.index(b)) for n, m in module.BLOCKS.items() if b in m)
            cell[name][j * hidden:(j + 1) * hidden] = value if k == 0 else 0.0


def time_major(inputs: np.ndarray, params: dict) -> np.ndarray:
    """Batch-major inputs (B, T) token ids or (B, T, F) features -> x (T, B, I)."""
    if inputs.ndim == 2:
        return params[EMBEDDING][inputs.T]
    return np.ascontiguousarray(inputs.transpose(1, 0, 2)).astype(params[WEIGHT].dtype)


def last_output(module, outputs, state_T, lengths):
    """(B, H): the output after each row's own last step (the state itself when the output is a
    state; else the row's output at step lengths - 1)."""
    output = getattr(module, "OUTPUT", module.STATE[0])
    if output in module.STATE:
        return state_T[output]
    return outputs[lengths - 1, np.arange(len(lengths))]


def loss_of(kind: str, z: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean loss over the batch and dL/dz: BCE of sigmoid(z) (stable form
    log(1 + e^z) - y z) for binary targets, squared error for regression."""
    z64 = z.astype(np.float64)
    if kind == "binary":
        loss = float(np.mean(np.logaddexp(0.0, z64) - y * z64))
        sig = np.exp(-np.logaddexp(0.0, -z64))
        return loss, ((sig - y) / len(y)).astype(z.dtype)
    loss = float(np.mean((z64 - y) ** 2))
    return loss, (2 * (z64 - y) / len(y)).astype(z.dtype)


def metric_of(kind: str, z: np.ndarray, y: np.ndarray) -> float:
    """Accuracy at the 0.5 threshold (sigmoid(z) > 0.5, i.e. z > 0), or the MSE."""
    if kind == "binary":
        return float(np.mean((z > 0) == (y > 0.5)))
    return float(np.mean((z.astype(np.float64) - y) ** 2))


class NumpyModel:
    """The model trained with the emitted NumPy module's forward and backward."""

    backend = "numpy"

    def __init__(self, module, params: dict[str, np.ndarray], kind: str,
                 optimizer: str = "sgd", lr: float = 0.1, clip: float | None = None):
        self.module, self.kind, self.clip = module, kind, clip
        self.params = {name: np.array(value) for name, value in params.items()}
        self.cell = {name[len(CELL):]: value for name, value in self.params.items()
                     if name.startswith(CELL)}  # views of the same arrays
        self.optimizer = OPTIMIZERS[optimizer](self.params, lr=lr)

    def scores(self, data: Dataset):
        """z (B,) for a batch, with what backward needs."""
        x = time_major(data.inputs, self.params)
        lengths = data.lengths
        outputs, state_T, cache = self.module.forward(x, {}, self.cell, lengths=lengths)
        h = last_output(self.module, outputs, state_T, lengths)
        z = h @ self.params[WEIGHT] + self.params[BIAS][0]
        return z, (h, outputs.shape, cache)

    def gradients(self, data: Dataset) -> tuple[float, dict[str, np.ndarray]]:
        """The batch's mean loss and the gradient of every parameter."""
        z, (h, shape, cache) = self.scores(data)
        with np.errstate(over="ignore", invalid="ignore"):
            loss, d_z = loss_of(self.kind, z, data.targets)
            d_h = d_z[:, None] * self.params[WEIGHT][None, :]
        if not (np.isfinite(loss) and np.isfinite(d_h).all()):
            raise FloatingPointError(f"the loss ({loss:.3g}) or its gradient overflowed")
        grads = {WEIGHT: h.T @ d_z, BIAS: np.sum(d_z, keepdims=True)}
        output = getattr(self.module, "OUTPUT", self.module.STATE[0])
        if output in self.module.STATE:
            d_x, _, d_cell = self.module.backward(None, {output: d_h}, cache)
        else:
            d_outputs = np.zeros(shape, h.dtype)
            d_outputs[data.lengths - 1, np.arange(len(h))] = d_h
            d_x, _, d_cell = self.module.backward(d_outputs, None, cache)
        grads.update({CELL + name: g for name, g in d_cell.items()})
        if EMBEDDING in self.params:  # x[t, b] = E[token[b, t]]: scatter-add d_x into rows of E
            E = self.params[EMBEDDING]
            d_E = np.zeros_like(E)
            np.add.at(d_E, data.inputs.T.reshape(-1), d_x.reshape(-1, E.shape[1]))
            grads[EMBEDDING] = d_E
        return loss, grads

    def step(self, data: Dataset) -> float:
        """One update on a batch; returns the batch's loss before the update."""
        loss, grads = self.gradients(data)
        with np.errstate(over="ignore", invalid="ignore"):
            if self.clip is not None:
                clip_by_global_norm(grads, self.clip)
            self.optimizer.step(grads)
        bad = [n for n, p in self.params.items() if not np.isfinite(p).all()]
        if bad:
            raise FloatingPointError(f"the update made {bad[0]} non-finite")
        return loss

    def evaluate(self, data: Dataset, batch_size: int = 1000) -> tuple[float, float]:
        """(mean loss, accuracy or MSE) over a whole data set."""
        zs = [self.scores(data.subset(np.arange(i, min(i + batch_size, len(data)))))[0]
              for i in range(0, len(data), batch_size)]
        z = np.concatenate(zs)
        return loss_of(self.kind, z, data.targets)[0], metric_of(self.kind, z, data.targets)

    def state(self) -> dict[str, np.ndarray]:
        return {name: value.copy() for name, value in self.params.items()}
