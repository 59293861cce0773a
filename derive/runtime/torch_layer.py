"""The nn.Module every emitted Torch module carries: a multi-layer, bidirectional layer over the
module's forward(), with torch.nn.LSTM's constructor, call and return conventions.

This is real, linted Python; derive_cells.emit.torch_layer copies everything after the marker line
into each emitted Torch module, with the class named for the cell (CellLayer -> LSTM, GRU, ...).
The names defined above the marker are what that module defines itself.
"""

import torch

STATE: tuple[str, ...] = ()  # each emitted module's states
PARAMS: dict[str, tuple[str, ...]] = {}  # ... its parameter shapes
BLOCKS: dict[str, tuple[str, ...]] = {}  # ... the per-equation blocks each parameter stacks
# vector parameter -> (role, equation), gate -> its biases, and what bias=False leaves out:
# written for each cell by derive_cells.emit.torch_layer
ROLES: dict[str, tuple[str, str | None]] = {}
GATE_BIASES: dict[str, tuple[str, ...]] = {}
BIAS_PARAMS: tuple[str, ...] = ()
CHRONO: dict[str, int] = {}  # chrono initialisation: gate -> the sign of its bias


def _dims(spec, I, H):  # the module's shape decoder
    raise NotImplementedError


def forward(x, state0, params, lengths=None, reverse=False, check=True):  # its public forward
    raise NotImplementedError


# ---- inlined into every emitted module from here on (derive_cells.emit.targets) ----

class CellLayer(torch.nn.Module):
    """This module's cell as a multi-layer, optionally bidirectional torch.nn.Module with
    torch.nn.LSTM's conventions (see the module docstring); each layer and direction runs
    forward()."""

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, device=None, dtype=None, init=None,
                 tmax=None, **gate_bias):
        super().__init__()
        name = type(self).__name__
        if init not in (None, "pytorch", "chrono"):
            raise ValueError(f"{name}: init must be None, 'pytorch' or 'chrono', got {init!r}")
        if (init == "chrono") != (tmax is not None):
            raise ValueError(f"{name}: tmax goes with init='chrono' (and init='chrono' needs "
                             f"tmax), got init={init!r}, tmax={tmax!r}")
        if init == "chrono":
            _chrono_check(name, tmax, bias)
        unknown = sorted(set(gate_bias) - set(GATE_BIASES))
        if unknown:
            raise TypeError(f"{name}: unknown keyword argument(s) {unknown}; the gates "
                            f"whose bias can be set are {list(GATE_BIASES)}")
        if gate_bias and not bias:
            raise ValueError(f"{name}: gate biases {sorted(gate_bias)} given with bias=False")
        for gate, value in gate_bias.items():
            _finite_bias(name, gate, value)
        for what, value in (("input_size", input_size), ("hidden_size", hidden_size),
                            ("num_layers", num_layers)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name}: {what} must be a positive integer, got {value!r}")
        if not 0 <= dropout <= 1 or isinstance(dropout, bool):
            raise ValueError(f"{name}: dropout must be a number in [0, 1], got {dropout!r}")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, float(dropout)
        self.bidirectional = bool(bidirectional)
        self.gate_bias = dict(gate_bias)
        self.init, self.tmax = init, tmax
        directions = 2 if bidirectional else 1
        self._layout = []  # per layer * directions + direction: (input size, {PARAMS: attribute})
        for layer in range(num_layers):
            size = input_size if layer == 0 else hidden_size * directions
            for direction in range(directions):
                suffix = f"_l{layer}" + ("_reverse" if direction else "")
                names = {}
                for name, spec in PARAMS.items():
                    if bias or name not in BIAS_PARAMS:
                        shape = _dims(spec, size, hidden_size)
                        setattr(self, name + suffix, torch.nn.Parameter(
                            torch.empty(shape, device=device, dtype=dtype)))
                        names[name] = name + suffix
                self._layout.append((size, names))
        self.reset_parameters()

    def extra_repr(self):
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        for what, default in (("bias", True), ("batch_first", False), ("dropout", 0.0),
                              ("bidirectional", False)):
            if getattr(self, what) != default:
                s += f", {what}={getattr(self, what)}"
        if self.init is not None:
            s += f", init={self.init!r}" + (f", tmax={self.tmax}" if self.tmax is not None else "")
        return s + "".join(f", {g}={v}" for g, v in self.gate_bias.items())

    def reset_parameters(self):
        """Every parameter from U(-1/sqrt(H), 1/sqrt(H)), as PyTorch; then chrono initialisation
        (init='chrono'); then the gate biases given to the constructor."""
        bound = self.hidden_size ** -0.5
        with torch.no_grad():
            for p in self.parameters():
                p.uniform_(-bound, bound)
        if self.init == "chrono":
            self.set_chrono_bias(self.tmax)
        for gate, value in self.gate_bias.items():
            self.set_gate_bias(gate, value)

    def set_gate_bias(self, gate, value):
        """Set gate's pre-activation bias to value in every layer and direction: its first bias
        (GATE_BIASES) to value, its other biases to 0."""
        if gate not in GATE_BIASES:
            raise ValueError(f"gate {gate!r}: the gates whose bias can be set are "
                             f"{list(GATE_BIASES)}")
        if not self.bias:
            raise ValueError(f"gate {gate!r}: this {type(self).__name__} has no biases "
                             "(bias=False)")
        _finite_bias(type(self).__name__, gate, value)
        for _, names in self._layout:
            self._put_gate_bias(names, gate, value)

    def set_chrono_bias(self, tmax, generator=None):
        """Chrono initialisation (Tallec & Ollivier 2018, "Can recurrent neural networks warp
        time?"): per unit, u ~ U(1, tmax - 1), one draw per layer and direction (from torch's
        generator, or generator); each gate of CHRONO gets the pre-activation bias sign * log(u)
        (its first bias; its others 0): the keeping gate log(u), an LSTM's input gate -log(u)."""
        _chrono_check(type(self).__name__, tmax, self.bias)
        H = self.hidden_size
        for _, names in self._layout:
            u = torch.empty(H, dtype=torch.float64).uniform_(1.0, float(tmax) - 1.0,
                                                             generator=generator)
            for gate, sign in CHRONO.items():
                self._put_gate_bias(names, gate, sign * torch.log(u))

    def _put_gate_bias(self, names, gate, value):
        """One layer and direction: gate's first bias to value (a number or (H,)), the others 0."""
        H = self.hidden_size
        with torch.no_grad():
            for k, b in enumerate(GATE_BIASES[gate]):
                name, j = next((n, blocks.index(b)) for n, blocks in BLOCKS.items()
                               if b in blocks)
                p = getattr(self, names[name])
                v = value if k == 0 else 0.0
                p[j * H:(j + 1) * H] = v.to(p) if isinstance(v, torch.Tensor) else v

    def forward(self, input, hx=None, lengths=None):
        """input: (T, B, I) ((B, T, I) with batch_first), (T, I), or a PackedSequence; T >= 1,
        B = 0 gives empty outputs (as torch.nn.LSTM). hx: None (zeros), or (num_layers *
        num_directions, B, H) per state: one tensor for a one-state cell, else a tuple in STATE
        order, where None stands for zeros. lengths: (B,) integers or None (padded input only).
        Returns (output, final states), as torch.nn.LSTM."""
        rnn = torch.nn.utils.rnn
        packed = isinstance(input, rnn.PackedSequence)
        unbatched = not packed and input.dim() == 2
        if packed:
            if lengths is not None:
                raise ValueError("lengths: a PackedSequence carries its own lengths; give "
                                 "one or the other")
            x, lengths = rnn.pad_packed_sequence(input)
        elif input.dim() not in (2, 3):
            raise ValueError(f"input: expected (T, B, I), (B, T, I) with batch_first, (T, I) "
                             f"or a PackedSequence, got shape {tuple(input.shape)}")
        elif unbatched:
            x = input.unsqueeze(1)
        else:
            x = input.transpose(0, 1) if self.batch_first else input
        shape = tuple((input.data if packed else input).shape)
        if x.shape[0] == 0:
            raise ValueError(f"input: no time steps (T = 0, input shape {shape}); give at least "
                             "one step, as torch.nn.LSTM requires")
        if x.shape[2] != self.input_size:
            raise ValueError(f"input: expected input_size = {self.input_size} features in its "
                             f"last dimension, got {x.shape[2]} (input shape {shape})")
        directions = 2 if self.bidirectional else 1
        if hx is not None:
            hx = (hx,) if isinstance(hx, torch.Tensor) else tuple(hx)
            if len(hx) != len(STATE):
                raise ValueError(f"hx: expected {len(STATE)} tensor(s), one per state in "
                                 f"{STATE}, got {len(hx)}")
            want = (self.num_layers * directions, x.shape[1], self.hidden_size)
            given = []
            for name, h in zip(STATE, hx):
                if h is not None:  # None: zeros
                    if not isinstance(h, torch.Tensor):
                        raise ValueError(f"hx[{name!r}]: expected a tensor of shape (num_layers"
                                         f" * num_directions, B, H) = {want} or None (zeros), "
                                         f"got {type(h).__name__}")
                    h = h.unsqueeze(1) if unbatched else h
                    if tuple(h.shape) != want:
                        raise ValueError(f"hx[{name!r}]: expected shape (num_layers * "
                                         f"num_directions, B, H) = {want}, got {tuple(h.shape)}")
                given.append(h)
            hx = tuple(given)
        device = x.device.type
        if torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device):
            dtype = torch.get_autocast_dtype(device)

            def cast(t):
                return t.to(dtype) if t.is_floating_point() and t.dtype != torch.float64 else t

            with torch.autocast(device, enabled=False):
                output, final = self._layers(cast(x), hx, lengths, cast)
        else:
            output, final = self._layers(x, hx, lengths, None)
        if packed:
            if input.sorted_indices is not None:
                output = output.index_select(1, input.sorted_indices)
                lengths = lengths[input.sorted_indices.cpu()]
            data = rnn.pack_padded_sequence(output, lengths).data
            output = rnn.PackedSequence(data, input.batch_sizes, input.sorted_indices,
                                        input.unsorted_indices)
        elif unbatched:
            output, final = output.squeeze(1), [s.squeeze(1) for s in final]
        elif self.batch_first:
            output = output.transpose(0, 1)
        return output, (final[0] if len(STATE) == 1 else tuple(final))

    def _layers(self, x, hx, lengths, cast):
        """Every layer and direction: (output (T, B, directions * H), [final state per STATE,
        (layers * directions, B, H)])."""
        directions = 2 if self.bidirectional else 1
        H = self.hidden_size
        finals = [[] for _ in STATE]
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(directions):
                k = layer * directions + direction
                size, names = self._layout[k]
                params = {}
                for name, spec in PARAMS.items():
                    if name in names:
                        p = getattr(self, names[name])
                        params[name] = cast(p) if cast else p
                    else:  # bias=False
                        params[name] = torch.zeros(_dims(spec, size, H), dtype=x.dtype,
                                                   device=x.device)
                state0 = {}  # zeros, given: they also fix H where no parameter does
                for n, h in zip(STATE, hx or [None] * len(STATE)):
                    state0[n] = (torch.zeros(x.shape[1], H, dtype=x.dtype, device=x.device)
                                 if h is None else cast(h[k]) if cast else h[k])
                if x.shape[1] == 0:  # an empty batch: empty outputs, as torch.nn.LSTM
                    zero = sum(t.sum() for t in (x, *params.values(), *state0.values())) * 0
                    out = zero.expand(len(x), 0, H)
                    state_T = dict.fromkeys(STATE, zero.expand(0, H))
                else:
                    out, state_T, _ = forward(x, state0, params, lengths=lengths,
                                              reverse=direction == 1, check=False)
                outputs.append(out)
                for seq, name in zip(finals, STATE):
                    seq.append(state_T[name])
            x = outputs[0] if directions == 1 else torch.cat(outputs, dim=2)
            if self.dropout and layer < self.num_layers - 1:
                x = torch.nn.functional.dropout(x, self.dropout, self.training)
        return x, [torch.stack(seq) for seq in finals]


def _chrono_check(layer, tmax, bias):
    """Refuse chrono initialisation without a keeping gate, without biases, or with a tmax that
    is not a finite number > 2."""
    if not CHRONO:
        raise ValueError(f"{layer}: chrono initialisation needs a keeping gate (one that "
                         "multiplies a previous state) with a bias; this cell has none")
    if not bias:
        raise ValueError(f"{layer}: chrono initialisation sets gate biases; bias=False has none")
    if isinstance(tmax, bool) or not isinstance(tmax, (int, float)) or not 2 < tmax < 1e300:
        raise ValueError(f"{layer}: tmax must be a finite number > 2 (u ~ U(1, tmax - 1)), "
                         f"got {tmax!r}")


def _finite_bias(layer, gate, value):
    """Refuse a gate bias that is not a finite number (or a tensor of finite numbers): a NaN
    would make every output NaN."""
    try:
        finite = not isinstance(value, (bool, str)) and bool(
            torch.isfinite(torch.as_tensor(value)).all())
    except (TypeError, ValueError, RuntimeError):
        finite = False
    if not finite:
        raise ValueError(f"{layer}: the bias of gate {gate!r} must be a finite number, "
                         f"got {value!r}")
