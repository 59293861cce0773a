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


NUMPY = Target(
    name="numpy",
    title="NumPy",
    imports="import numpy as np",
    helpers='''
def _is_float_array(a):
    return isinstance(a, np.ndarray) and np.issubdtype(a.dtype, np.floating)


def _empty(shape, like):
    return np.empty(shape, dtype=like.dtype)


def _zeros(shape, like):
    return np.zeros(shape, dtype=like.dtype)


def _cat(arrays, axis=-1):
    return np.concatenate(arrays, axis=axis)


def _split(a, k, axis=-1):
    """k equal blocks of a along axis (views)."""
    return np.split(a, k, axis=axis)


def _sum(a):
    """Sum over time and batch: (T, B, n) -> (n,)."""
    return a.sum(axis=(0, 1))


def _rows(coef, m, like):
    """diag(coef) @ m for every batch row: (B, H) x (H, n) -> (B, H, n)."""
    return (coef + 0 * like)[:, :, None] * m


def _diag(coef, like):
    """diag(coef) for every batch row: (B, H) -> (B, H, H)."""
    return (coef + 0 * like)[:, :, None] * np.eye(like.shape[-1], dtype=like.dtype)
''',
)

TARGETS = {t.name: t for t in (NUMPY,)}
