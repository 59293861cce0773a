"""The per-step sections of an emitted module: forward step, backward step, step Jacobian.

These are the lines a reader checks against the equations: each group of lines sits under a
comment with its numbered equation, and every derivative rule is written beside its line.
"""

from __future__ import annotations

import re

import sympy

from derive_cells.derivation import Backprop, JacobianTerm
from derive_cells.emit.layout import prune_assignments
from derive_cells.functions import FUNCTIONS
from derive_cells.spec import prev


def _used(candidates: list[tuple[str, str]], lines: list[str]) -> list[tuple[str, str]]:
    """The (argument, value passed) pairs whose argument the body's code (not its comments or
    docstring) reads."""
    body = "\n".join(line.split("#")[0] for line in lines if line and '"""' not in line)
    return [(a, call) for a, call in candidates
            if re.search(rf"(?<![.\w]){re.escape(a)}\b", body)]


def _tuple(items) -> str:
    items = list(items)
    return f"({items[0]},)" if len(items) == 1 else f"({', '.join(items)})"


class StepSections:
    """Mixin of Emitter (derive/emit/module.py): needs self.deriv, self.plan, self.cell, self.p."""

    def _equation(self, k: int) -> str:
        target, _, text = self.cell.equations[k - 1]
        return f"({k}) {target} = {text}"

    def _unpack_step_params(self) -> str:
        names = self.plan.step_params
        if not names:
            return ""
        return f"    {', '.join(names)}{',' if len(names) == 1 else ''} = _p"

    def _split_block(self, names: list[str], block: str) -> str:
        if len(names) == 1:
            return f"    {names[0]} = {block}"
        return f"    {', '.join(names)} = _split({block}, {len(names)})"

    def _product(self, g, onto: str | None = None) -> str:
        """The line computing a group's product with its operand (plus folded biases)."""
        bias = self.plan.bias_names.get(g.name)
        if onto is not None:
            return f"_addmm({onto}, {g.operand}, {g.matrix})"
        if bias is not None:
            return f"_addmm({bias}, {g.operand}, {g.matrix})"
        return f"{g.operand} @ {g.matrix}.T"

    def _fused_lines(self) -> list[str]:
        fusion = self.plan.fusion
        eqs = sorted({self.deriv.node(z).equation for z in fusion.pre_nodes})
        span = f"({eqs[0]})-({eqs[-1]})" if len(eqs) > 1 else f"({eqs[0]})"
        k = len(fusion.pre_nodes)
        lines = []
        if k > 1:
            lines.append(f"    # {span} pre-activations [{' | '.join(fusion.pre_nodes)}]: the "
                         f"product with {fusion.h_group.operand} added to the input's")
        else:
            lines.append(f"    # {self._equation(eqs[0])}")
        product = self._product(fusion.h_group, onto=fusion.x_group.name)
        lines.append(f"    {fusion.pre} = {product}")
        if fusion.block is None:
            if k > 1:
                lines.append(self._split_block(fusion.pre_nodes, fusion.pre))
            return lines
        rules = ", ".join(f"{fname}({fusion.pre_nodes[j]})" for fname, a, b in fusion.runs
                          for j in range(a, b))
        lines.append(f"    # {span} {', '.join(fusion.act_nodes)} = {rules}")
        # the function of most gates over the whole block, then the other gates' columns
        width = {}
        for fname, a, b in fusion.runs:
            width[fname] = width.get(fname, 0) + b - a
        main = max(width, key=lambda f: (width[f], -list(width).index(f)))
        self.printer.used |= {FUNCTIONS[f].cls for f in width}
        others = [(fname, j) for fname, a, b in fusion.runs if fname != main for j in range(a, b)]
        if others:  # the gates with another function, by name: their pre-activations' views
            lines.append(self._split_block(fusion.pre_nodes, fusion.pre))
        lines.append(f"    {fusion.block} = {main}({fusion.pre})")
        lines.append(self._split_block(fusion.act_nodes, fusion.block))
        lines += [f"    _assign({fusion.act_nodes[j]}, {fname}({fusion.pre_nodes[j]}))"
                  for fname, j in others]
        return lines

    def forward_step(self) -> str:
        c, d, plan = self.cell, self.deriv, self.plan
        fusion = plan.fusion
        hoisted = [g for g in d.groups if g.hoisted]
        lines = ["    \"\"\"One step given this step's input products; "
                 "returns (new states, saved values).\"\"\"",
                 self._unpack_step_params()]
        fused: set[str] = set()
        if fusion is not None:
            fused = {m for g in (fusion.x_group, fusion.h_group) for m, _ in g.members}
            fused |= set(fusion.pre_nodes) | set(fusion.act_nodes)
        # a hoisted group's per-step slice comes in as an argument; a single product's slice is
        # named for the product itself (no alias line)
        arg_of = {g.name: g.name for g in hoisted}
        for g in hoisted:
            if fusion is not None and g is fusion.x_group:
                continue
            if len(g.members) == 1:
                arg_of[g.name] = g.members[0][0]
            else:
                lines.append(self._split_block([m for m, _ in g.members], g.name))
        group_of = {m: g for g in d.groups for m, _ in g.members}
        # a product that is all of a node (z_y = V @ h + a, a folded in) is named for the node
        exprs = {n.name: plan.rewrite(n.expr) for n in d.nodes if n.name not in fused}
        named_for = {}
        for name, expr in exprs.items():
            g = group_of.get(getattr(expr, "name", None))
            if (isinstance(expr, sympy.Symbol) and g is not None and not g.hoisted
                    and expr.name not in fused
                    and len(g.members) == 1 and expr.name not in plan.values
                    and sum(expr in e.free_symbols for e in exprs.values()) == 1):
                named_for[expr.name] = name
        done, eq = set(), 0
        for node in d.nodes:
            if node.name in fused:
                if "fused" not in done:
                    done.add("fused")
                    lines += self._fused_lines()
                    eqs = {self.deriv.node(z).equation for z in plan.fusion.pre_nodes}
                    eq = eqs.pop() if len(eqs) == 1 and plan.fusion.block is None else -1
                continue
            if node.equation != eq:
                eq = node.equation
                lines.append(f"    # {self._equation(eq)}")
            if node.kind == "matvec":
                g = group_of[node.name]
                if not g.hoisted and g.name not in done:
                    done.add(g.name)
                    folded = [b for bs in plan.group_bias(g) for b in bs]
                    note = f"  # + {', '.join(folded)}, folded in" if folded else ""
                    members = [m for m, _ in g.members]
                    if len(members) == 1:  # one product: named for what it is, no alias
                        name = named_for.get(members[0], members[0])
                        lines.append(f"    {name} = {self._product(g)}{note}")
                    else:
                        lines.append(f"    {g.name} = {self._product(g)}{note}")
                        lines.append(self._split_block(members, g.name))
                continue
            if node.name not in named_for.values():
                lines.append(f"    {node.name} = {self.p(exprs[node.name], node.equation)}")
        lines.append(f"    return {_tuple(c.state)}, {_tuple(plan.values)}")
        lines = prune_assignments([line for line in lines if line])  # dead equations' values
        candidates = [(c.input, "xs[t]"), *((arg_of[g.name], f"{g.name}s[t]") for g in hoisted),
                      *((prev(s), f"S[{k}][t]") for k, s in enumerate(c.state))]
        self.forward_args = _used(candidates, lines)
        head = ", ".join([a for a, _ in self.forward_args] + ["_p"])
        return "\n".join(line for line in [f"def _forward_step({head}):", *lines] if line)

    def _unpack_block_lines(self) -> list[str]:
        """Split a saved activation block back into its named gates."""
        fusion = self.plan.fusion
        if fusion is None or fusion.block is None or fusion.block not in self.plan.values:
            return []
        return [self._split_block(fusion.act_nodes, fusion.block)]

    def backward_candidates(self) -> list[tuple[str, str]]:
        """Every value a backward step could read, with what the loop passes for it."""
        c = self.cell
        args = [(f"d_{s}", f"d_state[{k}]") for k, s in enumerate(c.state)]
        if c.output not in c.state:
            args.append((f"d_{c.output}", "d_ys[t] if d_outputs is not None else 0 * S[0][t]"))
        args += [(v, f"V[{k}][t]") for k, v in enumerate(self.plan.values)]
        return args + [(prev(s), f"S[{k}][t]") for k, s in enumerate(c.state)] + \
            [(c.input, "xs[t]")]

    def backward_step(self) -> str:
        c, d, plan = self.cell, self.deriv, self.plan
        lines = ['    """One step back: adjoints of the previous states, of the stacked products'
                 ' and of the parameters."""',
                 self._unpack_step_params()]
        lines += self._unpack_block_lines()
        emitted, eq = set(), -1
        groups = {g.name: g for g in d.groups}
        adjoint_of = self.printer.adjoint_names  # a group whose adjoint is one name: that name
        adjoint_of.clear()
        later: list[str] = []  # the adjoints still to be assigned

        def emit_group(g):
            if g.name in emitted:
                return
            emitted.add(g.name)
            rep = plan.stack_of[g.name]
            if rep != g.name:
                emit_group(groups[rep])
                if not g.hoisted:  # only a product passed back inside the step needs the name
                    adjoint_of[g.name] = adjoint_of.get(rep, f"d_{rep}")
                return
            adjoints = [plan.rewrite(a) for a in d.group_adjoints[g.name]]
            if (len(adjoints) == 1 and isinstance(adjoints[0], sympy.Symbol)
                    and adjoints[0].name not in later):  # no alias line: the name is final
                adjoint_of[g.name] = adjoints[0].name
                return
            parts = [self.p(a) if a != 0 else f"0 * d_{c.state[0]}" for a in adjoints]
            value = parts[0] if len(parts) == 1 else f"_cat(({', '.join(parts)}))"
            lines.append(f"    d_{g.name} = {value}")

        for k, a in enumerate(d.adjoints):
            later[:] = [b.name for b in d.adjoints[k:]]
            if a.equation != eq:
                eq = a.equation
                if eq:
                    lines.append(f"    # {self._equation(eq)}")
                else:
                    lines.append("    # adjoints of the step's inputs")
                    for g in d.groups:
                        emit_group(g)
            for b in a.expr.atoms(Backprop):
                emit_group(groups[b.args[0].name])
            rule = f"  # {'; '.join(a.rules)}" if a.rules else ""
            lines.append(f"    {a.name} = {self.p(plan.rewrite(a.expr), a.equation)}{rule}")
        if eq != 0:
            later.clear()
            for g in d.groups:
                emit_group(g)
        prevs = [d.prev_adjoints[s] or f"0 * {prev(s)}" for s in c.state]
        stacks = [adjoint_of.get(s, f"d_{s}") for s in plan.stacks]
        owns = [self.p(plan.rewrite(d.param_adjoints[p])) for p in plan.own]
        dx = f"d_{c.input}" if d.input_elementwise else "None"
        lines.append(f"    return {_tuple(prevs)}, {_tuple(stacks)}, {_tuple(owns)}, {dx}")
        self.backward_args = _used(self.backward_candidates(), lines)
        head = ", ".join([a for a, _ in self.backward_args] + ["_p"])
        return "\n".join(line for line in [f"def _backward_step({head}):", *lines] if line)

    def jacobian(self) -> str:
        c, d, plan = self.cell, self.deriv, self.plan
        like = prev(c.state[0])

        def block(terms: list[JacobianTerm], sp: str) -> str:
            if not terms:
                return f"_diag(0, {like})"
            parts = []
            for term in terms:
                coef = self.p(plan.rewrite(term.coef))
                if term.matrix is None:
                    parts.append(f"_diag({coef}, {like})")
                elif term.operand is None:
                    parts.append(f"_rows({coef}, {term.matrix}, {like})")
                else:
                    parts.append(f"_rows({coef}, {term.matrix}, {like}) @ _J_{term.operand}_{sp}")
            if len(parts) == 1:
                return parts[0]
            return "(" + "\n            + ".join(parts) + ")"

        order: list[tuple[str, str]] = []  # operand blocks (operand, s'), innermost first,
        # and only those a returned block reads, directly or through another operand block

        def visit(terms, sp):
            for term in terms:
                if term.operand and (term.operand, sp) not in order:
                    visit(d.jacobian_operands[term.operand].get(sp, []), sp)
                    order.append((term.operand, sp))

        for (_, sp), terms in d.jacobian.items():
            visit(terms, sp)
        order.sort(key=lambda pair: c.state.index(pair[1]))  # each s' together, inner first
        body = [f"    _J_{o}_{sp} = {block(d.jacobian_operands[o].get(sp, []), sp)}"
                for o, sp in order]
        tangents = [f"    {t.name} = {self.p(plan.rewrite(t.expr))}" for t in d.jacobian_tangents]
        if tangents:
            tangents.insert(0, "    # elementwise total derivatives within the step: "
                               "_D_<node>_<leaf> = d node / d leaf")
        body = tangents + body + ["    return {"]
        body += [f"        ({s!r}, {sp!r}): {block(terms, sp)},"
                 for (s, sp), terms in d.jacobian.items()]
        body += ["    }"]
        text = "\n".join(body)
        needed = {like}
        for terms in [*d.jacobian.values(),
                      *(d.jacobian_operands[o].get(sp, []) for o, sp in order)]:
            for term in terms:
                needed |= free_names(plan.rewrite(term.coef)) | {term.matrix} - {None}
        for t in d.jacobian_tangents:
            needed |= free_names(plan.rewrite(t.expr))
        needed -= {t.name for t in d.jacobian_tangents}
        block_names = self._unpack_block_lines()
        fusion = plan.fusion
        if block_names and not needed & set(fusion.act_nodes):
            block_names = []
        missing = needed - set(plan.values) - set(c.params) - {prev(s) for s in c.state}
        missing -= set(fusion.act_nodes) if block_names else set()
        if missing:  # never emit a step_jacobian that reads a value step_forward does not save
            raise RuntimeError(f"{c.name}: step_jacobian reads {sorted(missing)}, which the "
                               "forward step does not save")
        lines = ["def step_jacobian(x_t, state, params):",
                 '    """Per-step Jacobian blocks d s_t / d s\'_{t-1} at one step:',
                 "    {(s, s_prev_name): (B, H, H)}; row k of a block is element k of s_t.\"\"\"",
                 "    _, _cache = step_forward(x_t, state, params)",
                 '    _states, _values = _cache["states"], _cache["values"]']
        if needed & set(c.params):
            lines.append('    _p = _cache["params"]')
        lines += [f"    {v} = _values[{v!r}][0]" for v in plan.values
                  if v in needed or (block_names and v == fusion.block)]
        lines += block_names
        lines += [f"    {prev(s)} = _states[{s!r}][0]" for s in c.state if prev(s) in needed]
        lines += [f"    {n} = _p[{n!r}]" for n in sorted(needed & set(c.params))]
        return "\n".join(lines) + "\n" + text


def free_names(expr) -> set[str]:
    return {s.name for s in sympy.sympify(expr).free_symbols}
