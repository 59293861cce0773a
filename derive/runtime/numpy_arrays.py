"""The runtime every emitted NumPy module carries: its array helpers, in NumPy.

This is real, linted Python; derive_cells.emit.targets copies everything after the marker line into
each emitted module, where the step bodies call these helpers by name.
"""

import numpy as np

# ---- inlined into every emitted module from here on (derive_cells.emit.targets) ----

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
