"""Emission targets: the few lines of an emitted module that depend on the array library.

Everything else (step bodies, the time loops, parameter handling) is shared text: it calls these
helpers, so the NumPy and Torch modules differ only here and in their elementwise functions.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    name: str
    title: str
    imports: str
    helpers: str  # array helpers, in the module's own library
    core: str = ""  # prefix of the sequence functions the public API wraps ("" = none)
    fused_derivatives: bool = False  # print sigmoid/tanh derivatives with _dsigmoid/_dtanh
    api: str = ""  # the public forward/backward, when they wrap the core ones


NUMPY = Target(
    name="numpy",
    title="NumPy",
    imports="import numpy as np",
    helpers='''
def _is_float_array(a):
    return isinstance(a, np.ndarray) and np.issubdtype(a.dtype, np.floating)


def _first_nonfinite(a):
    """Index of the first NaN or infinity in a, or None. A finite sum (one fast reduction)
    means every element is finite; only otherwise are the elements searched."""
    if np.isfinite(a.sum()):
        return None
    bad = ~np.isfinite(a)
    return tuple(int(i) for i in np.argwhere(bad)[0]) if bad.any() else None


_EXP_MAX = {}  # dtype -> a little below the largest z whose exp(z) is finite


def _sigmoid(z):
    """1 / (1 + exp(-z)), exact over the whole float range without overflow: exp(-z) is
    formed only where it stays finite; an array reaching below -_EXP_MAX takes the form
    e / (1 + e) for z < 0 and 1 / (1 + e) for z >= 0, with e = exp(-|z|) in (0, 1]."""
    limit = _EXP_MAX.get(z.dtype)
    if limit is None:
        limit = _EXP_MAX[z.dtype] = float(np.log(np.finfo(z.dtype).max)) - 1
    if z.size and z.min() < -limit:
        e = np.exp(-np.abs(z))
        r = np.reciprocal(e + 1)
        return np.where(z < 0, e * r, r)
    e = np.negative(z)
    np.exp(e, out=e)
    e += 1
    return np.reciprocal(e, out=e)


def _empty(shape, like):
    return np.empty(shape, dtype=like.dtype)


def _copy(a):
    return a.copy()


def _zeros(shape, like):
    return np.zeros(shape, dtype=like.dtype)


def _cat(arrays, axis=-1):
    return np.concatenate(arrays, axis=axis)


def _split(a, k, axis=-1):
    """k equal blocks of a along axis 0 or -1 (views)."""
    n = a.shape[axis] // k
    if axis == 0:
        return [a[j * n:(j + 1) * n] for j in range(k)]
    return [a[..., j * n:(j + 1) * n] for j in range(k)]


def _assign(view, value):
    """Write value into view (a block of a larger array), in place."""
    view[...] = value


def _addmm(b, a, m):
    """b + a @ m.T, the product with a stacked matrix plus what it is added to (in place)."""
    out = a @ m.T
    out += b
    return out


def _steps(a):
    """The steps of a (T, ...) array, as a list of views."""
    return list(a)


def _stack(arrays):
    return np.stack(arrays)


def _sum(a):
    """Sum over time and batch: (T, B, n) -> (n,)."""
    return a.sum(axis=(0, 1))


def _rows(coef, m, like):
    """diag(coef) @ m for every batch row: (B, H) x (H, n) -> (B, H, n)."""
    return (coef + 0 * like)[:, :, None] * m


def _diag(coef, like):
    """diag(coef) for every batch row: (B, H) -> (B, H, H)."""
    return (coef + 0 * like)[:, :, None] * np.eye(like.shape[-1], dtype=like.dtype)


def _where(mask, a, b):
    return np.where(mask, a, b)


def _lengths(lengths, T, B, _like, reverse):
    """For lengths (B,) and reverse: (mask (T, B, 1) of valid steps or None when every row runs
    T steps, order (T, B) of time indices that puts each row's valid steps in reverse or None,
    full: the number of first steps that every row runs, which need no mask)."""
    steps = np.arange(T)[:, None]
    if lengths is None:
        return None, (np.broadcast_to(T - 1 - steps, (T, B)) if reverse else None), T
    n = np.asarray(lengths)
    if n.shape != (B,) or not (np.issubdtype(n.dtype, np.integer) or n.size == 0):
        raise ValueError(f"lengths: expected {B} integers (one per row of x (T, B, I), "
                         f"time-major), got {getattr(lengths, 'dtype', type(lengths).__name__)} "
                         f"of shape {n.shape}")
    if B and (n.min() < 1 or n.max() > T):
        raise ValueError(f"lengths: every length must be in 1..T = {T} (x is (T, B, I), "
                         f"time-major); got min {n.min()}, max {n.max()}")
    valid = steps < n[None, :]
    order = np.where(valid, n[None, :] - 1 - steps, steps) if reverse else None
    full = int(n.min()) if B else T
    return (None if full == T else valid[:, :, None]), order, full


def _reorder(a, order):
    """a (T, B, ...) with each row's steps taken in the given order (T, B)."""
    return a[order, np.arange(a.shape[1])[None, :]]
''',
)

TORCH = Target(
    name="torch",
    title="PyTorch",
    imports="import torch",
    core="_",
    fused_derivatives=True,
    helpers='''
def _is_float_array(a):
    return isinstance(a, torch.Tensor) and a.dtype.is_floating_point


def _first_nonfinite(a):
    """Index of the first NaN or infinity in a, or None. A finite sum (one fast reduction)
    means every element is finite; only otherwise are the elements searched."""
    if bool(torch.isfinite(a.sum())):
        return None
    bad = ~torch.isfinite(a)
    return tuple(bad.nonzero()[0].tolist()) if bool(bad.any()) else None


def _empty(shape, like):
    return torch.empty(shape, dtype=like.dtype, device=like.device)


def _copy(a):
    return a.clone()


def _zeros(shape, like):
    return torch.zeros(shape, dtype=like.dtype, device=like.device)


def _cat(arrays, axis=-1):
    return torch.cat(arrays, dim=axis)


def _split(a, k, axis=-1):
    """k equal blocks of a along axis (views)."""
    return torch.chunk(a, k, dim=axis)


def _assign(view, value):
    """Write value into view (a block of a larger tensor), in place."""
    view.copy_(value)


def _addmm(b, a, m):
    """b + a @ m.T, the product with a stacked matrix plus what it is added to."""
    return torch.addmm(b, a, m.T)


def _dsigmoid(d, s):
    """d * s * (1 - s) in one kernel."""
    return torch.ops.aten.sigmoid_backward(d, s)


def _dtanh(d, t):
    """d * (1 - t**2) in one kernel."""
    return torch.ops.aten.tanh_backward(d, t)


def _steps(a):
    """The steps of a (T, ...) array, as a list of views."""
    return a.unbind(0)


def _stack(arrays):
    return torch.stack(arrays)


def _sum(a):
    """Sum over time and batch: (T, B, n) -> (n,)."""
    return a.sum(dim=(0, 1))


def _rows(coef, m, like):
    """diag(coef) @ m for every batch row: (B, H) x (H, n) -> (B, H, n)."""
    return (coef + 0 * like)[:, :, None] * m


def _diag(coef, like):
    """diag(coef) for every batch row: (B, H) -> (B, H, H)."""
    eye = torch.eye(like.shape[-1], dtype=like.dtype, device=like.device)
    return (coef + 0 * like)[:, :, None] * eye


def _where(mask, a, b):
    return torch.where(mask, a, b)


def _lengths(lengths, T, B, like, reverse):
    """For lengths (B,) and reverse: (mask (T, B, 1) of valid steps or None when every row runs
    T steps, order (T, B) of time indices that puts each row's valid steps in reverse or None,
    full: the number of first steps that every row runs, which need no mask)."""
    steps = torch.arange(T, device=like.device)[:, None]
    if lengths is None:
        return None, ((T - 1 - steps).expand(T, B) if reverse else None), T
    n = torch.as_tensor(lengths)
    integers = not (n.dtype.is_floating_point or n.dtype == torch.bool or n.is_complex())
    if tuple(n.shape) != (B,) or not integers:
        raise ValueError(f"lengths: expected {B} integers (one per row of x (T, B, I), "
                         f"time-major), got {n.dtype} of shape {tuple(n.shape)}")
    low, high = (int(v) for v in n.aminmax()) if B else (1, T)  # lengths live on the CPU
    if low < 1 or high > T:
        raise ValueError(f"lengths: every length must be in 1..T = {T} (x is (T, B, I), "
                         f"time-major); got min {low}, max {high}")
    n = n.to(device=like.device, dtype=torch.long)
    valid = steps < n[None, :]
    order = torch.where(valid, n[None, :] - 1 - steps, steps) if reverse else None
    return (None if low == T else valid[:, :, None]), order, low


def _reorder(a, order):
    """a (T, B, ...) with each row's steps taken in the given order (T, B)."""
    return a[order, torch.arange(a.shape[1], device=a.device)[None, :]]
''',
    api='''
class CellFunction(torch.autograd.Function):
    """The whole sequence as one autograd node; its backward is the derived backward above."""

    @staticmethod
    def forward(ctx, x, given, box, lengths, reverse, check, *tensors):
        state0 = dict(zip(given, tensors[:len(given)]))
        params = dict(zip(PARAMS, tensors[len(given):]))
        outputs, state_T, cache = _forward(x, state0, params, lengths, reverse, check)
        # saved so that autograd notices in-place changes made before backward
        ctx.save_for_backward(x, *tensors)
        ctx.given, ctx.cache, box["cache"] = given, cache, cache
        return (outputs, *(state_T[n].clone() for n in STATE))

    @staticmethod
    def backward(ctx, d_outputs, *d_state_T):
        if torch.is_grad_enabled():
            raise RuntimeError(
                "the derived backward gives first-order gradients only; a graph of the "
                "gradient (create_graph=True: gradient penalties, Hessian-vector products, "
                "double backward) is not supported by this module")
        _ = ctx.saved_tensors  # raises if an input was modified in place since forward
        d_x, d_state0, d_params = _backward(d_outputs, dict(zip(STATE, d_state_T)), ctx.cache)
        return (d_x, None, None, None, None, None, *(d_state0[n] for n in ctx.given),
                *(d_params[n] for n in PARAMS))


def forward(x, state0, params, lengths=None, reverse=False, check=True):
    """x: (T, B, I), time-major. state0: {name: (B, H)}; a missing name starts at zeros.
    params: {name: tensor}, names and shapes as in PARAMS. lengths, reverse: as in _forward.
    check=False skips the finite-value checks, which synchronise with the device (NaN and
    infinity then propagate, as in torch.nn). Differentiable: loss.backward() runs the derived
    backward. Returns (outputs (T, B, H), state_T {name: (B, H)}, cache)."""
    state0 = {n: v for n, v in (state0 or {}).items() if v is not None}
    _check(x, state0, params, finite=check)
    given, box = tuple(n for n in STATE if n in state0), {}
    outputs, *final = CellFunction.apply(x, given, box, lengths, reverse, check,
                                         *(state0[n] for n in given),
                                         *(params[n] for n in PARAMS))
    return outputs, dict(zip(STATE, final)), box["cache"]


def backward(d_outputs, d_state_T, cache):
    """d_outputs: (T, B, H) or None; d_state_T: {name: (B, H)} or None.
    Returns (d_x (T, B, I), d_state0 {name: (B, H)}, d_params {name: tensor})."""
    with torch.no_grad():
        return _backward(d_outputs, d_state_T, cache)
''',
)

TARGETS = {t.name: t for t in (NUMPY, TORCH)}
