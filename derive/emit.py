"""Emit a standalone module (forward, BPTT backward, per-step Jacobian) from a Derivation.

The module contract is in DESIGN.md: STATE, PARAMS, forward, backward, step_forward,
step_backward (and step_jacobian). Structure for speed: products with the input for all steps in
one matrix product before the loop, one product per step for each other operand, parameter
gradients from the stacked per-step adjoints in one product after the loop.
"""

from __future__ import annotations

import textwrap

import sympy

import derive
from derive.derivation import Backprop, Derivation, JacobianTerm
from derive.functions import BY_CLASS, DERIVATIVE_HELPERS
from derive.printers import CellCodePrinter, helper_names
from derive.spec import prev
from derive.targets import TARGETS, Target


def _docstring_safe(text: str) -> str:
    """One line that cannot end the module docstring or start an escape inside it."""
    text = " ".join(text.split())
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _tuple(items) -> str:
    items = list(items)
    return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"


def _shape(kind: str, k: int) -> tuple[str, ...]:
    rows = "H" if k == 1 else f"{k}*H"
    return {"input": (rows, "I"), "hidden": (rows, "H"), "vector": (rows,)}[kind]


class Emitter:
    """Builds the text of one module; sections are methods, shared by every target."""

    def __init__(self, deriv: Derivation, target: Target, command: str):
        self.d, self.t, self.cell, self.command = deriv, target, deriv.cell, command
        self.printer = CellCodePrinter({g.name: g.matrix for g in deriv.groups})
        self.groups = deriv.groups
        self.hoisted = [g for g in self.groups if g.hoisted]
        # groups whose member adjoints are the same share one stacked adjoint
        self.stack_of: dict[str, str] = {}
        for g in self.groups:
            key = tuple(deriv.group_adjoints[g.name])
            rep = next((h.name for h in self.groups
                        if tuple(deriv.group_adjoints[h.name]) == key), g.name)
            self.stack_of[g.name] = rep
        self.stacks = list(dict.fromkeys(self.stack_of.values()))
        self.own = [p for p in self.cell.vectors if p not in deriv.param_sources
                    and deriv.param_adjoints[p] != 0]
        packed = {m for members in self.cell.pack.values() for m in members}
        self.params: dict[str, tuple[str, ...]] = {}  # name -> blocks, in PARAMS order
        for name, members in self.cell.pack.items():
            self.params[name] = members
        for p in self.cell.params:
            if p not in packed:
                self.params[p] = (p,)
        jac_symbols = set()
        for terms in [*deriv.jacobian.values(),
                      *(t for b in deriv.jacobian_operands.values() for t in b.values())]:
            for term in terms:
                jac_symbols |= {s.name for s in sympy.sympify(term.coef).free_symbols}
        node_names = [n.name for n in deriv.nodes]
        self.values = [n for n in node_names if n in set(deriv.saved) | jac_symbols]
        if self.cell.output not in self.cell.state and self.cell.output not in self.values:
            self.values.append(self.cell.output)
        self.size = {n.name: n.size for n in deriv.nodes}
        used = set()
        for a in deriv.adjoints:
            used |= {s.name for s in a.expr.free_symbols}
        for n in deriv.nodes:
            if n.kind != "matvec":
                used |= {s.name for s in n.expr.free_symbols}
        for e in deriv.param_adjoints.values():
            used |= {s.name for s in e.free_symbols}
        self.step_params = [g.matrix for g in self.groups if not g.hoisted]
        self.step_params += [p for p in self.cell.vectors if p in used]

    def p(self, expr) -> str:
        return self.printer.doprint(expr)

    # ---- module sections -------------------------------------------------------------------

    def module(self) -> str:
        parts = [self.header(), self.constants(), self.functions(), self.t.helpers.strip("\n"),
                 self.check(), self.prepare(), self.forward_step(), self.backward_step(),
                 self.forward(), self.backward(), self.t.api.strip("\n"), self.step_api(),
                 self.jacobian()]
        return "\n\n\n".join(p.rstrip() for p in parts if p) + "\n"

    def header(self) -> str:
        c = self.cell
        eqs = "\n".join(f"    ({k}) {t} = {text}" for k, (t, _, text) in
                        enumerate(c.equations, start=1))
        title = _docstring_safe(c.title)
        return (f'"""{c.name}: {title}.\n\n'
                f"Forward pass and BPTT backward pass in {self.t.title}, emitted by derive-cells "
                f"{derive.__version__}.\nRegenerate with:  {_docstring_safe(self.command)}\n\n"
                f"One step (every name is a vector of the hidden size H; {c.input} has size I; "
                f"'*' is elementwise):\n{eqs}\n\n"
                f"Arrays are time-major: {c.input} (T, B, I), outputs (T, B, H), states (B, H).\n"
                f'"""\n\n{self.t.imports}')

    def constants(self) -> str:
        lines = [f"STATE = {tuple(self.cell.state)!r}", f"OUTPUT = {self.cell.output!r}",
                 "PARAMS = {"]
        for name, members in self.params.items():
            kind = self.cell.matrices.get(members[0], "vector")
            lines.append(f"    {name!r}: {_shape(kind, len(members))!r},")
        lines.append("}")
        lines.append("# parameter -> the per-equation blocks it stacks along its rows")
        lines.append("BLOCKS = {")
        lines += [f"    {n!r}: {m!r}," for n, m in self.params.items()]
        lines.append("}")
        return "\n".join(lines)

    def functions(self) -> str:
        exprs = [n.expr for n in self.d.nodes if n.kind == "func"]
        exprs += [a.expr for a in self.d.adjoints]
        out = []
        for cls in sorted(helper_names(exprs), key=lambda c: c.__name__):
            info = BY_CLASS.get(cls)
            if info is not None and cls in {type(n.expr) for n in self.d.nodes}:
                name, body = info.name, getattr(info, self.t.name)
            else:
                name, np_body, torch_body = DERIVATIVE_HELPERS[cls]
                body = np_body if self.t.name == "numpy" else torch_body
            out.append(f"def {name}(z):\n    return {body}")
        return "\n\n\n".join(dict.fromkeys(out)) if out else "# (no elementwise functions)"

    def check(self) -> str:
        return textwrap.dedent('''\
        def _dims(spec, I, H):
            """('4*H', 'I') -> (4 * H, I)."""
            out = []
            for dim in spec:
                k, _, name = dim.rpartition("*")
                out.append((int(k) if k else 1) * {"H": H, "I": I}[name])
            return tuple(out)


        def _check(x, state0, params):
            """Validate shapes and dtypes; return (T, B, I, H)."""
            if not _is_float_array(x) or x.ndim != 3:
                raise ValueError(f"x: expected a floating-point array of shape (T, B, I), got "
                                 f"{type(x).__name__} {getattr(x, 'shape', '')}")
            T, B, I = x.shape
            unknown = sorted(set(params) - set(PARAMS))
            missing = [n for n in PARAMS if n not in params]
            if unknown or missing:
                raise ValueError(f"params: unknown {unknown}, missing {missing}; "
                                 f"expected {list(PARAMS)}")
            first = next(iter(PARAMS))
            H = params[first].shape[0] // _dims(PARAMS[first], 1, 1)[0]
            for name, spec in PARAMS.items():
                _check_array(f"params[{name!r}]", params[name], _dims(spec, I, H), x)
            unknown = sorted(set(state0 or {}) - set(STATE))
            if unknown:
                raise ValueError(f"state0: unknown state(s) {unknown}; states are {STATE}")
            for name, value in (state0 or {}).items():
                _check_array(f"state0[{name!r}]", value, (B, H), x)
            return T, B, I, H


        def _check_array(what, a, shape, like):
            if not _is_float_array(a):
                raise ValueError(f"{what}: expected a floating-point array of shape {shape}, "
                                 f"got {type(a).__name__}")
            if tuple(a.shape) != tuple(shape):
                raise ValueError(f"{what}: expected shape {tuple(shape)}, got {tuple(a.shape)}")
            if a.dtype != like.dtype:
                raise ValueError(f"{what}: dtype {a.dtype} differs from x's {like.dtype}")


        def _initial(values, like, B, H):
            """Initial states (or final-state adjoints): given arrays, zeros where missing."""
            values = values or {}
            return tuple(values[n] if values.get(n) is not None else _zeros((B, H), like)
                         for n in STATE)''')

    def prepare(self) -> str:
        lines = ["def _prepare(params):",
                 '    """Per-equation parameter blocks (views) and the stacked product matrices."""',
                 "    p = {}",
                 "    for name, blocks in BLOCKS.items():",
                 "        p.update(zip(blocks, _split(params[name], len(blocks), axis=0)))"]
        for g in self.groups:
            members = tuple(m for _, m in g.members)
            whole = next((n for n, b in self.params.items() if b == members), None)
            if whole is not None:
                lines.append(f"    p[{g.matrix!r}] = params[{whole!r}]  # {', '.join(members)}")
            else:
                lines.append(f"    p[{g.matrix!r}] = _cat([p[n] for n in {members!r}], axis=0)")
        lines.append(f"    step = tuple(p[n] for n in {tuple(self.step_params)!r})")
        lines.append("    return p, step")
        return "\n".join(lines)

    def _unpack_step_params(self) -> str:
        if not self.step_params:
            return ""
        names = ", ".join(self.step_params)
        return f"    {names}{',' if len(self.step_params) == 1 else ''} = _p"

    def _split_line(self, group) -> str:
        names = ", ".join(m for m, _ in group.members)
        k = len(group.members)
        if k == 1:
            return f"    {names} = {group.name}"
        return f"    {names} = _split({group.name}, {k})"

    def forward_step(self) -> str:
        c, d = self.cell, self.d
        prevs = [prev(s) for s in c.state]
        args = [c.input] + [g.name for g in self.hoisted] + prevs + ["_p"]
        lines = [f"def _forward_step({', '.join(args)}):",
                 '    """One step given this step\'s input products; returns (states, saved values)."""']
        lines.append(self._unpack_step_params())
        lines += [self._split_line(g) for g in self.hoisted]
        group_of = {m: g for g in self.groups for m, _ in g.members}
        done, eq = set(), 0
        for node in d.nodes:
            if node.equation != eq:
                eq = node.equation
                lines.append(f"    # ({eq}) {c.equations[eq - 1][0]} = {c.equations[eq - 1][2]}")
            if node.kind == "matvec":
                g = group_of[node.name]
                if not g.hoisted and g.name not in done:
                    done.add(g.name)
                    lines.append(f"    {g.name} = {g.operand} @ {g.matrix}.T")
                    lines.append(self._split_line(g))
                continue
            lines.append(f"    {node.name} = {self.p(node.expr)}")
        lines.append(f"    return {_tuple(c.state)}, {_tuple(self.values)}")
        return "\n".join(line for line in lines if line)

    def _backward_args(self) -> list[str]:
        c = self.cell
        args = [f"d_{s}" for s in c.state]
        if c.output not in c.state:
            args.append(f"d_{c.output}")
        return args + self.values + [prev(s) for s in c.state] + [c.input]

    def backward_step(self) -> str:
        c, d = self.cell, self.d
        lines = [f"def _backward_step({', '.join(self._backward_args() + ['_p'])}):",
                 '    """One step back: adjoints of the previous states, of the stacked products'
                 ' and of the parameters."""']
        lines.append(self._unpack_step_params())
        emitted, eq = set(), -1

        def emit_group(g):
            rep = self.stack_of[g.name]
            if g.name in emitted:
                return
            emitted.add(g.name)
            if rep != g.name:
                emit_group(next(h for h in self.groups if h.name == rep))
                if not g.hoisted:  # only a product passed back inside the step needs the name
                    lines.append(f"    d_{g.name} = d_{rep}")
                return
            parts = [self.p(a) if a != 0 else f"_zeros(d_{c.state[0]}.shape, d_{c.state[0]})"
                     for a in d.group_adjoints[g.name]]
            value = parts[0] if len(parts) == 1 else f"_cat(({', '.join(parts)}))"
            lines.append(f"    d_{g.name} = {value}")

        for a in d.adjoints:
            if a.equation != eq:
                eq = a.equation
                if eq:
                    lines.append(f"    # ({eq}) {c.equations[eq - 1][0]} = {c.equations[eq - 1][2]}")
                else:
                    lines.append("    # adjoints of the step's inputs")
                    for g in self.groups:
                        emit_group(g)
            for b in a.expr.atoms(Backprop):
                emit_group(next(g for g in self.groups if g.name == b.args[0].name))
            rule = f"  # {'; '.join(a.rules)}" if a.rules else ""
            lines.append(f"    {a.name} = {self.p(a.expr)}{rule}")
        if eq != 0:
            for g in self.groups:
                emit_group(g)
        prevs = [d.prev_adjoints[s] or f"0 * {prev(s)}" for s in c.state]
        stacks = [f"d_{s}" for s in self.stacks]
        owns = [self.p(d.param_adjoints[p]) for p in self.own]
        dx = f"d_{c.input}" if d.input_elementwise else "None"
        lines.append(f"    return {_tuple(prevs)}, {_tuple(stacks)}, {_tuple(owns)}, {dx}")
        return "\n".join(line for line in lines if line)

    def forward(self) -> str:
        c = self.cell
        out_state = c.output in c.state
        lines = [f"def {self.t.core}forward(x, state0, params):",
                 '    """x: (T, B, I). state0: {name: (B, H)}; a missing name starts at zeros.',
                 "    params: {name: array}, names and shapes as in PARAMS.",
                 '    Returns (outputs (T, B, H), state_T {name: (B, H)}, cache)."""',
                 "    T, B, I, H = _check(x, state0, params)",
                 "    p, step = _prepare(params)",
                 "    states = {name: _empty((T + 1, B, H), x) for name in STATE}",
                 "    for name, value in zip(STATE, _initial(state0, x, B, H)):",
                 "        states[name][0] = value",
                 "    sizes = {" + ", ".join(f"{v!r}: {self.size[v]}" for v in self.values) + "}",
                 "    values = {name: _empty((T, B, n), x) for name, n in sizes.items()}"]
        for g in self.hoisted:
            lines.append(f"    # products with the input, all steps in one: {', '.join(m for _, m in g.members)}")
            lines.append(f"    {g.name} = (x.reshape(T * B, I) @ p[{g.matrix!r}].T).reshape(T, B, -1)")
        hoisted = "".join(f", {g.name}[t]" for g in self.hoisted)
        prev_args = ", ".join(f"states[{s!r}][t]" for s in c.state)
        lines += ["    for t in range(T):",
                  f"        new, saved = _forward_step(x[t]{hoisted}, {prev_args}, step)",
                  "        for name, value in zip(STATE, new):",
                  "            states[name][t + 1] = value",
                  "        for name, value in zip(values, saved):",
                  "            values[name][t] = value"]
        outputs = f"states[{c.output!r}][1:]" if out_state else f"values[{c.output!r}]"
        lines += ["    cache = {\"x\": x, \"params\": p, \"step\": step, \"states\": states, "
                  "\"values\": values}",
                  f"    return {outputs}, {{name: states[name][T] for name in STATE}}, cache"]
        return "\n".join(lines)

    def backward(self) -> str:
        c, d = self.cell, self.d
        lines = [f"def {self.t.core}backward(d_outputs, d_state_T, cache):",
                 '    """d_outputs: (T, B, H) or None; d_state_T: {name: (B, H)} or None.',
                 '    Returns (d_x (T, B, I), d_state0 {name: (B, H)}, d_params {name: array})."""',
                 '    x, step = cache["x"], cache["step"]',
                 '    p = cache["params"]' if self.hoisted or any(
                     q not in d.param_sources and q not in self.own for q in c.vectors) else "",
                 '    states, values = cache["states"], cache["values"]',
                 "    T, B, I = x.shape",
                 f"    H = states[{c.state[0]!r}].shape[-1]",
                 "    if d_state_T:",
                 "        unknown = sorted(set(d_state_T) - set(STATE))",
                 "        if unknown:",
                 "            raise ValueError(f\"d_state_T: unknown state(s) {unknown}; states are {STATE}\")",
                 "        for name, value in d_state_T.items():",
                 "            if value is not None:",
                 "                _check_array(f\"d_state_T[{name!r}]\", value, (B, H), x)",
                 "    if d_outputs is not None:",
                 "        _check_array(\"d_outputs\", d_outputs, (T, B, H), x)",
                 "    d_state = _initial(d_state_T, x, B, H)"]
        widths = {g.name: len(g.members) for g in self.groups}
        for s in self.stacks:
            lines.append(f"    d_{s}_all = _empty((T, B, {widths[s]} * H), x)")
        for p_ in self.own:
            lines.append(f"    d_{p_}_all = _empty((T, B, H), x)")
        if d.input_elementwise:
            lines.append("    d_x = _empty((T, B, I), x)")
        o = list(c.state).index(c.output) if c.output in c.state else None
        out_arg = "" if o is not None else ", d_outputs[t] if d_outputs is not None else 0 * x[t, :, :1]"
        lines += ["    for t in range(T - 1, -1, -1):"]
        if o is not None:
            lines += ["        if d_outputs is not None:",
                      f"            d_state = d_state[:{o}] + (d_state[{o}] + d_outputs[t],) + d_state[{o + 1}:]"]
        saved = ", ".join(f"values[{v!r}][t]" for v in self.values)
        prevs = ", ".join(f"states[{s!r}][t]" for s in c.state)
        call = f"_backward_step(*d_state{out_arg}, {saved + ', ' if saved else ''}{prevs}, x[t], step)"
        lines += [f"        d_state, stacked, own, d_x_t = {call}"]
        for k, s in enumerate(self.stacks):
            lines.append(f"        d_{s}_all[t] = stacked[{k}]")
        for k, p_ in enumerate(self.own):
            lines.append(f"        d_{p_}_all[t] = own[{k}]")
        if d.input_elementwise:
            lines.append("        d_x[t] = d_x_t")
        lines.append("    # parameter gradients: one product per operand, after the loop")
        lines.append("    g = {}")
        operand_stack = {c.input: "x"}
        for s in c.state:
            operand_stack[prev(s)] = f"states[{s!r}][:-1]"
        for g in self.groups:
            stack = f"d_{self.stack_of[g.name]}_all"
            operand = operand_stack.get(g.operand, f"values[{g.operand!r}]")
            names = ", ".join(f"g[{m!r}]" for _, m in g.members)
            n = "I" if g.operand == c.input or self.size.get(g.operand) == "I" else "H"
            product = (f"{stack}.reshape(T * B, -1).T @ {operand}.reshape(T * B, {n})")
            if len(g.members) == 1:
                lines.append(f"    {names} = {product}")
            else:
                lines.append(f"    {names} = _split({product}, {len(g.members)}, axis=0)")
        if self.hoisted:
            terms = [f"d_{self.stack_of[g.name]}_all.reshape(T * B, -1) @ p[{g.matrix!r}]"
                     for g in self.hoisted]
            dx = f"({' + '.join(terms)}).reshape(T, B, I)"
            lines.append(f"    d_x = d_x + {dx}" if d.input_elementwise else f"    d_x = {dx}")
        elif not d.input_elementwise:
            lines.append("    d_x = 0 * x")
        sums = {}
        for p_ in c.vectors:
            if p_ in d.param_sources:
                gname, k = d.param_sources[p_]
                stack = self.stack_of[gname]
                if stack not in sums:
                    sums[stack] = f"sum_{stack}"
                    lines.append(f"    sum_{stack} = _split(_sum(d_{stack}_all), {widths[stack]})")
                lines.append(f"    g[{p_!r}] = sum_{stack}[{k}]")
            elif p_ in self.own:
                lines.append(f"    g[{p_!r}] = _sum(d_{p_}_all)")
            else:
                lines.append(f"    g[{p_!r}] = 0 * p[{p_!r}]")
        lines += ["    d_params = {name: g[blocks[0]] if len(blocks) == 1 else "
                  "_cat([g[b] for b in blocks], axis=0)",
                  "                for name, blocks in BLOCKS.items()}",
                  "    return d_x, dict(zip(STATE, d_state)), d_params"]
        return "\n".join(line for line in lines if line)

    def step_api(self) -> str:
        return textwrap.dedent('''\
        def step_forward(x_t, state, params):
            """One step. x_t: (B, I); state: {name: (B, H)}. Returns (state_new, saved)."""
            if not _is_float_array(x_t) or x_t.ndim != 2:
                raise ValueError(f"x_t: expected a floating-point array of shape (B, I), got "
                                 f"{type(x_t).__name__} {getattr(x_t, 'shape', '')}")
            _, state_new, saved = forward(x_t[None], state, params)
            return state_new, saved


        def step_backward(d_state_new, saved, params):
            """d_state_new: {name: (B, H)}, the adjoints of step_forward's new state.
            Returns (d_x_t (B, I), d_state {name: (B, H)}, d_params {name: array})."""
            d_x, d_state, d_params = backward(None, d_state_new, saved)
            return d_x[0], d_state, d_params''')

    def jacobian(self) -> str:
        c, d = self.cell, self.d
        like = prev(c.state[0])

        def block(terms: list[JacobianTerm], sp: str) -> str:
            if not terms:
                return f"_diag(0, {like})"
            parts = []
            for term in terms:
                coef = self.p(term.coef)
                if term.matrix is None:
                    parts.append(f"_diag({coef}, {like})")
                elif term.operand is None:
                    parts.append(f"_rows({coef}, {term.matrix}, {like})")
                else:
                    parts.append(f"_rows({coef}, {term.matrix}, {like}) @ _J_{term.operand}_{sp}")
            if len(parts) == 1:
                return parts[0]
            return "(" + "\n            + ".join(parts) + ")"

        # operand blocks, innermost first, only those a state's block refers to
        needed_ops, order = set(), []

        def visit(terms):
            for term in terms:
                if term.operand and term.operand not in needed_ops:
                    needed_ops.add(term.operand)
                    for sub in d.jacobian_operands[term.operand].values():
                        visit(sub)
                    order.append(term.operand)

        for terms in d.jacobian.values():
            visit(terms)
        used_terms = [*d.jacobian.values(),
                      *(t for o in order for t in d.jacobian_operands[o].values())]
        body = [f"    _J_{o}_{sp} = {block(d.jacobian_operands[o].get(sp, []), sp)}"
                for o in order for sp in c.state]
        body = [line for line in body
                if line.split(" = ")[0].strip() in "\n".join(body[body.index(line) + 1:])
                + "".join(block(t, sp) for (_, sp), t in d.jacobian.items())]
        body += ["    return {"]
        body += [f"        ({s!r}, {sp!r}): {block(terms, sp)},"
                 for (s, sp), terms in d.jacobian.items()]
        body += ["    }"]
        text = "\n".join(body)
        needed = {like}
        for terms in used_terms:
            for term in terms:
                needed |= {s.name for s in sympy.sympify(term.coef).free_symbols}
                if term.matrix:
                    needed.add(term.matrix)
        lines = ["def step_jacobian(x_t, state, params):",
                 '    """Per-step Jacobian blocks d s_t / d s\'_{t-1} at one step:',
                 "    {(s, s_prev_name): (B, H, H)}; row k of a block is element k of s_t.\"\"\"",
                 "    _, _cache = step_forward(x_t, state, params)",
                 '    _states, _values = _cache["states"], _cache["values"]']
        if needed & set(c.params):
            lines.append('    _p = _cache["params"]')
        lines += [f"    {v} = _values[{v!r}][0]" for v in self.values if v in needed]
        lines += [f"    {prev(s)} = _states[{s!r}][0]" for s in c.state if prev(s) in needed]
        lines += [f"    {n} = _p[{n!r}]" for n in sorted(needed & set(c.params))]
        return "\n".join(lines) + "\n" + text


def emit(deriv: Derivation, target: str = "numpy", command: str | None = None) -> str:
    """Source text of the emitted module for a target ("numpy" or "torch")."""
    if command is None:
        command = f"derive-cells {deriv.cell.source} --emit {target}"
    return Emitter(deriv, TARGETS[target], command).module()
