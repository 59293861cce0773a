"""Independent Torch references for cells PyTorch has no module for; autograd gives gradients."""

from __future__ import annotations

import torch


def simplified_gru_step(x_t, c_prev, p):
    """c~ = tanh(W_cc c + W_cx x + b_c); G = sigmoid(W_uc c + W_ux x + b_u); c = G c~ + (1-G) c."""
    c_tilde = torch.tanh(c_prev @ p["W_cc"].T + x_t @ p["W_cx"].T + p["b_c"])
    gamma_u = torch.sigmoid(c_prev @ p["W_uc"].T + x_t @ p["W_ux"].T + p["b_u"])
    return gamma_u * c_tilde + (1 - gamma_u) * c_prev


def simplified_gru(x, c0, p):
    """x: (T, B, I) -> outputs (T, B, H), c_T."""
    c, outs = c0, []
    for t in range(x.shape[0]):
        c = simplified_gru_step(x[t], c, p)
        outs.append(c)
    return torch.stack(outs), c
