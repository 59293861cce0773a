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
import re
import textwrap

from derive_cells.derivation import Derivation
from derive_cells.emit.plan import Plan
from derive_cells.emit.targets import inlined

# The layer class every Torch module carries (derive/runtime_torch_layer.py), named CellLayer
# there, and the module constants it reads, written here for each cell.
LAYER = inlined("torch_layer.py")
CONSTANTS = ("ROLES", "GATE_BIASES", "BIAS_PARAMS", "CHRONO")

ACRONYMS = ("lstm", "gru", "rnn", "mgu", "lru", "gla", "ssm")
_WORD = re.compile(r"[A-Za-z0-9]+")  # the words of a spec name, between "_", "-" and "."


def class_name(spec_name: str, taken: set[str]) -> str:
    """lstm -> LSTM, rnn_relu -> RNNRelu, simplified_gru -> SimplifiedGRU, indrnn -> IndRNN; any
    other character a spec name may hold ('-', '.') separates words as '_' does (my-cell.v2 ->
    MyCellV2); a name that starts with a digit gets "Cell" in front, one with no letters or
    digits is "Cell"; a name already taken in the module (or a keyword, or a builtin) gets
    "Layer" appended.

    >>> class_name("my-cell.v2", set()), class_name("2x", set()), class_name("none", set())
    ('MyCellV2', 'Cell2x', 'NoneLayer')
    """
    parts = []
    for part in _WORD.findall(spec_name):
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
    while name in taken or keyword.iskeyword(name) or hasattr(builtins, name):
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


def chrono_gates(deriv: Derivation, gates: dict) -> dict[str, int]:
    """The gates chrono initialisation (Tallec & Ollivier 2018) sets, with the sign of their
    bias, +-log U(1, T_max - 1): a keeping gate, one with a bias whose equation multiplies a
    previous state by it (+1: f in c = f * c_prev + ..., z in h = (1 - z) * n + z * h_prev) or by
    one minus it (-1: Gamma_u in c = ... + (1 - Gamma_u) * c_prev); and the sigmoid gates with a
    bias in the same equation's other terms, which let the input in (-1: the LSTM's i). Empty
    when no keeping gate is known."""
    import sympy

    from derive_cells.functions import Sigmoid
    from derive_cells.spec import prev as prev_name

    cell = deriv.cell
    expr_of = {t: e for t, e, _ in cell.equations}
    out: dict[str, int] = {}
    for state in cell.state:
        if state not in expr_of:
            continue
        prev = next((s for s in expr_of[state].free_symbols if s.name == prev_name(state)), None)
        if prev is None:
            continue
        expr = sympy.expand(expr_of[state])
        coeff = expr.coeff(prev)
        for g in gates:
            sym = next((s for s in expr.free_symbols if s.name == g), None)
            if sym is None or g in out:
                continue
            sign = 1 if coeff == sym else -1 if sympy.expand(coeff - (1 - sym)) == 0 else 0
            if sign:
                out[g] = sign
        if not out:
            continue
        rest = expr - expr.coeff(prev) * prev
        for g in gates:
            if g not in out and isinstance(expr_of.get(g), Sigmoid) and any(
                    s.name == g for s in rest.free_symbols):
                out[g] = -1
        return out
    return out


def _doc(name: str, cell, plan: Plan, role: dict, gates: dict, bias_params: list[str],
         chrono: dict) -> str:
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
        "        dropout=0.0, bidirectional=False, device=None, dtype=None, init=None, tmax=None,",
        "        **gate_bias)",
        f"    {call}",
        None,
        "input: (T, B, I), (B, T, I) with batch_first, (T, I) unbatched, or a PackedSequence "
        "(the output is then one too, with the same sorted_indices); lengths: (B,) integers for "
        "a padded input (PyTorch's packed-sequence semantics: outputs are zero past a row's "
        f"length). T >= 1; an empty batch (B = 0) gives empty outputs, as in torch.nn. output: "
        f"(T, B, num_directions * H), time-major unless batch_first. {hx}, at index layer * "
        "num_directions + direction (never batch-first); hx=None, or None for a state, starts "
        "it at zeros. Parameters of layer k: "
        f"{suffixed} (+ _reverse for the second direction)"
        + ("; so a state_dict() of the torch.nn module of the same layout loads as it is, both "
           "ways. " if packed else ". ")
        + "Layer k > 0 reads H * num_directions inputs. Every layer and direction calls "
        "forward() with check=False: no host synchronisation, and NaN or infinity propagate as "
        "in torch.nn (a GradScaler then skips the step). Dropout applies to each layer's output "
        "but the last's, in training mode (torch.nn.functional.dropout).",
    ]
    init = ("reset_parameters(): every parameter from U(-1/sqrt(H), 1/sqrt(H)), as PyTorch, "
            "then the gate biases given as keywords, finite numbers (set_gate_bias(gate, value) "
            "does the same later). ")
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
    if chrono:
        signs = ", ".join(f"{g} {'+' if v > 0 else '-'}log(u)" for g, v in chrono.items())
        init += (f" init='chrono', tmax=N: chrono initialisation (Tallec & Ollivier 2018), per "
                 f"unit u ~ U(1, N - 1) drawn from torch's generator, sets {signs} (each gate's "
                 "first bias; its others 0) before the keyword gate biases "
                 "(set_chrono_bias(tmax) does the same later).")
    else:
        init += " init='chrono' is refused: no gate keeps the previous state."
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


def _literal(d: dict) -> str:
    if not d:
        return "{}"
    return "{\n" + "".join(f"    {k!r}: {v!r},\n" for k, v in d.items()) + "}"


def add_layer(deriv: Derivation, plan: Plan, text: str, runtime: str) -> str:
    """The Torch module text with the layer class (and the constants it reads) added before the
    runtime section (which starts with runtime), and documented in the module docstring."""
    cell = deriv.cell
    role, gates = roles(deriv, plan)
    chrono = chrono_gates(deriv, gates)
    name = class_name(cell.name, _top_level_names(text) | set(CONSTANTS))
    bias_params = [p for p, blocks in plan.params.items()
                   if all(role.get(b, ("",))[0] == "bias" for b in blocks)]
    constants = [
        '# vector parameter -> (role, equation): "bias" is folded into that gate\'s matrix '
        "product,",
        '# "elementwise" is read elementwise in it (a peephole, a recurrent vector)',
        f"ROLES = {_literal(role)}",
        "# gate -> its biases; a gate bias given to the constructor sets the first and zeroes the "
        "others",
        f"GATE_BIASES = {_literal(gates)}",
        f"BIAS_PARAMS = {tuple(bias_params)!r}  # what bias=False leaves out",
        "# chrono initialisation (init=\"chrono\"): gate -> the sign of its bias, +-log U(1, "
        "tmax - 1)",
        f"CHRONO = {_literal(chrono)}",
    ]
    layer = re.sub(r"\bCellLayer\b", name, LAYER.strip("\n"))
    doc = _doc(name, cell, plan, role, gates, bias_params, chrono)
    end = text.index('\n"""', 3)  # the end of the module docstring
    text = text[:end] + "\n\n" + doc + text[end:]
    at = text.index(runtime)
    return text[:at] + "\n".join(constants) + "\n\n\n" + layer + "\n\n\n" + text[at:]
