"""Emit a standalone module (forward, BPTT backward, per-step Jacobian) from a Derivation.

The module contract is in DESIGN.md: STATE, PARAMS, forward, backward, step_forward,
step_backward (and step_jacobian). The structure (derive/emit/plan.py) is what makes it fast: the
input's products for all steps in one matrix product before the loop, one product per step for
each other operand, biases folded into the products, gates activated as blocks, and the
parameter gradients from the stacked per-step adjoints in one product after the loop.
"""

from __future__ import annotations

from derive_cells.derivation import Derivation
from derive_cells.emit.layout import prune_assignments, wrap
from derive_cells.emit.plan import make_plan
from derive_cells.emit.printers import CellCodePrinter, TorchCodePrinter, term_ranks
from derive_cells.emit.step import StepSections
from derive_cells.emit.targets import CHECKS, STEP_API, TARGETS, Target, drop_unused_helpers
from derive_cells.emit.torch_layer import add_layer
from derive_cells.functions import BY_CLASS, DERIVATIVE_HELPERS
from derive_cells.spec import prev
from derive_cells.version import __version__


def _docstring_safe(text: str) -> str:
    """One line that cannot end the module docstring or start an escape inside it; characters
    that are not printable (NUL, ESC, line separators) are written as escapes."""
    text = " ".join(text.split())
    text = text.replace("\\", "\\\\").replace('"', '\\"')
    return "".join(c if c.isprintable() else f"\\U{ord(c):08x}" for c in text)


# What backward reads of forward's arguments, and the rule that follows (module docstring).
REFERENCES = {
    "numpy": (
        "backward() reads what forward() was given, not copies: its cache holds x and the arrays\n"
        "of state0 and params. Changing one of them in place between forward and backward\n"
        "(x[0] = 0, an optimizer's W -= lr * dW) silently gives the gradients at the changed\n"
        "values; update after backward, or pass copies. PyTorch refuses that case (autograd\n"
        "counts each tensor's in-place changes and raises in backward); NumPy arrays carry no\n"
        "such count, so nothing here can notice it.\n"),
    "torch": (
        "Autograd through forward() (loss.backward()) raises, as PyTorch does, when a tensor it\n"
        "saved was changed in place after forward. The explicit backward(d_outputs, d_state_T,\n"
        "cache) reads the cache as the NumPy module does, without that check: it holds x and the\n"
        "tensors of state0 and params, not copies, and changing one of them in place between\n"
        "forward and that backward silently gives the gradients at the changed values.\n"),
}

# The comment that opens the runtime section at the end of every module.
RUNTIME = ("# ---- runtime: the array helpers and input checks every emitted {target} module "
           "carries ----\n")


class Emitter(StepSections):
    """Builds the text of one module; sections are methods, shared by every target."""

    def __init__(self, deriv: Derivation, target: Target, command: str):
        self.deriv, self.target, self.cell, self.command = deriv, target, deriv.cell, command
        self.plan = make_plan(deriv)
        printer = TorchCodePrinter if target.fused_derivatives else CellCodePrinter
        self.printer = printer({g.name: g.matrix for g in deriv.groups})
        self._rank_cache: dict[int, dict[str, int]] = {}

    def p(self, expr, equation: int = 0) -> str:
        """expr as code; inside equation k (1-based), in the term order of its text."""
        return self.printer.doprint(expr, ranks=self._ranks(equation) if equation else None)

    def _ranks(self, equation: int) -> dict[str, int]:
        if equation not in self._rank_cache:
            stands_for = {n.name: n.expr for n in self.deriv.nodes}
            self._rank_cache[equation] = term_ranks(self.cell.equations[equation - 1][2],
                                                    stands_for)
        return self._rank_cache[equation]

    def module(self) -> str:
        """The cell's own code first (step math, loops, public API), the runtime it shares with
        every module of its target last."""
        # the step bodies first: printing them records which elementwise helpers they call
        steps = [self.forward_step(), self.backward_step(), self.forward(), self.backward(),
                 self.target.api.strip("\n"), STEP_API.strip("\n"), self.jacobian()]
        runtime = RUNTIME.format(target=self.target.title)
        parts = [self.header(), self.constants(), self.functions(), self.prepare(), *steps,
                 runtime + self.target.helpers.rstrip("\n"), CHECKS.strip("\n")]
        text = "\n\n\n".join(p.rstrip() for p in parts if p) + "\n"
        if self.target.name == "torch":  # the nn.Module over forward(), documented in the header
            text = add_layer(self.deriv, self.plan, text, runtime)
        return wrap(drop_unused_helpers(text, self.target.helpers + CHECKS))

    def header(self) -> str:
        c = self.cell
        eqs = "\n".join(f"    ({k}) {t} = {text}" for k, (t, _, text) in
                        enumerate(c.equations, start=1))
        title = _docstring_safe(c.title)
        return (f'"""{c.name}: {title}.\n\n'
                f"Forward pass and BPTT backward pass in {self.target.title}, emitted by derive-cells "
                f"{__version__}.\nRegenerate with:  {_docstring_safe(self.command)}\n\n"
                f"One step (every name is a vector of the hidden size H; {c.input} has size I; "
                f"'*' is elementwise):\n{eqs}\n\n"
                f"Arrays are time-major: {c.input} (T, B, I), outputs (T, B, H), states (B, H).\n\n"
                f"{REFERENCES[self.target.name]}"
                f'"""\n\n{self.target.imports}')

    def constants(self) -> str:
        lines = [f"STATE = {tuple(self.cell.state)!r}", f"OUTPUT = {self.cell.output!r}",
                 "PARAMS = {"]
        lines += [f"    {name!r}: {self.plan.shape(name)!r}," for name in self.plan.params]
        lines.append("}")
        lines.append("# parameter -> the per-equation blocks it stacks along its rows")
        lines.append("BLOCKS = {")
        lines += [f"    {n!r}: {m!r}," for n, m in self.plan.params.items()]
        lines.append("}")
        return "\n".join(lines)

    def functions(self) -> str:
        """The elementwise helpers the printed bodies call, and only those."""
        out = []
        for cls in sorted(self.printer.used, key=lambda c: c.__name__):
            info = BY_CLASS.get(cls)
            if info is not None:
                name, body = info.name, getattr(info, self.target.name)
            else:
                name, np_body, torch_body = DERIVATIVE_HELPERS[cls]
                body = np_body if self.target.name == "numpy" else torch_body
            out.append(f"def {name}(z):\n    return {body}")
        return "\n\n\n".join(out) if out else "# (no elementwise functions)"

    def prepare(self) -> str:
        plan = self.plan
        lines = ["def _prepare(params):",
                 '    """Per-equation parameter blocks (views), the stacked product matrices and the'
                 ' biases folded into the products."""',
                 "    p = {}",
                 "    for name, blocks in BLOCKS.items():",
                 "        p.update(zip(blocks, _split(params[name], len(blocks), axis=0)))"]
        for g in self.deriv.groups:
            members = tuple(m for _, m in g.members)
            whole = next((n for n, b in plan.params.items() if b == members), None)
            if whole is not None:
                lines.append(f"    p[{g.matrix!r}] = params[{whole!r}]  # {', '.join(members)}")
            else:
                lines.append(f"    p[{g.matrix!r}] = _cat([p[n] for n in {members!r}], axis=0)")
            if g.name in plan.bias_names:
                slots = plan.group_bias(g)
                any_bias = next(b for bs in slots for b in bs)
                terms = [" + ".join(f"p[{b!r}]" for b in bs) if bs else f"0 * p[{any_bias!r}]"
                         for bs in slots]
                joined = terms[0] if len(terms) == 1 else f"_cat(({', '.join(terms)}))"
                lines.append(f"    p[{plan.bias_names[g.name]!r}] = {joined}")
        lines.append(f"    step = tuple(p[n] for n in {tuple(plan.step_params)!r})")
        lines.append("    return p, step")
        return "\n".join(lines)

    def forward(self) -> str:
        c, plan = self.cell, self.plan
        hoisted = [g for g in self.deriv.groups if g.hoisted]
        check = ", check=True" if self.target.name == "torch" else ""
        lines = [f"def {self.target.core}forward(x, state0, params, lengths=None, reverse=False{check}):",
                 '    """x: (T, B, I), time-major. state0: {name: (B, H)}; a missing name starts at',
                 "    zeros. params: {name: array}, names and shapes as in PARAMS.",
                 "    lengths: (B,) integers, 0 < lengths[b] <= T, or None (every row runs T steps):",
                 "    row b runs its first lengths[b] steps, then its state is carried unchanged and",
                 "    its outputs are zero. reverse: each row runs from its last valid step back to",
                 "    its first (outputs stay aligned with x).",
                 '    Returns (outputs (T, B, H), state_T {name: (B, H)}, cache)."""',
                 f"    T, B, I, H = _check(x, state0, params{', finite=check' if check else ''})",
                 "    mask, order, full = _lengths(lengths, T, B, x, reverse)",
                 "    if order is not None:  # each row's valid steps in reverse order",
                 "        x = _reorder(x, order)",
                 "    p, step = _prepare(params)",
                 "    # every step's states and saved values, as lists of (B, n) arrays",
                 "    states = {name: [value] for name, value in zip(STATE, _initial(state0, x, B, H))}",
                 f"    values = {{name: [] for name in {tuple(plan.values)!r}}}"]
        for g in hoisted:
            members = ", ".join(m for _, m in g.members)
            x2 = "x.reshape(T * B, I)"
            if g.name in plan.bias_names:
                folded = ", ".join(b for bs in plan.group_bias(g) for b in bs)
                lines.append(f"    # products with the input, all steps at once ({members}),"
                             f" plus the biases {folded}")
                product = f"_addmm(p[{plan.bias_names[g.name]!r}], {x2}, p[{g.matrix!r}])"
            else:
                lines.append(f"    # products with the input, all steps at once ({members})")
                product = f"{x2} @ p[{g.matrix!r}].T"
            lines.append(f"    {g.name} = ({product}).reshape(T, B, -1)")
        args = "".join(f"{call}, " for _, call in self.forward_args)
        outputs = f"states[{c.output!r}][1:]" if c.output in c.state else f"values[{c.output!r}]"
        lines += ["    S, V = list(states.values()), list(values.values())",
                  f"    xs{''.join(f', {g.name}s' for g in hoisted)} = "
                  f"_steps(x){''.join(f', _steps({g.name})' for g in hoisted)}",
                  "    for t in range(T):",
                  f"        new, saved = _forward_step({args}step)",
                  "        if t >= full:  # rows past their length keep their state",
                  "            new = [_where(mask[t], value, seq[t]) for value, seq in zip(new, S)]",
                  "        for seq, value in zip(S, new):",
                  "            seq.append(value)",
                  "        for seq, value in zip(V, saved):",
                  "            seq.append(value)",
                  f"    outputs = _stack({outputs})",
                  "    if mask is not None:  # zero where a row has ended: from step full on",
                  "        outputs[full:] = _where(mask[full:], outputs[full:], 0)",
                  "    if order is not None:",
                  "        outputs = _reorder(outputs, order)",
                  '    cache = {"x": x, "params": p, "step": step, "states": states, '
                  '"values": values,',
                  '             "mask": mask, "order": order, "full": full}',
                  "    return outputs, {name: states[name][T] for name in STATE}, cache"]
        return "\n".join(prune_assignments(lines))

    def backward(self) -> str:
        c, d, plan = self.cell, self.deriv, self.plan
        hoisted = [g for g in d.groups if g.hoisted]
        lines = [f"def {self.target.core}backward(d_outputs, d_state_T, cache):",
                 '    """d_outputs: (T, B, H) or None; d_state_T: {name: (B, H)} or None.',
                 '    Returns (d_x (T, B, I), d_state0 {name: (B, H)}, d_params {name: array})."""',
                 '    x, p, step = cache["x"], cache["params"], cache["step"]',
                 '    states, values = cache["states"], cache["values"]',
                 "    T, B, I = x.shape",
                 f"    H = states[{c.state[0]!r}][0].shape[-1]",
                 "    _check_adjoints(d_outputs, d_state_T, x, H)",
                 "    d_state = _initial(d_state_T, x, B, H)",
                 '    mask, order, full = cache["mask"], cache["order"], cache["full"]',
                 "    if d_outputs is not None and order is not None:",
                 "        d_outputs = _reorder(d_outputs, order)"]
        widths = {g.name: len(g.members) for g in d.groups}
        if d.input_elementwise:
            lines.append("    d_x = _empty((T, B, I), x)")
        o = list(c.state).index(c.output) if c.output in c.state else None
        args = "".join(f"{call}, " for _, call in self.backward_args)
        stacks = [f"d_{s}_all" for s in plan.stacks] + [f"d_{q}_all" for q in plan.own]
        if stacks:
            lines.append("    # per-step adjoints, made into the parameter gradients after the loop")
        lines += ["    S, V = list(states.values()), list(values.values())",
                  *(f"    {n} = [None] * T" for n in stacks),
                  "    xs = _steps(x)",
                  "    d_ys = _steps(d_outputs) if d_outputs is not None else None",
                  "    for t in range(T - 1, -1, -1):",
                  "        held = d_state  # what rows past their length pass through unchanged"]
        if o is not None:
            items = [f"d_state[{k}]" for k in range(len(c.state))]
            items[o] += " + d_ys[t]"
            lines += ["        if d_outputs is not None:",
                      f"            d_state = ({', '.join(items)}{',' if len(items) == 1 else ''})"]
        lines += [f"        d_state, stacked, own, d_x_t = _backward_step({args}step)",
                  "        if t >= full:  # what the step computed for ended rows is dropped",
                  "            d_state = [_where(mask[t], value, h) for value, h in zip(d_state, held)]"]
        lines += [f"        {n}[t] = stacked[{k}]" for k, n in enumerate(stacks[:len(plan.stacks)])]
        lines += [f"        {n}[t] = own[{k}]" for k, n in enumerate(stacks[len(plan.stacks):])]
        if d.input_elementwise:
            lines.append("        d_x[t] = d_x_t")
        lines += [f"    {n} = _stack({n})" for n in stacks]
        masked = [*stacks, *(["d_x"] if d.input_elementwise else [])]
        if masked:  # what the steps past a row's length computed for it is not a gradient
            lines.append("    if mask is not None:")
            lines += [f"        {n}[full:] = _where(mask[full:], {n}[full:], 0)" for n in masked]
        lines += ["    # parameter gradients: one product per operand, after the loop", "    g = {}"]
        operand_stack = {c.input: "x", **{prev(s): f"_stack(states[{s!r}][:-1])"
                                          for s in c.state}}
        node_size = {n.name: n.size for n in d.nodes}
        assigned: set[str] = set()  # a matrix at several products sums their gradients
        for g in d.groups:
            stack = f"d_{plan.stack_of[g.name]}_all"
            operand = operand_stack.get(g.operand, f"_stack(values[{g.operand!r}])")
            n = "I" if g.operand == c.input or node_size.get(g.operand) == "I" else "H"
            product = f"{stack}.reshape(T * B, -1).T @ {operand}.reshape(T * B, {n})"
            matrices = [m for _, m in g.members]
            if not assigned & set(matrices):
                names = ", ".join(f"g[{m!r}]" for m in matrices)
                lines.append(f"    {names} = {product}" if len(matrices) == 1 else
                             f"    {names} = _split({product}, {len(matrices)}, axis=0)")
            elif len(matrices) == 1:
                lines.append(f"    g[{matrices[0]!r}] = g[{matrices[0]!r}] + {product}")
            else:
                lines.append(f"    parts = _split({product}, {len(matrices)}, axis=0)")
                lines += [f"    g[{m!r}] = g[{m!r}] + parts[{k}]" if m in assigned else
                          f"    g[{m!r}] = parts[{k}]" for k, m in enumerate(matrices)]
            assigned |= set(matrices)
        for m in c.matrices:
            if m not in assigned:  # its products cancelled out of the equations
                lines.append(f"    g[{m!r}] = 0 * p[{m!r}]")
        if hoisted:
            terms = [f"d_{plan.stack_of[g.name]}_all.reshape(T * B, -1) @ p[{g.matrix!r}]"
                     for g in hoisted]
            dx = f"({' + '.join(terms)}).reshape(T, B, I)"
            lines.append(f"    d_x = d_x + {dx}" if d.input_elementwise else f"    d_x = {dx}")
        elif not d.input_elementwise:
            lines.append("    d_x = 0 * x")
        summed = set()
        for q in c.vectors:
            if q in d.param_sources:
                gname, k = d.param_sources[q]
                stack = plan.stack_of[gname]
                if stack not in summed:
                    summed.add(stack)
                    lines.append(f"    sum_{stack} = _split(_sum(d_{stack}_all), {widths[stack]})")
                lines.append(f"    g[{q!r}] = sum_{stack}[{k}]")
            elif q in plan.own:
                lines.append(f"    g[{q!r}] = _sum(d_{q}_all)")
            else:
                lines.append(f"    g[{q!r}] = 0 * p[{q!r}]")
        lines += ["    d_params = {name: g[blocks[0]] if len(blocks) == 1 else "
                  "_cat([g[b] for b in blocks], axis=0)",
                  "                for name, blocks in BLOCKS.items()}",
                  "    if order is not None:",
                  "        d_x = _reorder(d_x, order)",
                  "    return d_x, *_distinct(dict(zip(STATE, d_state)), d_params, d_state_T)"]
        return "\n".join(prune_assignments([line for line in lines if line]))



def emit(deriv: Derivation, target: str = "numpy", command: str | None = None) -> str:
    """Source text of the emitted module for a target ("numpy" or "torch")."""
    if command is None:
        command = f"derive-cells {deriv.cell.source} --emit {target}"
    return Emitter(deriv, TARGETS[target], command).module()
