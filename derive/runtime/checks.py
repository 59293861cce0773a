"""Input checks every emitted module carries (NumPy and Torch alike): shapes, dtypes, finite
values, the hidden size, and distinct returned gradients.

This is real, linted Python; derive_cells.emit.targets copies everything after the marker line into
each emitted module. The names defined above the marker are what that module (or its target's
runtime) defines itself. verify/ decodes PARAMS shapes with _dims from here.
"""

STATE: tuple[str, ...] = ()  # each emitted module's states
PARAMS: dict[str, tuple[str, ...]] = {}  # ... and parameter shapes


def _is_float_array(a):  # the target runtime's helpers
    raise NotImplementedError


def _first_nonfinite(a):
    raise NotImplementedError


def _copy(a):
    raise NotImplementedError


def _zeros(shape, like):
    raise NotImplementedError


# ---- inlined into every emitted module from here on (derive_cells.emit.targets) ----

def _dims(spec, I, H):
    """('4*H', 'I') -> (4 * H, I)."""
    out = []
    for dim in spec:
        k, _, name = dim.rpartition("*")
        out.append((int(k) if k else 1) * {"H": H, "I": I}[name])
    return tuple(out)


def _check(x, state0, params, finite=True):
    """Validate shapes and dtypes (and that every value is finite); return (T, B, I, H)."""
    if not _is_float_array(x) or x.ndim != 3:
        raise ValueError(f"x: expected a floating-point array of shape (T, B, I), "
                         f"time-major, got {type(x).__name__} {getattr(x, 'shape', '')}")
    T, B, I = x.shape
    if finite:
        _check_finite("x", x)
    unknown = sorted(set(params) - set(PARAMS))
    missing = [n for n in PARAMS if n not in params]
    if unknown or missing:
        raise ValueError(f"params: unknown {unknown}, missing {missing}; "
                         f"expected {list(PARAMS)}")
    unknown = sorted(set(state0 or {}) - set(STATE))
    if unknown:
        raise ValueError(f"state0: unknown state(s) {unknown}; states are {STATE}")
    H, source = _hidden_size(state0 or {}, params)
    for name, spec in PARAMS.items():
        _check_array(f"params[{name!r}]", params[name], _dims(spec, I, H), x, source,
                     finite)
    for name, value in (state0 or {}).items():
        _check_array(f"state0[{name!r}]", value, (B, H), x, source, finite)
    return T, B, I, H


def _hidden_size(state0, params):
    """H and the array that fixed it: an initial state, else a parameter with H columns,
    else the rows of the first parameter."""
    for name, value in state0.items():
        if getattr(value, "ndim", None) == 2:
            return value.shape[1], f"H = {value.shape[1]}, from state0[{name!r}]"
    for name, spec in PARAMS.items():
        if spec[1:] == ("H",) and getattr(params[name], "ndim", None) == 2:
            H = params[name].shape[1]
            return H, f"H = {H}, from the columns of params[{name!r}]"
    for name, spec in PARAMS.items():
        if getattr(params[name], "ndim", None) in (1, 2):
            H = params[name].shape[0] // _dims(spec, 1, 1)[0]
            return H, f"H = {H}, from the rows of params[{name!r}]"
    raise ValueError("state0: give the initial states; nothing else fixes the hidden "
                     "size H of this cell")


def _check_array(what, a, shape, like, why="", finite=True):
    if not _is_float_array(a):
        raise ValueError(f"{what}: expected a floating-point array of shape {shape}, "
                         f"got {type(a).__name__}")
    if tuple(a.shape) != tuple(shape):
        why = f" ({why})" if why else ""
        raise ValueError(f"{what}: expected shape {tuple(shape)}{why}, "
                         f"got {tuple(a.shape)}")
    if a.dtype != like.dtype:
        raise ValueError(f"{what}: dtype {a.dtype} differs from x's {like.dtype}")
    if finite:
        _check_finite(what, a)


def _check_adjoints(d_outputs, d_state_T, x, H):
    """Validate backward's incoming adjoints against the forward's input x (T, B, I)."""
    T, B, _ = x.shape
    for name, value in (d_state_T or {}).items():
        if name not in STATE:
            raise ValueError(f"d_state_T: unknown state {name!r}; states are {STATE}")
        if value is not None:
            _check_array(f"d_state_T[{name!r}]", value, (B, H), x)
    if d_outputs is not None:
        _check_array("d_outputs", d_outputs, (T, B, H), x, "T, B, H: time-major")


def _check_finite(what, a):
    bad = _first_nonfinite(a)
    if bad is not None:
        raise ValueError(f"{what}: not finite (NaN or infinity) at index {bad}")


def _distinct(d_state0, d_params, given):
    """Every returned gradient its own array: a copy where one would be returned twice
    or is one of the given adjoints (so each can be changed in place on its own)."""
    seen = {id(a) for a in (given or {}).values() if a is not None}
    for out in (d_state0, d_params):
        for name, a in out.items():
            if id(a) in seen:
                out[name] = a = _copy(a)
            seen.add(id(a))
    return d_state0, d_params


def _initial(values, like, B, H):
    """Initial states (or final-state adjoints): given arrays, zeros where missing."""
    values = values or {}
    return tuple(values[n] if values.get(n) is not None else _zeros((B, H), like)
                 for n in STATE)
