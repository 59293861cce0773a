"""Inputs for checks (random, with distinct values per gate block) and array comparison."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from derive_cells.runtime.checks import _dims as dims  # the decoder every emitted module carries


def random_params(module, I: int, H: int, rng: np.random.Generator, dtype=np.float64,
                  scale: float = 1.0) -> dict[str, np.ndarray]:
    """Parameters whose gate blocks differ in spread and offset, so that a permuted layout
    cannot pass a check by accident."""
    params = {}
    for name, spec in module.PARAMS.items():
        shape = dims(spec, I, H)
        blocks = module.BLOCKS[name]
        parts = []
        for k in range(len(blocks)):
            block = rng.uniform(-1, 1, (shape[0] // len(blocks), *shape[1:]))
            parts.append(block * (0.3 + 0.2 * k) / np.sqrt(H) + 0.05 * (k - 1))
        params[name] = (np.concatenate(parts, axis=0) * scale).astype(dtype)
    return params


@dataclass
class Problem:
    """One case: inputs and the adjoints that enter through the outputs and the final state."""

    label: str
    x: np.ndarray
    state0: dict[str, np.ndarray]
    params: dict[str, np.ndarray]
    d_outputs: np.ndarray
    d_state_T: dict[str, np.ndarray]

    def astype(self, dtype) -> Problem:
        cast = lambda tree: {k: v.astype(dtype) for k, v in tree.items()}  # noqa: E731
        return Problem(self.label, self.x.astype(dtype), cast(self.state0), cast(self.params),
                       self.d_outputs.astype(dtype), cast(self.d_state_T))

    def float32_exact(self) -> Problem:
        """The problem with every value rounded to float32 and held in float64: both dtypes
        then run on the same numbers, and one float64 reference serves both."""
        return self.astype(np.float32).astype(np.float64)


def make_problem(module, T: int, B: int, I: int, H: int, seed: int,
                 label: str | None = None) -> Problem:
    """Random x (T, B, I), state0 {s: (B, H)}, params (PARAMS shapes) and the adjoints
    d_outputs (T, B, H), d_state_T {s: (B, H)}, all from one seed."""
    rng = np.random.default_rng(seed)
    params = random_params(module, I, H, rng)
    x = rng.standard_normal((T, B, I))
    state0 = {n: rng.standard_normal((B, H)) * 0.5 for n in module.STATE}
    d_out = rng.standard_normal((T, B, H))
    d_T = {n: rng.standard_normal((B, H)) for n in module.STATE}
    return Problem(label or f"T={T} B={B} I={I} H={H}", x, state0, params, d_out, d_T)


INPUT_WEIGHT_GAIN = 10.0


def saturated_problem(module, T: int, B: int, I: int, H: int, seed: int, gain: float,
                      label: str | None = None) -> Problem:
    """A problem whose pre-activations reach far into saturation: the input-facing matrices
    (PARAMS with I columns) x INPUT_WEIGHT_GAIN and each step of each row of x (T, B, I) scaled
    by its own factor, log-uniform in [1, gain], so one array holds moderate and extreme
    pre-activations side by side (an implementation that switches formulas for a whole array
    when one element is extreme is then checked on the moderate ones too)."""
    problem = make_problem(module, T, B, I, H, seed, label=label)
    rng = np.random.default_rng(seed + 1000)
    for name, spec in module.PARAMS.items():
        if len(spec) == 2 and spec[1] == "I":
            problem.params[name] = problem.params[name] * INPUT_WEIGHT_GAIN
    problem.x = problem.x * np.exp(rng.uniform(0, np.log(gain), (T, B, 1)))
    return problem


@dataclass
class Comparison:
    max_rel_error: float
    index: tuple[int, ...]
    expected: float
    actual: float
    shape: tuple[int, ...] = ()


def compare(actual, expected) -> Comparison:
    """Relative error ||a - b|| / ||b|| of a whole array, and its worst element."""
    a = np.asarray(actual, dtype=np.float64)
    b = np.asarray(expected, dtype=np.float64)
    if a.shape != b.shape:
        return Comparison(float("inf"), (), float("nan"), float("nan"), b.shape)
    diff = a - b
    if not np.all(np.isfinite(a)):
        err = float("inf")
    else:
        # both scaled by their largest element first: norms of values near 1e300 would overflow
        scale = max(float(np.abs(a).max(initial=0)), float(np.abs(b).max(initial=0)))
        scale = scale if 0 < scale < np.inf else 1.0
        norm = float(np.linalg.norm(b / scale))
        err = float(np.linalg.norm(diff / scale)) / (norm if norm > 0 else 1.0 / scale)
    if diff.size == 0:
        return Comparison(err, (), 0.0, 0.0, b.shape)
    bad = np.where(np.isfinite(diff), np.abs(diff), np.inf)
    index = tuple(int(i) for i in np.unravel_index(int(np.argmax(bad)), diff.shape))
    return Comparison(err, index, float(b[index]), float(a[index]), b.shape)
