"""The one-step API every emitted module carries: step_forward and step_backward over the
module's own forward and backward (a sequence of length 1).

This is real, linted Python; derive_cells.emit.targets copies everything after the marker line into
each emitted module. The names defined above the marker are what that module defines itself.
"""


def _is_float_array(a):  # the target runtime's
    raise NotImplementedError


def forward(x, state0, params, lengths=None, reverse=False):  # the module's public forward
    raise NotImplementedError


def backward(d_outputs, d_state_T, cache):  # ... and backward
    raise NotImplementedError


# ---- inlined into every emitted module from here on (derive_cells.emit.targets) ----

def step_forward(x_t, state, params):
    """One step. x_t: (B, I); state: {name: (B, H)}. Returns (state_new, saved)."""
    if not _is_float_array(x_t) or x_t.ndim != 2:
        raise ValueError(f"x_t: expected a floating-point array of shape (B, I), got "
                         f"{type(x_t).__name__} {getattr(x_t, 'shape', '')}")
    _, state_new, saved = forward(x_t[None], state, params)
    return state_new, saved


def step_backward(d_state_new, saved, params):
    """d_state_new: {name: (B, H)}, the adjoints of step_forward's new state.
    params: as given to step_forward (saved already holds them; the argument keeps
    the two steps' signatures alike).
    Returns (d_x_t (B, I), d_state {name: (B, H)}, d_params {name: array})."""
    del params
    d_x, d_state, d_params = backward(None, d_state_new, saved)
    return d_x[0], d_state, d_params
