"""The public forward and backward of an emitted Torch module: a torch.autograd.Function whose
backward is the derived one, and the functions that call it.

This is real, linted Python; derive_cells.emit.targets copies everything after the marker line into
each emitted module. The names defined above the marker are what that module defines itself.
"""

import torch

STATE: tuple[str, ...] = ()  # each emitted module's states
PARAMS: dict[str, tuple[str, str]] = {}  # ... and parameters


def _check(x, state0, params, finite=True):  # each emitted module's input checks
    raise NotImplementedError


def _forward(x, state0, params, lengths=None, reverse=False, check=True):  # its forward
    raise NotImplementedError


def _backward(d_outputs, d_state_T, cache):  # its derived backward
    raise NotImplementedError


# ---- inlined into every emitted module from here on (derive_cells.emit.targets) ----

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
