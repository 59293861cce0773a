"""The checks behind `derive-cells verify`: emitted modules against independent references.

Per cell x backend x dtype, on small odd shapes (T=1, B=1, ...), a long and wide case (by
default T=200 steps, B=130 rows, H and I apart from both: past any cut-off in time or batch)
and a saturated case (pre-activations of mixed size up to +-1e3: past the end of exp's range
at -87.7 in float32 and -708 in float64):
  forward / gradients against PyTorch's own module (rnn, rnn_relu, lstm, gru),
  forward / gradients against autograd over a direct Torch evaluation of the spec (every cell),
  the adjoint entering through the outputs only and through the final state only,
  central finite differences (float64, verify.finite_differences), the derived per-step
  Jacobian against torch.autograd.functional.jacobian, NumPy against Torch, and a padded batch
  with unequal, unsorted lengths, forward and reversed, against each row run alone over its own
  steps. Every case holds values exact in float32, so both dtypes run on the same numbers and
  one float64 reference serves both; the reference runs once more in float32 to measure the
  rounding error of the problem itself, and tolerances follow from it (verify.tolerances):
  max(floor, 10 * k * (u / u32) * e32) per array, e32 that measured relative error, u the
  dtype's unit roundoff, k the number of sides rounding in the dtype; for finite differences
  max(1e-6, 10 * sqrt(n) * eta / (h * ||D||)), eta the rounding error of the loss.
A module that raises on a case fails that check, with its message.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterator

import numpy as np
import torch

from derive_cells.spec import Cell
from derive_cells.verify import expected, reference
from derive_cells.verify import finite_differences as fd
from derive_cells.verify.inputs import Problem, compare, make_problem, saturated_problem
from derive_cells.verify.modules import Runner
from derive_cells.verify.results import ModuleRaised, Result, block_of, worst_cases
from derive_cells.verify.tolerances import floor, tolerance

__all__ = ["Checker", "Result", "Sizes"]

SHAPES = [(1, 1, 3, 4), (4, 3, 5, 7), (9, 2, 3, 5)]
SATURATED = (24, 67, 4, 6)  # T, B, I, H
SATURATION_GAINS = (200.0, 20.0, 2.0)  # tried in turn until float32 stays finite
LENGTHS = (5, 2, 4, 1)  # a padded batch of T=5: unequal, unsorted, one full row, one of 1 step


class Sizes:
    """The long and wide case: steps T and batch rows B (H and I are chosen apart from both)."""

    def __init__(self, steps: int = 200, batch: int = 130):
        self.steps, self.batch = steps, batch

    def shape(self) -> tuple[int, int, int, int]:
        T, B = self.steps, self.batch
        H = next(h for h in (7, 9, 11, 13) if h not in (T, B))
        I = next(i for i in (5, 6, 8, 10) if i not in (T, B, H))  # noqa: E741
        return T, B, I, H


class Checker:
    """Runs the checks of one cell on one backend and dtype; yields Results. cache is shared
    by the Checkers of one cell (cases, references, their float32 error, module results)."""

    def __init__(self, cell: Cell, runner: Runner, backend: str, dtype: str,
                 other: Runner | None = None, cache: dict | None = None,
                 sizes: Sizes | None = None):
        self.cell, self.runner, self.backend, self.dtype = cell, runner, backend, dtype
        self.other = other  # the other backend's runner, for numpy-vs-torch
        self.cache = cache if cache is not None else {}
        self.sizes = sizes or Sizes()
        self.np_dtype = np.float64 if dtype == "float64" else np.float32
        # rounding errors in a comparison: the module's, and the reference's when it runs in
        # the same precision
        self.copies = 2 if dtype == "float64" else 1

    def _cached(self, key, make):
        if key not in self.cache:
            self.cache[key] = make()
        return self.cache[key]

    def case(self, T: int, B: int, I: int, H: int, seed: int, label: str | None = None  # noqa: E741
             ) -> Problem:
        return make_problem(self.runner, T, B, I, H, seed=seed, label=label).float32_exact()

    def problems(self) -> list[Problem]:
        def make():
            T, B, I, H = self.sizes.shape()  # noqa: E741
            return [*(self.case(*s, seed=11 + k) for k, s in enumerate(SHAPES)),
                    self.case(T, B, I, H, 14, f"long: T={T} B={B} I={I} H={H}")]
        return self._cached(("problems", self.sizes.shape()), make)

    def saturated(self) -> Problem:
        """The saturated case at the largest gain whose float32 reference stays finite."""
        def make():
            for gain in SATURATION_GAINS:
                problem = saturated_problem(self.runner, *SATURATED, seed=5,
                                            gain=gain).float32_exact()
                reach = expected.preactivation_range(self.cell, problem)
                problem.label = (f"saturated: T={SATURATED[0]} B={SATURATED[1]}, "
                                 f"|pre-activations| up to {reach:.2g}")
                if all(np.isfinite(v).all() for v in self.reference(problem, False, "both",
                                                                    "float32").values()):
                    break
            return problem
        return self._cached(("saturated",), make)

    # -- references, their float32 error, the module's results ---------------------------

    def reference(self, problem: Problem, use_nn: bool, adjoints: str = "both",
                  dtype: str = "float64") -> dict[str, np.ndarray]:
        """The reference evaluated in dtype; adjoints: "both", "outputs" or "state"."""
        return self._cached(("ref", problem.label, dtype, use_nn), lambda: expected.run(
            self.cell, problem, use_nn, dtype))[adjoints]

    def tolerances(self, problem: Problem, adjoints: str, check: str = "default",
                   copies: int | None = None) -> dict[str, float]:
        """Per array: the tolerance of verify.tolerances from the float32 reference's error."""
        def make():
            ref32 = self.reference(problem, False, adjoints, "float32")
            return {a: compare(ref32[a], v).max_rel_error
                    for a, v in self.reference(problem, False, adjoints).items()}
        errors = self._cached(("error_32", problem.label, adjoints), make)
        return {a: tolerance(self.dtype, e, check, copies or self.copies)
                for a, e in errors.items()}

    def module(self, problem: Problem, adjoints: str = "both", runner: Runner | None = None):
        """The module's arrays on problem (in the dtype); raises ModuleRaised."""
        runner = runner or self.runner

        def make():
            cast = problem.astype(self.np_dtype)
            try:
                out, s_T, cache = runner.forward(cast.x, cast.state0, cast.params)
                grads = runner.backward(cast.d_outputs if adjoints != "state" else None,
                                        cast.d_state_T if adjoints != "outputs" else None,
                                        cache)
            except Exception as exc:  # noqa: BLE001  (a module under test may raise anything)
                return ModuleRaised(problem.label, exc)
            return expected.arrays(out, s_T, grads)
        found = self._cached(("module", runner.target, problem.label, self.dtype, adjoints),
                             make)
        if isinstance(found, ModuleRaised):
            raise found
        return found

    # -- results ------------------------------------------------------------------------

    def results(self, check: str, found: dict[str, list]) -> Iterator[Result]:
        """One Result per array: its worst case (error / tolerance) over the cases compared;
        found: {array: [(case, Comparison, tolerance)]}."""
        for array, (case, worst, tol) in worst_cases(found).items():
            yield Result(self.cell.name, self.backend, self.dtype, check, array,
                         worst.max_rel_error, tol, bool(worst.max_rel_error <= tol), case,
                         worst.index, block_of(self.runner.BLOCKS, array, worst),
                         worst.expected, worst.actual)

    def raised(self, check: str, exc: ModuleRaised) -> Iterator[Result]:
        yield Result(self.cell.name, self.backend, self.dtype, check, "(the module raised)",
                     math.inf, floor(self.dtype), False, exc.case, error=str(exc))

    def against(self, name: str, use_nn: bool, problems: list[Problem],
                adjoints: str = "both") -> Iterator[Result]:
        forward, gradient = {}, {}
        try:
            for problem in problems:
                ours = self.module(problem, adjoints)
                ref = self.reference(problem, use_nn, adjoints)
                tols = self.tolerances(problem, adjoints)
                for array, value in ours.items():
                    bucket = gradient if array.startswith("d_") else forward
                    bucket.setdefault(array, []).append(
                        (problem.label, compare(value, ref[array]), tols[array]))
        except ModuleRaised as exc:
            yield from self.raised(name, exc)
            return
        if adjoints != "both":  # an adjoint entry point on its own: only the gradients matter
            yield from self.results(name, gradient)
            return
        yield from self.results(f"{name} forward", forward)
        yield from self.results(f"{name} gradients", gradient)

    def all(self) -> Iterator[Result]:
        """Every check, run with Torch on one thread (its cases are small: more threads only
        contend, on a small machine many times slower)."""
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield from self._all()
        finally:
            torch.set_num_threads(threads)

    def _all(self) -> Iterator[Result]:
        problems = self.problems()
        if self.cell.name in reference.NN_MODULES and self.cell.source == self.cell.name:
            title = reference.NN_MODULES[self.cell.name][0]
            yield from self.against(f"vs {title}", True, problems)
        yield from self.against("vs autograd", False, problems)
        yield from self.against("adjoint via outputs only", False, problems[1:-1], "outputs")
        # the final state's adjoint alone reaches d_state0 only through every step of the long
        # case: a backward pass that stops carrying it early is caught here at any decay rate
        yield from self.against("adjoint via state_T only", False, problems[1:], "state")
        yield from self.against("saturated gates", False, [self.saturated()])
        if self.dtype == "float64":
            yield from self.finite_differences()
        if hasattr(self.runner.module, "step_jacobian"):
            yield from self.jacobian()
        if self.other is not None:
            yield from self.numpy_vs_torch([*problems, self.saturated()])
        if _takes_lengths(self.runner.module):
            yield from self.variable_lengths(reverse=False)
            yield from self.variable_lengths(reverse=True)

    def variable_lengths(self, reverse: bool) -> Iterator[Result]:
        """A padded batch with unequal, unsorted lengths (and reversed) against each row alone:
        outputs (and, on their own, the padded steps' outputs, which must be zero), final
        states, d_x, d_state0 and every d_param."""
        T, B = max(LENGTHS), len(LENGTHS)
        name = "variable lengths, reverse" if reverse else "variable lengths"
        problem = self.case(T, B, 3, 5, 21, f"T={T} B={B} I=3 H=5 lengths={list(LENGTHS)}")
        cast, lengths = problem.astype(self.np_dtype), np.array(LENGTHS)
        try:
            out, s_T, cache = self.runner.forward(cast.x, cast.state0, cast.params,
                                                  lengths=lengths, reverse=reverse)
            ours = expected.arrays(out, s_T, self.runner.backward(cast.d_outputs,
                                                                  cast.d_state_T, cache))
        except Exception as exc:  # noqa: BLE001
            yield from self.raised(name, ModuleRaised(problem.label, exc))
            return
        ref, ref32 = (self._cached(("lengths", reverse, dtype), lambda d=dtype:
                                   expected.run_lengths(self.cell, problem, LENGTHS, reverse, d))
                      for dtype in ("float64", "float32"))
        tols = {a: tolerance(self.dtype, compare(ref32[a], v).max_rel_error, copies=self.copies)
                for a, v in ref.items()}
        padded = np.arange(T)[:, None] >= lengths[None, :]  # (T, B): steps past a row's end
        found = {"outputs": [(problem.label, compare(out, ref["outputs"]), tols["outputs"])],
                 "outputs at padded steps": [(problem.label, compare(
                     np.asarray(out)[padded], np.zeros_like(ref["outputs"][padded])),
                     tols["outputs"])]}
        found.update({array: [(problem.label, compare(value, ref[array]), tols[array])]
                      for array, value in ours.items() if array != "outputs"})
        yield from self.results(name, found)

    def finite_differences(self) -> Iterator[Result]:
        """Every element on a small case; random directions on a longer one."""
        for problem, check, measure in (
                (self.case(3, 2, 3, 3, 3), "finite differences", fd.every_element),
                (self.case(12, 2, 3, 4, 4), "finite differences, random directions",
                 fd.random_directions)):
            try:
                grads = self.module(problem)
                eta = fd.noise(problem, self.reference(problem, False),
                               self.reference(problem, False, "both", "float32"))
                found = measure(self.runner, problem, grads, eta)
            except ModuleRaised as exc:
                yield from self.raised(check, exc)
                continue
            except Exception as exc:  # noqa: BLE001
                yield from self.raised(check, ModuleRaised(problem.label, exc))
                continue
            yield from self.results(check, found)

    def jacobian(self) -> Iterator[Result]:
        problem = self.case(1, 3, 4, 5, 8)
        cast = problem.astype(self.np_dtype)
        try:
            jac = self.runner.step_jacobian(cast.x[0], cast.state0, cast.params)
        except Exception as exc:  # noqa: BLE001
            yield from self.raised("per-step Jacobian", ModuleRaised(problem.label, exc))
            return
        ref, ref32 = (self._cached(("jacobian", dtype), lambda d=dtype: expected.step_jacobian(
            self.cell, self.runner.STATE, problem, d)) for dtype in ("float64", "float32"))
        found = {}
        for (s, sp), value in ref.items():
            tol = tolerance(self.dtype, compare(ref32[s, sp], value).max_rel_error,
                            copies=self.copies)
            found[f"J[{s},{sp}]"] = [(f"batch row {b}", compare(jac[s, sp][b], value[b]), tol)
                                     for b in range(value.shape[0])]
        yield from self.results("per-step Jacobian", found)

    def numpy_vs_torch(self, problems: list[Problem]) -> Iterator[Result]:
        found = {}
        try:
            for problem in problems:
                a, b = self.module(problem), self.module(problem, runner=self.other)
                tols = self.tolerances(problem, "both", "numpy-vs-torch", copies=2)
                for array in a:
                    found.setdefault(array, []).append(
                        (problem.label, compare(a[array], b[array]), tols[array]))
        except ModuleRaised as exc:
            yield from self.raised("numpy vs torch", exc)
            return
        yield from self.results("numpy vs torch", found)


def _takes_lengths(module) -> bool:
    """Whether a module's forward takes lengths and reverse (modules emitted before they were
    added do not, and are checked without them)."""
    try:
        names = inspect.signature(module.forward).parameters
    except (TypeError, ValueError):
        return False
    return "lengths" in names and "reverse" in names
