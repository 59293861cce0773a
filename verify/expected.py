"""What a correct module returns on a problem: autograd over PyTorch's own module or over the
direct Torch evaluation of the spec (verify.reference), in float64 or, to measure what rounding
does on the same problem (verify.tolerances), in float32.

Every function returns {array name: value}: outputs (T, B, H), state_T[s] (B, H) and, with
gradients, d_x (T, B, I), d_state0[s] (B, H), d_params[p] (PARAMS shapes), as NumPy float64.
"""

from __future__ import annotations

import numpy as np
import torch

from derive_cells.spec import Cell
from derive_cells.verify import reference
from derive_cells.verify.inputs import Problem

DTYPES = {"float64": torch.float64, "float32": torch.float32}


def arrays(out, s_T, grads=None) -> dict[str, np.ndarray]:
    """The named arrays a check compares, from forward and (optionally) backward results."""
    found = {"outputs": out, **{f"state_T[{n}]": v for n, v in s_T.items()}}
    if grads is not None:
        d_x, d_s0, d_p = grads
        found["d_x"] = d_x
        found.update({f"d_state0[{n}]": v for n, v in d_s0.items()})
        found.update({f"d_params[{n}]": v for n, v in d_p.items()})
    return found


def _grad(leaf: torch.Tensor) -> np.ndarray:
    """A leaf's gradient; zeros for one the loss never reads (an unused input, state or
    parameter), which is what the emitted backward must return for it."""
    if leaf.grad is None:
        return np.zeros(leaf.shape)
    return leaf.grad.numpy().astype(np.float64)


def _tensor(value, dtype: str, grad: bool = False) -> torch.Tensor:
    return torch.tensor(np.asarray(value, np.float64), dtype=DTYPES[dtype], requires_grad=grad)


def _leaves(problem: Problem, dtype: str):
    x = _tensor(problem.x, dtype, True)
    s0 = {k: _tensor(v, dtype, True) for k, v in problem.state0.items()}
    p = {k: _tensor(v, dtype, True) for k, v in problem.params.items()}
    return x, s0, p


def _finish(loss, x, s0, p, out, s_T) -> dict[str, np.ndarray]:
    grads = _gradients(loss, x, s0, p)
    return arrays(_numpy(out), {n: _numpy(v) for n, v in s_T.items()}, grads)


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().numpy().astype(np.float64)


def _gradients(loss, x, s0, p, retain: bool = False):
    """(d_x, d_state0, d_params) of loss; zeros for what the loss does not read."""
    leaves = [x, *s0.values(), *p.values()]
    if loss.requires_grad:  # False when no input, state or parameter reaches the loss
        found = torch.autograd.grad(loss, leaves, retain_graph=retain, allow_unused=True)
    else:
        found = [None] * len(leaves)
    grads = [np.zeros(leaf.shape) if g is None else _numpy(g)
             for leaf, g in zip(leaves, found, strict=True)]
    d_s0 = dict(zip(s0, grads[1:1 + len(s0)], strict=True))
    return grads[0], d_s0, dict(zip(p, grads[1 + len(s0):], strict=True))


def run(cell: Cell, problem: Problem, use_nn: bool, dtype: str = "float64"
        ) -> dict[str, dict[str, np.ndarray]]:
    """Forward values and gradients by autograd of <d_out, outputs> ("outputs"), of
    <d_T, state_T> ("state") and of their sum ("both": the sum of the two gradients): one
    forward run, two backward runs."""
    x, s0, p = _leaves(problem, dtype)
    if use_nn:
        out, s_T = reference.nn_run(cell.name, x, s0, p)
    else:
        out, s_T = reference.run(cell, x, s0, p)
    zero = 0 * out.sum()
    by_outputs = zero + (out * _tensor(problem.d_outputs, dtype)).sum()
    by_state = zero + sum((s_T[n] * _tensor(problem.d_state_T[n], dtype)).sum() for n in s_T)
    values = arrays(_numpy(out), {n: _numpy(v) for n, v in s_T.items()})
    outputs = arrays(_numpy(out), {}, _gradients(by_outputs, x, s0, p, retain=True))
    state = arrays(_numpy(out), {}, _gradients(by_state, x, s0, p))
    both = {a: v + state[a] for a, v in outputs.items() if a.startswith("d_")}
    return {"outputs": {**values, **outputs}, "state": {**values, **state},
            "both": {**values, **both}}


def run_lengths(cell: Cell, problem: Problem, lengths, reverse: bool,
                dtype: str = "float64") -> dict[str, np.ndarray]:
    """The packed-sequence reference: each row b alone, truncated to its first lengths[b]
    steps (run last to first when reverse), through autograd over reference.run; outputs are
    zero at padded steps, state_T is each row's state after its own last step, and the
    gradients are those of <d_out, outputs> + <d_T, state_T>."""
    x, s0, p = _leaves(problem, dtype)
    d_out = _tensor(problem.d_outputs, dtype)
    rows, finals, loss = [], {n: [] for n in s0}, 0 * x.sum()
    for b, n_b in enumerate(lengths):
        xb = x[:n_b, b:b + 1]
        out, s_T = reference.run(cell, xb.flip(0) if reverse else xb,
                                 {n: v[b:b + 1] for n, v in s0.items()}, p)
        out = out.flip(0) if reverse else out
        rows.append(torch.cat([out, out.new_zeros((x.shape[0] - n_b, *out.shape[1:]))]))
        loss = loss + (out * d_out[:n_b, b:b + 1]).sum()
        for n, v in s_T.items():
            finals[n].append(v)
            loss = loss + (v * _tensor(problem.d_state_T[n][b:b + 1], dtype)).sum()
    out = torch.cat(rows, dim=1)
    return _finish(loss, x, s0, p, out, {n: torch.cat(v) for n, v in finals.items()})


def step_jacobian(cell: Cell, state_names, problem: Problem, dtype: str = "float64"
                  ) -> dict[tuple[str, str], np.ndarray]:
    """d s_t / d s'_{t-1} of the first step of problem, per batch row: {(s, s'): (B, H, H)}."""
    blocks = reference.unpack(cell, {n: _tensor(v, dtype) for n, v in problem.params.items()})
    found: dict[tuple[str, str], list[np.ndarray]] = {}
    for b in range(problem.x.shape[1]):
        xb = _tensor(problem.x[0, b:b + 1], dtype)

        def step(*prev, xb=xb):
            values = reference.step(cell, xb, dict(zip(state_names, prev, strict=True)), blocks)
            return tuple(values[s] for s in state_names)

        full = torch.autograd.functional.jacobian(
            step, tuple(_tensor(problem.state0[n][b:b + 1], dtype) for n in state_names))
        for i, s in enumerate(state_names):
            for j, sp in enumerate(state_names):
                found.setdefault((s, sp), []).append(
                    full[i][j][0, :, 0, :].numpy().astype(np.float64))
    return {k: np.stack(v) for k, v in found.items()}


def preactivation_range(cell: Cell, problem: Problem) -> float:
    """The largest |argument| of any function (sigmoid, tanh, exp, ...) over the problem's
    forward run, float64."""
    x, s0, p = _leaves(problem, "float64")
    with torch.no_grad(), reference.recording() as seen:
        reference.run(cell, x, s0, p)
    return max(seen, default=0.0)
