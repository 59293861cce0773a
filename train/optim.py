"""Optimizers for the NumPy training loop, with torch.optim's update rules (so a NumPy run and a
torch run from the same start take the same steps), and clipping by global norm.

Each optimizer updates a dict of arrays in place from a dict of gradients with the same keys.
"""

from __future__ import annotations

import math

import numpy as np


class SGD:
    """p <- p - lr * g (torch.optim.SGD without momentum), or with momentum mu:
    v <- mu * v + g, p <- p - lr * v (torch's form: the first step's v is g)."""

    def __init__(self, params: dict[str, np.ndarray], lr: float, momentum: float = 0.0):
        self.params, self.lr, self.momentum = params, lr, momentum
        self.velocity: dict[str, np.ndarray] = {}

    def step(self, grads: dict[str, np.ndarray]) -> None:
        for name, p in self.params.items():
            g = grads[name]
            if self.momentum:
                v = self.velocity.get(name)
                v = g.copy() if v is None else self.momentum * v + g
                self.velocity[name] = g = v
            p -= self.lr * g


class Adam:
    """Adam (Kingma & Ba 2015) as torch.optim.Adam computes it:
    m <- b1 m + (1-b1) g, v <- b2 v + (1-b2) g^2,
    p <- p - (lr / (1-b1^t)) * m / (sqrt(v) / sqrt(1-b2^t) + eps)."""

    def __init__(self, params: dict[str, np.ndarray], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        self.params, self.lr, self.betas, self.eps = params, lr, betas, eps
        self.m = {n: np.zeros_like(p) for n, p in params.items()}
        self.v = {n: np.zeros_like(p) for n, p in params.items()}
        self.t = 0

    def step(self, grads: dict[str, np.ndarray]) -> None:
        self.t += 1
        b1, b2 = self.betas
        step_size = self.lr / (1 - b1**self.t)
        root_c2 = math.sqrt(1 - b2**self.t)
        for name, p in self.params.items():
            g, m, v = grads[name], self.m[name], self.v[name]
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            p -= step_size * m / (np.sqrt(v) / root_c2 + self.eps)


OPTIMIZERS = {"sgd": SGD, "adam": Adam}


def global_norm(grads: dict[str, np.ndarray]) -> float:
    """sqrt of the sum of every gradient's squared entries, in float64."""
    return math.sqrt(sum(float(np.vdot(g, g).real) for g in grads.values()))


def clip_by_global_norm(grads: dict[str, np.ndarray], max_norm: float) -> float:
    """Scale every gradient by max_norm / (norm + 1e-6) when that is below 1 (Pascanu et al.
    2013; the rule of torch.nn.utils.clip_grad_norm_), in place. Returns the norm before."""
    norm = global_norm(grads)
    coef = max_norm / (norm + 1e-6)
    if coef < 1:
        for g in grads.values():
            g *= g.dtype.type(coef)
    return norm
