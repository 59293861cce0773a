"""A direct Torch evaluation of a spec's forward equations, for autograd to differentiate.

It reads only the parsed spec (the SymPy expression of each equation) and walks it with Torch
operations; it shares nothing with the derivation or the emitted modules, so it is an
independent reference for them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import sympy
import torch

from derive_cells.functions import Exp, Log, Relu, Sigmoid, Softplus, Sqrt, Tanh
from derive_cells.spec import Cell, MatVec

TORCH_FUNCTIONS = {
    Sigmoid: torch.sigmoid,
    Tanh: torch.tanh,
    Relu: torch.relu,
    Exp: torch.exp,
    Log: torch.log,
    Softplus: torch.nn.functional.softplus,
    Sqrt: torch.sqrt,
}


_RECORDERS: list[list[float]] = []


@contextmanager
def recording() -> Iterator[list[float]]:
    """Within the block, the largest |argument| of every function call (sigmoid, tanh, exp,
    ...) that _evaluate makes is appended to the yielded list."""
    seen: list[float] = []
    _RECORDERS.append(seen)
    try:
        yield seen
    finally:
        _RECORDERS.remove(seen)


def _call(function, arg):
    if _RECORDERS and (not torch.is_tensor(arg) or arg.numel()):
        largest = float(torch.as_tensor(arg).detach().abs().max())
        for seen in _RECORDERS:
            seen.append(largest)
    return function(arg)


def _evaluate(expr: sympy.Expr, env: dict[str, torch.Tensor], cut: bool = False):
    """Evaluate with Torch; cut=True stops gradients at matrix products (elementwise paths)."""
    if expr.is_Symbol:
        return env[expr.name]
    if expr.is_Number:
        return float(expr)
    if isinstance(expr, MatVec):
        matrix, operand = expr.args
        product = _evaluate(operand, env, cut) @ env[matrix.name].T
        return product.detach() if cut else product
    if type(expr) in TORCH_FUNCTIONS:
        return _call(TORCH_FUNCTIONS[type(expr)], _evaluate(expr.args[0], env, cut))
    args = [_evaluate(a, env, cut) for a in expr.args]
    if expr.is_Add:
        out = args[0]
        for a in args[1:]:
            out = out + a
        return out
    if expr.is_Mul:
        out = args[0]
        for a in args[1:]:
            out = out * a
        return out
    if expr.is_Pow:
        return args[0] ** args[1]
    raise TypeError(f"cannot evaluate {type(expr).__name__} in {expr}")


def unpack(cell: Cell, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Packed parameters (as in the emitted PARAMS) -> per-equation blocks."""
    out = {}
    packed = {m for members in cell.pack.values() for m in members}
    for name, members in cell.pack.items():
        out.update(zip(members, torch.chunk(params[name], len(members), dim=0), strict=True))
    out.update({n: params[n] for n in cell.params if n not in packed})
    return out


def step(cell: Cell, x_t: torch.Tensor, state: dict[str, torch.Tensor],
         blocks: dict[str, torch.Tensor], cut: bool = False) -> dict[str, torch.Tensor]:
    """One step: every equation's value, given x_t (B, I) and the previous states (B, H).
    cut=True stops gradients at the matrix products: what is left is elementwise."""
    env = dict(blocks)
    env[cell.input] = x_t
    env.update({f"{s}_prev": v for s, v in state.items()})
    values = {}
    for target, expr, _text in cell.equations:
        values[target] = env[target] = _evaluate(expr, env, cut)
    return values


def direct_path(cell: Cell, x_t, state: dict, blocks: dict) -> dict[str, torch.Tensor]:
    """The diagonal of d s_t / d s_{t-1} along the elementwise path alone (LSTM's c: f; the
    GRU's h: z), for every state s: (B, H)."""
    prev = {s: v.detach().clone().requires_grad_() for s, v in state.items()}
    values = step(cell, x_t, prev, blocks, cut=True)
    out = {}
    for s in cell.state:
        if not values[s].requires_grad:
            out[s] = torch.zeros_like(prev[s])
            continue
        (grad,) = torch.autograd.grad(values[s].sum(), prev[s], allow_unused=True)
        out[s] = grad if grad is not None else torch.zeros_like(prev[s])
    return out


def run(cell: Cell, x: torch.Tensor, state0: dict[str, torch.Tensor],
        params: dict[str, torch.Tensor]):
    """x: (T, B, I) -> (outputs (T, B, H), final states {name: (B, H)})."""
    blocks = unpack(cell, params)
    state, outputs = dict(state0), []
    for t in range(x.shape[0]):
        values = step(cell, x[t], state, blocks)
        state = {s: values[s] for s in cell.state}
        outputs.append(values[cell.output])
    return torch.stack(outputs), state


NN_MODULES = {
    "rnn": ("torch.nn.RNN", lambda I, H: torch.nn.RNN(I, H, nonlinearity="tanh")),
    "rnn_relu": ("torch.nn.RNN(nonlinearity='relu')",
                 lambda I, H: torch.nn.RNN(I, H, nonlinearity="relu")),
    "lstm": ("torch.nn.LSTM", lambda I, H: torch.nn.LSTM(I, H)),
    "gru": ("torch.nn.GRU", lambda I, H: torch.nn.GRU(I, H)),
}


def nn_run(cell_name: str, x: torch.Tensor, state0: dict[str, torch.Tensor],
           params: dict[str, torch.Tensor]):
    """The same sequence through PyTorch's own module, with our tensors as its parameters
    (so autograd reaches them): returns (outputs (T, B, H), final states {name: (B, H)})."""
    _, make = NN_MODULES[cell_name]
    H = next(iter(state0.values())).shape[-1]
    module = make(x.shape[-1], H).to(x.dtype)
    weights = {f"{n}_l0": v for n, v in params.items()}
    if cell_name == "lstm":
        hx = (state0["h"][None], state0["c"][None])
        out, (h_T, c_T) = torch.func.functional_call(module, weights, (x, hx))
        return out, {"h": h_T[0], "c": c_T[0]}
    out, h_T = torch.func.functional_call(module, weights, (x, state0["h"][None]))
    return out, {"h": h_T[0]}
