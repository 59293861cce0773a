"""The runtime every emitted Torch module carries: its array helpers, in Torch.

This is real, linted Python; derive_cells.emit.targets copies everything after the marker line into
each emitted module, where the step bodies call these helpers by name.
"""

import torch

# ---- inlined into every emitted module from here on (derive_cells.emit.targets) ----

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
