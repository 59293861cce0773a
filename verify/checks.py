"""The checks behind `derive-cells verify`: emitted modules against independent references.

Per cell x backend x dtype, on several shapes (T=1, B=1, odd sizes) and a saturated-gate case:
  forward / gradients against PyTorch's own module (rnn, rnn_relu, lstm, gru),
  forward / gradients against autograd over a direct Torch evaluation of the spec (every cell),
  the adjoint entering through the outputs only and through the final state only,
  central finite differences (float64): every element on a small case, random directions on a
  longer one, the derived per-step Jacobian against torch.autograd.functional.jacobian, and
  NumPy against Torch, and a padded batch with unequal, unsorted lengths, forward and
  reversed, against each row run alone over its own steps. References always run in float64
  (on the inputs the module saw).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np
import torch

from derive_cells.spec import Cell
from derive_cells.verify import reference
from derive_cells.verify.inputs import Problem, compare, make_problem
from derive_cells.verify.modules import Runner

SHAPES = [(1, 1, 3, 4), (4, 3, 5, 7), (9, 2, 3, 5)]
LENGTHS = (5, 2, 4, 1)  # a padded batch of T=5: unequal, unsorted, one full row, one of 1 step
TOLERANCE = {  # relative error ||a - b|| / ||b|| per array
    "float64": {"default": 1e-10, "saturated": 1e-8, "finite-differences": 1e-6,
                "numpy-vs-torch": 1e-12},
    "float32": {"default": 1e-4, "saturated": 1e-4, "numpy-vs-torch": 1e-5},
}


@dataclass
class Result:
    cell: str
    backend: str
    dtype: str
    check: str
    array: str
    max_rel_error: float
    tolerance: float
    passed: bool
    case: str = ""
    index: tuple[int, ...] = ()
    block: str = ""
    expected: float = 0.0
    actual: float = 0.0

    def as_dict(self) -> dict:
        out = asdict(self)
        out["index"] = list(self.index)
        for k in ("max_rel_error", "expected", "actual"):
            v = out[k]
            out[k] = v if np.isfinite(v) else str(v)
        return out


def _block(runner: Runner, array: str, found) -> str:
    """The gate block of a packed parameter that holds the worst element."""
    if not array.startswith("d_params[") or not found.index:
        return ""
    blocks = runner.BLOCKS.get(array[len("d_params["):-1], ())
    if len(blocks) < 2:
        return blocks[0] if blocks else ""
    per = max(found.shape[0] // len(blocks), 1)
    return blocks[min(found.index[0] // per, len(blocks) - 1)]


def _arrays(out, s_T, grads=None) -> dict[str, np.ndarray]:
    arrays = {"outputs": out, **{f"state_T[{n}]": v for n, v in s_T.items()}}
    if grads is not None:
        d_x, d_s0, d_p = grads
        arrays["d_x"] = d_x
        arrays.update({f"d_state0[{n}]": v for n, v in d_s0.items()})
        arrays.update({f"d_params[{n}]": v for n, v in d_p.items()})
    return arrays


def _grad(leaf: torch.Tensor) -> np.ndarray:
    """A leaf's gradient; zeros for one the loss never reads (an unused input, state or
    parameter), which is what the emitted backward must return for it."""
    return leaf.grad.numpy() if leaf.grad is not None else np.zeros(leaf.shape)


def _torch_tree(tree):
    return {k: torch.tensor(np.asarray(v, dtype=np.float64), requires_grad=True)
            for k, v in tree.items()}


def reference_lengths(cell: Cell, problem: Problem, lengths, reverse: bool
                      ) -> dict[str, np.ndarray]:
    """The packed-sequence reference, float64: each row b alone, truncated to its first
    lengths[b] steps (run last to first when reverse), through autograd over reference.run;
    outputs are zero at padded steps, state_T is each row's state after its own last step, and
    the gradients are those of <d_out, outputs> + <d_T, state_T>."""
    x = torch.tensor(np.asarray(problem.x, np.float64), requires_grad=True)
    s0, p = _torch_tree(problem.state0), _torch_tree(problem.params)
    d_out = torch.tensor(np.float64(problem.d_outputs))
    rows, finals, loss = [], {n: [] for n in s0}, 0 * x.sum()
    for b, n_b in enumerate(lengths):
        xb = x[:n_b, b:b + 1]
        out, s_T = reference.run(cell, xb.flip(0) if reverse else xb,
                                 {n: v[b:b + 1] for n, v in s0.items()}, p)
        out = out.flip(0) if reverse else out
        pad = out.new_zeros((x.shape[0] - n_b, *out.shape[1:]))
        rows.append(torch.cat([out, pad]))
        loss = loss + (out * d_out[:n_b, b:b + 1]).sum()
        for n, v in s_T.items():
            finals[n].append(v)
            loss = loss + (v * torch.tensor(np.float64(problem.d_state_T[n][b:b + 1]))).sum()
    out = torch.cat(rows, dim=1)
    s_T = {n: torch.cat(v) for n, v in finals.items()}
    if loss.requires_grad:
        loss.backward()
    grads = (_grad(x), {n: _grad(v) for n, v in s0.items()}, {n: _grad(v) for n, v in p.items()})
    return _arrays(out.detach().numpy(), {n: v.detach().numpy() for n, v in s_T.items()}, grads)


def reference_run(cell: Cell, problem: Problem, use_nn: bool, with_outputs=True,
                  with_state=True) -> dict[str, np.ndarray]:
    """Forward values and gradients of <d_out, outputs> + <d_T, state_T> by autograd, float64."""
    x = torch.tensor(np.asarray(problem.x, np.float64), requires_grad=True)
    s0, p = _torch_tree(problem.state0), _torch_tree(problem.params)
    if use_nn:
        out, s_T = reference.nn_run(cell.name, x, s0, p)
    else:
        out, s_T = reference.run(cell, x, s0, p)
    loss = 0 * out.sum()
    if with_outputs:
        loss = loss + (out * torch.tensor(np.float64(problem.d_outputs))).sum()
    if with_state:
        loss = loss + sum((s_T[n] * torch.tensor(np.float64(problem.d_state_T[n]))).sum()
                          for n in s_T)
    if loss.requires_grad:  # False when no input, state or parameter reaches the loss
        loss.backward()
    grads = (_grad(x), {n: _grad(v) for n, v in s0.items()}, {n: _grad(v) for n, v in p.items()})
    return _arrays(out.detach().numpy(), {n: v.detach().numpy() for n, v in s_T.items()}, grads)


class Checker:
    """Runs the checks of one cell on one backend and dtype; yields Results."""

    def __init__(self, cell: Cell, runner: Runner, backend: str, dtype: str,
                 other: Runner | None = None, cache: dict | None = None):
        self.cell, self.runner, self.backend, self.dtype = cell, runner, backend, dtype
        self.other = other  # the other backend's runner, for numpy-vs-torch
        self.cache = cache if cache is not None else {}
        self.np_dtype = np.float64 if dtype == "float64" else np.float32

    def tol(self, check: str) -> float:
        table = TOLERANCE[self.dtype]
        return table.get(check, table["default"])

    def problems(self) -> list[Problem]:
        base = [make_problem(self.runner, *shape, seed=11 + k) for k, shape in enumerate(SHAPES)]
        return [p.astype(self.np_dtype) for p in base]

    def results(self, check: str, found: dict[str, list[tuple[str, object]]],
                tol: float) -> Iterator[Result]:
        """One Result per array: the worst case over the problems it was compared on."""
        for array, cases in found.items():
            case, worst = max(cases, key=lambda c: c[1].max_rel_error)
            yield Result(self.cell.name, self.backend, self.dtype, check, array,
                         worst.max_rel_error, tol, bool(worst.max_rel_error <= tol), case,
                         worst.index, _block(self.runner, array, worst),
                         worst.expected, worst.actual)

    def run_module(self, problem: Problem, with_outputs=True, with_state=True, runner=None):
        runner = runner or self.runner
        out, s_T, cache = runner.forward(problem.x, problem.state0, problem.params)
        grads = runner.backward(problem.d_outputs if with_outputs else None,
                                problem.d_state_T if with_state else None, cache)
        return _arrays(out, s_T, grads)

    def reference(self, problem: Problem, use_nn: bool, **kw) -> dict[str, np.ndarray]:
        key = (problem.label, str(problem.x.dtype), use_nn, tuple(sorted(kw.items())))
        if key not in self.cache:
            self.cache[key] = reference_run(self.cell, problem, use_nn, **kw)
        return self.cache[key]

    def against(self, name: str, use_nn: bool, problems: list[Problem],
                tol_key: str = "default", **kw) -> Iterator[Result]:
        forward, gradient = {}, {}
        for problem in problems:
            ours, ref = self.run_module(problem, **kw), self.reference(problem, use_nn, **kw)
            for array, value in ours.items():
                bucket = gradient if array.startswith("d_") else forward
                bucket.setdefault(array, []).append((problem.label, compare(value, ref[array])))
        tol = self.tol(tol_key)
        if kw:  # an adjoint entry point on its own: only the gradients say anything
            yield from self.results(name, gradient, tol)
            return
        yield from self.results(f"{name} forward", forward, tol)
        yield from self.results(f"{name} gradients", gradient, tol)

    def all(self) -> Iterator[Result]:
        problems = self.problems()
        if self.cell.name in reference.NN_MODULES and self.cell.source == self.cell.name:
            title = reference.NN_MODULES[self.cell.name][0]
            yield from self.against(f"vs {title}", True, problems)
        yield from self.against("vs autograd", False, problems)
        yield from self.against("adjoint via outputs only", False, problems[1:2],
                                with_state=False)
        yield from self.against("adjoint via state_T only", False, problems[1:2],
                                with_outputs=False)
        saturated = make_problem(self.runner, 5, 3, 4, 6, seed=5, scale=20.0,
                                 label="saturated: weights x20, inputs x3")
        yield from self.against("saturated gates", False, [saturated.astype(self.np_dtype)],
                                "saturated")
        if self.dtype == "float64":
            yield from self.finite_differences()
        if hasattr(self.runner.module, "step_jacobian"):
            yield from self.jacobian()
        if self.other is not None:
            yield from self.numpy_vs_torch(problems)
        if _takes_lengths(self.runner.module):
            yield from self.variable_lengths(reverse=False)
            yield from self.variable_lengths(reverse=True)

    def variable_lengths(self, reverse: bool) -> Iterator[Result]:
        """A padded batch with unequal, unsorted lengths (and reversed) against each row alone:
        outputs (and, on their own, the padded steps' outputs, which must be zero), final
        states, d_x, d_state0 and every d_param."""
        T, B = max(LENGTHS), len(LENGTHS)
        problem = make_problem(self.runner, T, B, 3, 5, seed=21,
                               label=f"T={T} B={B} I=3 H=5 lengths={list(LENGTHS)}")
        problem = problem.astype(self.np_dtype)
        lengths = np.array(LENGTHS)
        out, s_T, cache = self.runner.forward(problem.x, problem.state0, problem.params,
                                              lengths=lengths, reverse=reverse)
        ours = _arrays(out, s_T, self.runner.backward(problem.d_outputs, problem.d_state_T,
                                                      cache))
        key = (problem.label, str(problem.x.dtype), "lengths", reverse)
        if key not in self.cache:
            self.cache[key] = reference_lengths(self.cell, problem, LENGTHS, reverse)
        ref = self.cache[key]
        padded = np.arange(T)[:, None] >= lengths[None, :]  # (T, B): steps past a row's end
        found = {"outputs": [(problem.label, compare(out, ref["outputs"]))],
                 "outputs at padded steps": [(problem.label, compare(
                     np.asarray(out)[padded], np.zeros_like(ref["outputs"][padded])))]}
        found.update({array: [(problem.label, compare(value, ref[array]))]
                      for array, value in ours.items() if array != "outputs"})
        name = "variable lengths, reverse" if reverse else "variable lengths"
        yield from self.results(name, found, self.tol("default"))

    def loss(self, problem: Problem) -> float:
        out, s_T, _ = self.runner.forward(problem.x, problem.state0, problem.params)
        total = float((out * problem.d_outputs).sum())
        return total + sum(float((s_T[n] * problem.d_state_T[n]).sum()) for n in s_T)

    def finite_differences(self, eps: float = 1e-6) -> Iterator[Result]:
        """Every element on a small case; random directions on a longer one."""
        problem = make_problem(self.runner, 3, 2, 3, 3, seed=3, label="T=3 B=2 I=3 H=3")
        grads = self.run_module(problem)
        found = {}
        for array, holder, key in _leaves(problem):
            target = holder[key] if key is not None else holder
            numeric = np.zeros_like(target)
            for idx in np.ndindex(target.shape):
                keep = target[idx]
                target[idx] = keep + eps
                up = self.loss(problem)
                target[idx] = keep - eps
                down = self.loss(problem)
                target[idx] = keep
                numeric[idx] = (up - down) / (2 * eps)
            found[array] = [(problem.label, compare(grads[array], numeric))]
        yield from self.results("finite differences", found, self.tol("finite-differences"))
        longer = make_problem(self.runner, 12, 2, 3, 4, seed=4, label="T=12 B=2 I=3 H=4")
        grads = self.run_module(longer)
        rng = np.random.default_rng(0)
        cases = []
        for k in range(3):
            direction = {array: rng.standard_normal(np.shape(grads[array]))
                         for array, _, _ in _leaves(longer)}
            analytic = sum(float((grads[a] * v).sum()) for a, v in direction.items())
            _shift(longer, direction, eps)
            up = self.loss(longer)
            _shift(longer, direction, -2 * eps)
            down = self.loss(longer)
            _shift(longer, direction, eps)
            numeric = (up - down) / (2 * eps)
            cases.append((f"{longer.label}, direction {k}", compare(analytic, numeric)))
        yield from self.results("finite differences, random directions",
                                {"directional derivative": cases},
                                self.tol("finite-differences"))

    def jacobian(self) -> Iterator[Result]:
        problem = make_problem(self.runner, 1, 3, 4, 5, seed=8).astype(self.np_dtype)
        jac = self.runner.step_jacobian(problem.x[0], problem.state0, problem.params)
        blocks = reference.unpack(self.cell, {n: torch.tensor(np.float64(v))
                                              for n, v in problem.params.items()})
        found = {}
        for b in range(problem.x.shape[1]):
            xb = torch.tensor(np.float64(problem.x[0, b:b + 1]))

            def step(*prev, xb=xb):
                state = dict(zip(self.runner.STATE, prev, strict=True))
                values = reference.step(self.cell, xb, state, blocks)
                return tuple(values[s] for s in self.runner.STATE)

            full = torch.autograd.functional.jacobian(
                step, tuple(torch.tensor(np.float64(problem.state0[n][b:b + 1]))
                            for n in self.runner.STATE))
            for i, s in enumerate(self.runner.STATE):
                for j, sp in enumerate(self.runner.STATE):
                    found.setdefault(f"J[{s},{sp}]", []).append(
                        (f"batch row {b}", compare(jac[s, sp][b], full[i][j][0, :, 0, :].numpy())))
        yield from self.results("per-step Jacobian", found, self.tol("default"))

    def numpy_vs_torch(self, problems: list[Problem]) -> Iterator[Result]:
        found = {}
        for problem in problems:
            a, b = self.run_module(problem), self.run_module(problem, runner=self.other)
            for array in a:
                found.setdefault(array, []).append((problem.label, compare(a[array], b[array])))
        yield from self.results("numpy vs torch", found, self.tol("numpy-vs-torch"))


def _takes_lengths(module) -> bool:
    """Whether a module's forward takes lengths and reverse (modules emitted before they were
    added do not, and are checked without them)."""
    try:
        names = inspect.signature(module.forward).parameters
    except (TypeError, ValueError):
        return False
    return "lengths" in names and "reverse" in names


def _leaves(problem: Problem):
    """(gradient array name, container, key) of every input a gradient is taken for."""
    yield "d_x", problem.x, None
    for n in problem.state0:
        yield f"d_state0[{n}]", problem.state0, n
    for n in problem.params:
        yield f"d_params[{n}]", problem.params, n


def _shift(problem: Problem, direction: dict[str, np.ndarray], step: float) -> None:
    for array, holder, key in _leaves(problem):
        if key is None:
            holder += step * direction[array]
        else:
            holder[key] += step * direction[array]

