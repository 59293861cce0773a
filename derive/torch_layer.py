"""The nn.Module section of an emitted Torch module: a multi-layer, bidirectional layer over the
module's forward(), with torch.nn.LSTM's constructor, call and return conventions.

What the text depends on comes from the derivation: the class name (the spec name in CamelCase),
which vector parameters are biases of which gate (the biases the plan folds into a product belong
to the gate of that product's equation) and which are read elementwise (ROLES).
"""

from __future__ import annotations

import ast
import builtins
import keyword
import textwrap

from derive_cells.derivation import Derivation
from derive_cells.plan import Plan

ACRONYMS = ("lstm", "gru", "rnn", "mgu", "lru", "gla", "ssm")


def class_name(spec_name: str, taken: set[str]) -> str:
    """lstm -> LSTM, rnn_relu -> RNNRelu, simplified_gru -> SimplifiedGRU, indrnn -> IndRNN; a
    name already taken in the module (or a keyword, or a builtin) gets "Layer" appended."""
    parts = []
    for part in (p for p in spec_name.split("_") if p):
        low = part.lower()
        suffix = next((a for a in ACRONYMS if low.endswith(a)), None)
        if suffix is not None:
            head = part[:-len(suffix)]
            parts.append((head[:1].upper() + head[1:]) + suffix.upper())
        else:
            parts.append(part[:1].upper() + part[1:])
    name = "".join(parts) or "Cell"
    if not name[0].isalpha():
        name = "Cell" + name
    while (name in taken or keyword.iskeyword(name) or hasattr(builtins, name)
           or not name.isidentifier()):
        name += "Layer"
    return name


def _top_level_names(text: str) -> set[str]:
    names = set()
    for node in ast.parse(text).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return names


def roles(deriv: Derivation, plan: Plan) -> tuple[dict, dict]:
    """(ROLES: vector -> (role, equation), GATE_BIASES: gate -> its biases, the one added to the
    input's product first)."""
    cell = deriv.cell
    eq_of = {n.name: cell.equations[n.equation - 1][0] for n in deriv.nodes}
    hoisted = {m for g in deriv.groups if g.hoisted for m, _ in g.members}
    gate_of, gates = {}, {}
    for product in sorted(plan.folded, key=lambda m: m not in hoisted):  # stable: input first
        for b in plan.folded[product]:
            gate_of[b] = eq_of[product]
            gates.setdefault(eq_of[product], []).append(b)
    out = {}
    for q in cell.vectors:
        if q in gate_of:
            out[q] = ("bias", gate_of[q])
            continue
        readers = [n for n in deriv.nodes if any(s.name == q for s in n.expr.free_symbols)]
        out[q] = ("elementwise", eq_of[readers[0].name]) if readers else ("unused", None)
    order = [t for t, _, _ in cell.equations]
    gates = {g: tuple(gates[g]) for g in order if g in gates}
    return out, gates


def _doc(name: str, cell, plan: Plan, role: dict, gates: dict, bias_params: list[str]) -> str:
    state = tuple(cell.state)
    packed = all(n in plan.params for n in ("weight_ih", "weight_hh"))
    example = "f" if "f" in gates else next(iter(gates), None)
    if len(state) == 1:
        call = f"output, {state[0]}_n = layer(input, hx=None, lengths=None)"
        hx = f"hx and {state[0]}_n: (num_layers * num_directions, B, H)"
    else:
        names = ", ".join(f"{s}_n" for s in state)
        call = f"output, ({names}) = layer(input, hx=None, lengths=None)"
        hx = (f"hx (a tuple, in STATE order {state}) and {names}: "
              "(num_layers * num_directions, B, H) each")
    suffixed = ", ".join(f"{p}_l{{k}}" for p in plan.params)
    prose = [
        f"{name} (below) is a torch.nn.Module over forward(), with torch.nn.LSTM's constructor, "
        "call and return conventions:",
        None,
        f"    {name}(input_size, hidden_size, num_layers=1, bias=True, batch_first=False,",
        "        dropout=0.0, bidirectional=False, device=None, dtype=None, **gate_bias)",
        f"    {call}",
        None,
        "input: (T, B, I), (B, T, I) with batch_first, (T, I) unbatched, or a PackedSequence "
        "(the output is then one too, with the same sorted_indices); lengths: (B,) integers for "
        "a padded input (PyTorch's packed-sequence semantics: outputs are zero past a row's "
        f"length). output: (T, B, num_directions * H), time-major unless batch_first. {hx}, at "
        "index layer * num_directions + direction (never batch-first). Parameters of layer k: "
        f"{suffixed} (+ _reverse for the second direction)"
        + ("; so a state_dict() of the torch.nn module of the same layout loads as it is, both "
           "ways. " if packed else ". ")
        + "Layer k > 0 reads H * num_directions inputs. Every layer and direction calls "
        "forward() with check=False: no host synchronisation, and NaN or infinity propagate as "
        "in torch.nn (a GradScaler then skips the step). Dropout applies to each layer's output "
        "but the last's, in training mode (torch.nn.functional.dropout).",
    ]
    init = ("reset_parameters(): every parameter from U(-1/sqrt(H), 1/sqrt(H)), as PyTorch, "
            "then the gate biases given as keywords (set_gate_bias(gate, value) does the same "
            "later). ")
    if example is not None:
        first, *rest = gates[example]
        rest_text = (f", the other{'s' if len(rest) > 1 else ''} ({', '.join(rest)}) to 0"
                     if rest else "")
        init += (f"{name}(I, H, {example}=1.0) sets gate {example}'s pre-activation bias to 1 "
                 "in every layer and direction (the forget-bias-1 initialisation, for a "
                 f"forget gate): its first bias {first} to the value{rest_text}. Gates and "
                 "their biases (the first is the one set): "
                 + "; ".join(f"{g} ({', '.join(bs)})" for g, bs in gates.items()) + ".")
    else:
        init += "This cell has no gate biases to set."
    if bias_params:
        init += f" bias=False: {', '.join(bias_params)} are not parameters and stay zero."
    prose += [None, init, None,
              "torch.autocast: the layer casts its input, states and parameters to the autocast "
              "dtype and runs the recurrence in that dtype, with autocast off inside; the "
              "gradients reach the parameters in their own dtype. torch.func (grad, vmap, jvp) "
              "is not supported: CellFunction keeps its Python cache on ctx in forward (no "
              "setup_context, no vmap rule), which function transforms cannot trace.",
              None,
              "ROLES: each vector parameter's role and equation: 'bias' is folded into that "
              "gate's matrix product, 'elementwise' is read elementwise there (a peephole, a "
              "recurrent vector)."]
    lines = []
    for para in prose:
        if para is None:
            lines.append("")
        elif para.startswith("    "):
            lines.append(para)
        else:
            lines += textwrap.wrap(para, 96, break_on_hyphens=False)
    lines += [f"    {q}: {r} of {e}" if e else f"    {q}: {r}" for q, (r, e) in role.items()]
    if not role:
        lines.append("    (no vector parameters)")
    return "\n".join(lines)


_CLASS = '''
# vector parameter -> (role, equation): "bias" is folded into that gate's matrix product,
# "elementwise" is read elementwise in it (a peephole, a recurrent vector)
ROLES = __ROLES__
# gate -> its biases; a gate bias given to the constructor sets the first and zeroes the others
GATE_BIASES = __GATES__


class __NAME__(torch.nn.Module):
    """The __CELL__ cell as a multi-layer, optionally bidirectional torch.nn.Module with
    torch.nn.LSTM's conventions (see the module docstring); each layer and direction runs
    forward()."""

    _bias_params = __BIAS_PARAMS__  # what bias=False leaves out

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, device=None, dtype=None, **gate_bias):
        super().__init__()
        name = type(self).__name__
        unknown = sorted(set(gate_bias) - set(GATE_BIASES))
        if unknown:
            raise TypeError(f"{name}: unknown keyword argument(s) {unknown}; the gates "
                            f"whose bias can be set are {list(GATE_BIASES)}")
        if gate_bias and not bias:
            raise ValueError(f"{name}: gate biases {sorted(gate_bias)} given with bias=False")
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
        directions = 2 if bidirectional else 1
        self._layout = []  # per layer * directions + direction: (input size, {PARAMS: attribute})
        for layer in range(num_layers):
            size = input_size if layer == 0 else hidden_size * directions
            for direction in range(directions):
                suffix = f"_l{layer}" + ("_reverse" if direction else "")
                names = {}
                for name, spec in PARAMS.items():
                    if bias or name not in self._bias_params:
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
        return s + "".join(f", {g}={v}" for g, v in self.gate_bias.items())

    def reset_parameters(self):
        """Every parameter from U(-1/sqrt(H), 1/sqrt(H)), as PyTorch; then the gate biases given
        to the constructor."""
        bound = self.hidden_size ** -0.5
        with torch.no_grad():
            for p in self.parameters():
                p.uniform_(-bound, bound)
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
        H = self.hidden_size
        with torch.no_grad():
            for _, names in self._layout:
                for k, b in enumerate(GATE_BIASES[gate]):
                    name, j = next((n, blocks.index(b)) for n, blocks in BLOCKS.items()
                                   if b in blocks)
                    getattr(self, names[name])[j * H:(j + 1) * H] = value if k == 0 else 0.0

    def forward(self, input, hx=None, lengths=None):
        """input: (T, B, I) ((B, T, I) with batch_first), (T, I), or a PackedSequence.
        hx: None (zeros), or (num_layers * num_directions, B, H) per state: one tensor for a
        one-state cell, else a tuple in STATE order. lengths: (B,) integers or None (padded input
        only). Returns (output, final states), as torch.nn.LSTM."""
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
        directions = 2 if self.bidirectional else 1
        if hx is not None:
            hx = (hx,) if isinstance(hx, torch.Tensor) else tuple(hx)
            if len(hx) != len(STATE):
                raise ValueError(f"hx: expected {len(STATE)} tensor(s), one per state in "
                                 f"{STATE}, got {len(hx)}")
            hx = tuple(h.unsqueeze(1) if unbatched else h for h in hx)
            want = (self.num_layers * directions, x.shape[1], self.hidden_size)
            for name, h in zip(STATE, hx):
                if tuple(h.shape) != want:
                    raise ValueError(f"hx[{name!r}]: expected shape (num_layers * "
                                     f"num_directions, B, H) = {want}, got {tuple(h.shape)}")
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
                if hx is None:  # zeros, given: they also fix H where no parameter does
                    state0 = {n: torch.zeros(x.shape[1], H, dtype=x.dtype, device=x.device)
                              for n in STATE}
                else:
                    state0 = {n: (cast(h[k]) if cast else h[k]) for n, h in zip(STATE, hx)}
                out, state_T, _ = forward(x, state0, params, lengths=lengths,
                                          reverse=direction == 1, check=False)
                outputs.append(out)
                for seq, name in zip(finals, STATE):
                    seq.append(state_T[name])
            x = outputs[0] if directions == 1 else torch.cat(outputs, dim=2)
            if self.dropout and layer < self.num_layers - 1:
                x = torch.nn.functional.dropout(x, self.dropout, self.training)
        return x, [torch.stack(seq) for seq in finals]
'''


def _literal(d: dict) -> str:
    if not d:
        return "{}"
    return "{\n" + "".join(f"    {k!r}: {v!r},\n" for k, v in d.items()) + "}"


def add_layer(deriv: Derivation, plan: Plan, text: str) -> str:
    """The Torch module text with the layer class appended and documented in its docstring."""
    cell = deriv.cell
    role, gates = roles(deriv, plan)
    name = class_name(cell.name, _top_level_names(text) | {"ROLES", "GATE_BIASES"})
    bias_params = [p for p, blocks in plan.params.items()
                   if all(role.get(b, ("",))[0] == "bias" for b in blocks)]
    body = (_CLASS.replace("__ROLES__", _literal(role)).replace("__GATES__", _literal(gates))
            .replace("__BIAS_PARAMS__", repr(tuple(bias_params))).replace("__CELL__", cell.name)
            .replace("__NAME__", name))
    doc = _doc(name, cell, plan, role, gates, bias_params)
    end = text.index('\n"""', 3)  # the end of the module docstring
    text = text[:end] + "\n\n" + doc + text[end:]
    return text.rstrip("\n") + "\n\n" + body.rstrip() + "\n"

