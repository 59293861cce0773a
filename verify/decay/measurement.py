"""Gradient-norm decay across timesteps, measured with the emitted backward, beside theory.

The loss is a sentiment-style read-out of the cell's output at the last step,
``y_hat = sigmoid(w . o_T + b)`` with binary cross-entropy. Its adjoint is propagated back
through time with the emitted step_backward; after every step each batch row of the adjoint is
divided by its norm and the log10 of that norm is added to a float64 running sum, so norms far
below 1e-308 (a 3000-step tanh RNN) are still measured exactly.

Theory beside it, from the derivation's per-step Jacobian:
- a state with a direct elementwise path (LSTM's c: diag(f); GRU's h: diag(z)) is predicted to
  decay by the gate product: the geometric mean of that path's coefficient along the trajectory;
- a single-state cell without a direct path gets a bound on its step Jacobian's norm with every
  factor between h_prev and h in it (decay/bound.py): for h = phi(W h_prev + ...) the bound of
  Pascanu, Mikolov & Bengio (2013), gamma * sigma_max(W); none where a factor has no largest
  value (an input product, a parameter, the previous state);
- for every cell, the singular values of the full step Jacobian along the trajectory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from derive_cells.derivation import Derivation
from derive_cells.emit.plan import make_plan
from derive_cells.verify.decay.bound import step_bound

FLOAT32_MIN_NORMAL_LOG10 = math.log10(np.finfo(np.float32).tiny)  # about -37.93


@dataclass
class Setup:
    steps: int = 100
    batch: int = 16
    hidden: int = 32
    input_size: int | None = None  # default: hidden
    seed: int = 0
    recurrent_init: str = "pytorch"  # or "orthogonal"
    gain: float = 1.0
    input_scale: float = 1.0
    bias: float | None = None
    forget_bias: float | None = None
    dtype: str = "float64"
    burn_in: int = 0  # steps run forward from a zero state before the T measured steps


@dataclass
class Measurement:
    cell: str
    steps: int
    dtype: str
    distance: list[int]
    log10_norm: dict[str, list[float | None]]
    log10_spread: dict[str, list[float | None]]
    rate_per_step: dict[str, float | None]
    predicted_rate_per_step: dict[str, float | None]
    prediction: dict[str, str | None]
    time_constant: dict[str, float | None]
    half_life: dict[str, float | None]
    jacobian: dict[str, float | None] = field(default_factory=dict)
    float32_leaves_normal_range_at: dict[str, int | None] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)  # per state: why there is no rate

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}


class SetupError(ValueError):
    """A setting that does not apply to the cell (e.g. --forget-bias without a forget gate)."""


# What one run may cost, so that it fits a small machine (two cores, a few GiB to spare).
MEMORY_BUDGET = 8 * 2**30  # bytes of saved forward values, every step's cache (an upper bound)
JACOBIAN_BUDGET = 2e12  # ~10 n^3 operations per SVD of an n x n step Jacobian: minutes
JACOBIAN_STEPS = 24  # steps at which the step Jacobian's singular values are taken


def _nbytes(obj) -> int:
    if isinstance(obj, dict):
        return sum(_nbytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_nbytes(v) for v in obj)
    return int(getattr(obj, "nbytes", 0))


def check_budget(module, deriv: Derivation, setup: Setup) -> None:
    """Refuse (SetupError) a setup whose saved forward values or step-Jacobian spectra would
    not fit MEMORY_BUDGET or JACOBIAN_BUDGET; one step at the requested sizes measures the
    memory a step keeps."""
    cell = deriv.cell
    T, B, H = setup.steps, setup.batch, setup.hidden
    I = setup.input_size or H
    dtype = np.float64 if setup.dtype == "float64" else np.float32
    plain = Setup(**{**setup.__dict__, "forget_bias": None, "recurrent_init": "pytorch"})
    params = make_params(module, deriv, plain, I, H, np.random.default_rng(0))
    state = {s: np.zeros((B, H), dtype) for s in cell.state}
    _, cache = module.step_forward(np.zeros((B, I), dtype), state, params)
    per_step = _nbytes({k: v for k, v in cache.items() if k != "params"})
    per_step += _nbytes(state)  # the trajectory keeps every step's states too
    memory = T * per_step
    if memory > MEMORY_BUDGET:
        raise SetupError(f"{cell.name}: --steps {T} x --batch {B} x --hidden {H} would keep "
                         f"{memory / 2**30:.1f} GiB of forward values (at most "
                         f"{MEMORY_BUDGET / 2**30:.0f} GiB); use fewer steps, a smaller batch or "
                         "a smaller hidden size")
    n = len(cell.state) * H
    work = jacobian_work(deriv, setup)
    if work > JACOBIAN_BUDGET:
        raise SetupError(f"{cell.name}: --batch {B} x --hidden {H} needs the singular values of "
                         f"{min(T, JACOBIAN_STEPS) * B} step Jacobians of {n} x {n}, about "
                         f"{work:.1e} operations (at most {JACOBIAN_BUDGET:.0e}); use a smaller "
                         "batch or hidden size")


def jacobian_work(deriv: Derivation, setup: Setup) -> float:
    """Operations of the step Jacobians' singular values: ~10 n^3 per SVD of n x n."""
    n = len(deriv.cell.state) * setup.hidden
    return float(min(setup.steps, JACOBIAN_STEPS) * setup.batch * 10 * n**3)


def _roles(deriv: Derivation) -> tuple[set[str], set[str], dict[str, list[str]]]:
    """Recurrent matrices, biases (vectors only ever added to a product) and the biases of each
    gate's pre-activation: the emitted module's ROLES and GATE_BIASES."""
    from derive_cells.emit.torch_layer import roles

    recurrent = {m for m, kind in deriv.cell.matrices.items() if kind == "hidden"}
    role, gates = roles(deriv, make_plan(deriv))
    biases = {q for q, (kind, _) in role.items() if kind == "bias"}
    return recurrent, biases, {gate: list(bs) for gate, bs in gates.items()}


def make_params(module, deriv: Derivation, setup: Setup, I: int, H: int,
                rng: np.random.Generator) -> dict[str, np.ndarray]:
    """PyTorch's initialization U(+-1/sqrt(H)), then the requested changes, packed as PARAMS."""
    recurrent, biases, gate_biases = _roles(deriv)
    bound = 1 / math.sqrt(H)
    blocks: dict[str, np.ndarray] = {}
    for members in module.BLOCKS.values():
        for m in members:
            kind = deriv.cell.matrices.get(m, "vector")
            shape = {"input": (H, I), "hidden": (H, H), "vector": (H,)}[kind]
            value = rng.uniform(-bound, bound, shape)
            if m in recurrent and setup.recurrent_init == "orthogonal":
                q, r = np.linalg.qr(rng.standard_normal((H, H)))
                value = q * np.sign(np.diag(r))
            if m in recurrent:
                value = value * setup.gain
            if m in biases and setup.bias is not None:
                value = np.full(H, float(setup.bias))
            blocks[m] = value
    if setup.forget_bias is not None:
        forget = gate_biases.get("f")
        if not forget:
            raise SetupError(f"--forget-bias needs a forget gate named 'f' with a bias; "
                             f"{deriv.cell.name} has none")
        for b in forget:  # several bias vectors (PyTorch's two): split so they sum to F
            blocks[b] = np.full(H, float(setup.forget_bias) / len(forget))
    dtype = np.float64 if setup.dtype == "float64" else np.float32
    return {name: np.concatenate([blocks[m] for m in members], axis=0).astype(dtype)
            for name, members in module.BLOCKS.items()}


def theil_sen(x: np.ndarray, y: np.ndarray, max_points: int = 200) -> float:
    """Median of pairwise slopes: robust to outliers and to the transient at small distance."""
    if len(x) > max_points:
        pick = np.linspace(0, len(x) - 1, max_points).round().astype(int)
        x, y = x[pick], y[pick]
    i, j = np.triu_indices(len(x), k=1)
    return float(np.median((y[j] - y[i]) / (x[j] - x[i])))


def _finite(values) -> list[float | None]:
    return [float(v) if np.isfinite(v) else None for v in values]


def measure(module, deriv: Derivation, setup: Setup, progress=None,
            params: dict[str, np.ndarray] | None = None, inputs: np.ndarray | None = None,
            readout: np.ndarray | None = None, labels: np.ndarray | None = None,
            theory: bool = True) -> Measurement:
    """Run the cell forward, propagate the read-out's adjoint back, and fit and predict rates.

    params: the cell's parameters (as PARAMS) instead of those the setup draws; inputs
    (burn_in + T, B, I): the sequences instead of N(0, 1) draws (a probe batch of a task's own
    sequences); readout (H,) and labels (B,) in {0, 1}: the read-out's weight and the targets
    instead of drawn ones. The first setup.burn_in steps only run forward, from a zero state,
    so that the T measured steps start from a state the inputs made (a zero start hides slow
    decay). theory=False skips the prediction and the step Jacobians' spectra (which need
    torch and cost most of the time): only the measured rates."""
    cell = deriv.cell
    T, B, H = setup.steps, setup.batch, setup.hidden
    I = setup.input_size or H
    burn = int(setup.burn_in)
    dtype = np.float64 if setup.dtype == "float64" else np.float32
    rng = np.random.default_rng(setup.seed)
    drawn = make_params(module, deriv, setup, I, H, rng)
    params = drawn if params is None else {n: np.asarray(v, dtype) for n, v in params.items()}
    x = (rng.standard_normal((burn + T, B, I)) * setup.input_scale).astype(dtype)
    w = rng.uniform(-1 / math.sqrt(H), 1 / math.sqrt(H), H)
    label = rng.integers(0, 2, B)
    if inputs is not None:
        if np.shape(inputs) != (burn + T, B, I):
            raise SetupError(f"inputs must have shape {(burn + T, B, I)} (burn_in + steps, "
                             f"batch, input size); got {np.shape(inputs)}")
        x = np.asarray(inputs).astype(dtype)
    if readout is not None:
        w = np.asarray(readout, np.float64).reshape(H)
    if labels is not None:
        label = np.asarray(labels, np.float64).reshape(B)

    state = {s: np.zeros((B, H), dtype) for s in cell.state}
    for t in range(burn):  # burn-in: forward only, nothing kept
        state, _ = module.step_forward(x[t], state, params)
    x = x[burn:]
    saved, trajectory = [], [state]
    for t in range(T):  # forward one step at a time, keeping each step's saved values
        state, cache = module.step_forward(x[t], state, params)
        saved.append(cache)
        trajectory.append(state)
        if progress and t and t % 1000 == 0:
            progress(f"{cell.name}: forward step {t}/{T}")
    out_T = np.asarray(_output(saved[-1], cell), np.float64)
    y_hat = 1 / (1 + np.exp(-(out_T @ w)))
    d_out = ((y_hat - label)[:, None] * w[None, :]).astype(dtype)  # dL/do_T of the BCE loss

    norms = {s: np.full((T, B), -np.inf) for s in cell.state}
    if cell.output in cell.state:  # dL/ds_T: the loss reads the state itself
        current, first = {s: d_out if s == cell.output else 0 * d_out for s in cell.state}, 0
    else:  # the output is computed inside the last step: start one step back, at s_{T-1}
        _, current, _ = module.backward(d_out[None], None, saved[-1])
        first = 1
    log_scale = np.zeros(B)  # log10 of what each row of the adjoint has been divided by
    for d in range(first, T):
        rows = {s: np.linalg.norm(np.asarray(current[s], np.float64), axis=1)
                for s in cell.state}
        with np.errstate(divide="ignore"):
            for s in cell.state:
                norms[s][d] = log_scale + np.log10(rows[s])
        total = np.sqrt(sum(r**2 for r in rows.values()))
        scale = np.where(total > 0, total, 1.0)
        log_scale = log_scale + np.log10(scale)
        current = {s: (np.asarray(current[s], np.float64) / scale[:, None]).astype(dtype)
                   for s in cell.state}
        if d < T - 1:  # dL/ds_{T-d-1} from dL/ds_{T-d}, through the step that made s_{T-d}
            _, current, _ = module.step_backward(current, saved[T - 1 - d], params)
        if progress and d and d % 1000 == 0:
            progress(f"{cell.name}: backward distance {d}/{T}")
    return _summarize(module, deriv, setup, norms, trajectory, x, params, first, theory)


def _output(cache, cell):
    group = cache["states"] if cell.output in cell.state else cache["values"]
    return group[cell.output][-1]


def _notes(deriv, norms, first: int, skip: int, rate) -> dict[str, str]:
    """Why a state has no meaningful rate, in words: the loss never reaches it, its gradient
    stops after a few steps because no step reads its previous value, or it overflowed."""
    cell, notes = deriv.cell, {}
    for s in cell.state:
        n = norms[s][first:]
        zero = np.all(n == -np.inf, axis=1)
        overflow = np.any(np.isnan(n) | (n == np.inf), axis=1)
        read = any(deriv.jacobian.get((sp, s)) for sp in cell.state)
        if zero.all():
            notes[s] = (f"the gradient never reaches {s}: the loss does not depend on it, so "
                        "there is no decay to measure")
        elif zero[-1] and not overflow.any():
            last = first + int(np.nonzero(~zero)[0][-1])
            why = ("no step reads its previous value, so the gradient does not flow back "
                   "through it" if not read else "the gradient vanished exactly (e.g. "
                   "activations that are off)")
            notes[s] = (f"exactly zero beyond distance {last}: {why}; there is no rate to fit"
                        if rate[s] is None else f"exactly zero beyond distance {last}: {why}")
        elif overflow.any():
            at = first + int(np.nonzero(overflow)[0][0])
            notes[s] = (f"the gradient overflowed (inf or nan) from distance {at} on; the rate "
                        "uses the distances before it" if rate[s] is not None else
                        f"the gradient overflowed (inf or nan) from distance {at} on; too few "
                        "distances to fit a rate")
        elif rate[s] is None:
            notes[s] = f"fewer than two measured distances beyond the first {skip}: no rate"
    return notes


def _summarize(module, deriv, setup, norms, trajectory, x, params, first=0,
               theory: bool = True) -> Measurement:
    cell, T = deriv.cell, setup.steps
    finite = {s: np.isfinite(n).all(axis=1) for s, n in norms.items()}
    mean = {s: np.where(finite[s], np.where(finite[s][:, None], n, 0).mean(axis=1), -np.inf)
            for s, n in norms.items()}
    spread = {s: np.where(finite[s], np.where(finite[s][:, None], n, 0).std(axis=1), np.nan)
              for s, n in norms.items()}
    skip = max(2, T // 10)  # the first steps' transient is not part of the rate
    rate, tau, half = {}, {}, {}
    for s in cell.state:
        d = np.arange(T)
        ok = (d >= skip) & np.isfinite(mean[s])
        rate[s] = tau[s] = half[s] = None
        if ok.sum() >= 2:
            r = 10 ** theil_sen(d[ok].astype(float), mean[s][ok])
            rate[s] = float(r)
            if 0 < r < 1:
                tau[s] = -1 / math.log(r)
                half[s] = math.log(2) / -math.log(r)
    if theory:
        predicted, kind = _predict(module, deriv, params, x, trajectory)
        spectrum = _jacobian_spectrum(module, cell, x, trajectory, params)
    else:
        predicted, kind, spectrum = dict.fromkeys(cell.state), dict.fromkeys(cell.state), {}
    leaves = {}
    for s in cell.state:
        below = np.nonzero(mean[s] < FLOAT32_MIN_NORMAL_LOG10)[0]
        leaves[s] = int(below[0]) if len(below) else None
    return Measurement(cell.name, T, setup.dtype, list(range(T)),
                       {s: _finite(mean[s]) for s in cell.state},
                       {s: _finite(spread[s]) for s in cell.state}, rate, predicted, kind, tau,
                       half, spectrum, leaves,
                       _notes(deriv, norms, first, skip, rate))


def _predict(module, deriv, params, x, trajectory):
    """Gate product for states with a direct elementwise path; a bound on the step Jacobian's
    norm for a single-state cell whose every factor is bounded (see the module's docstring)."""
    import torch

    from derive_cells.verify import reference

    cell = deriv.cell
    blocks = {n: torch.tensor(np.asarray(v, np.float64)) for n, v in
              _param_blocks(module, params).items()}
    predicted, kind = {}, {}
    T = len(trajectory) - 1
    picks = sorted(set(np.linspace(0, T - 1, min(T, 400)).round().astype(int)))
    logs = {s: [] for s in cell.state}
    for t in picks:
        state = {s: torch.tensor(np.asarray(v, np.float64)) for s, v in trajectory[t].items()}
        direct = reference.direct_path(cell, torch.tensor(np.asarray(x[t], np.float64)), state,
                                       blocks)
        for s in cell.state:
            logs[s].append(float(np.log(np.abs(direct[s].numpy()) + 1e-300).mean()))
    sigma = {m: float(np.linalg.norm(v.numpy(), 2)) for m, v in blocks.items()
             if cell.matrices.get(m) == "hidden"}
    for s in cell.state:
        terms = deriv.jacobian[(s, s)]
        bound = step_bound(deriv, s) if len(cell.state) == 1 else None
        if any(t.matrix is None for t in terms):
            predicted[s], kind[s] = float(np.exp(np.mean(logs[s]))), "gate product"
        elif bound is not None:
            predicted[s], kind[s] = bound.value(sigma), bound.kind
        else:
            predicted[s], kind[s] = None, None
    return predicted, kind


def _param_blocks(module, params) -> dict[str, np.ndarray]:
    out = {}
    for name, members in module.BLOCKS.items():
        out.update(zip(members, np.split(np.asarray(params[name]), len(members), axis=0),
                       strict=True))
    return out


def _jacobian_spectrum(module, cell, x, trajectory, params) -> dict[str, float | int]:
    """Singular values of the full step Jacobian (all states) at up to 24 steps."""
    T = len(trajectory) - 1
    picks = sorted(set(np.linspace(min(5, T - 1), T - 1, min(T, 24)).round().astype(int)))
    sig_max, sig_min, sig_med = [], [], []
    S = len(cell.state)
    for t in picks:
        jac = module.step_jacobian(x[t], trajectory[t], params)
        B, H, _ = np.shape(jac[cell.state[0], cell.state[0]])
        full = np.zeros((B, S * H, S * H))
        for i, s in enumerate(cell.state):
            for j, sp in enumerate(cell.state):
                full[:, i * H:(i + 1) * H, j * H:(j + 1) * H] = jac[s, sp]
        sv = np.linalg.svd(full, compute_uv=False)
        sig_max.append(sv[:, 0])
        sig_min.append(sv[:, -1])
        sig_med.append(np.median(sv, axis=1))
    return {"sigma_max_mean": float(np.mean(sig_max)),
            "sigma_max_largest": float(np.max(sig_max)),
            "sigma_median_mean": float(np.mean(sig_med)),
            "sigma_min_mean": float(np.mean(sig_min)),
            "steps_sampled": len(picks)}
