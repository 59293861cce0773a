"""What a report says about a cell, gathered once and printed by the HTML and LaTeX builders.

Forward equations, the derived adjoint equations (numbered, with their derivative rules), the
parameter gradients, the per-step Jacobian, the emitted code with each line tied to its
equation, the verification results and the gradient decay.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import sympy
from derive_cells.derivation import Backprop, Derivation, JacobianTerm
from derive_cells.display import Display, default_display, parse_latex_name
from derive_cells.reports.notation import (
    Diag,
    MatTVec,
    Partial,
    ReportLatexPrinter,
    ReportMathMLPrinter,
    TotalD,
)
from derive_cells.spec import prev


@dataclass
class Equation:
    number: str
    anchor: str
    latex: str
    mathml: str
    note: str = ""
    more: list[tuple[str, str]] = field(default_factory=list)  # "+ term" continuation rows


@dataclass
class CellContent:
    name: str
    title: str
    source: str
    state: tuple[str, ...]
    output: str
    input: str
    params: list[tuple[str, str, str]]  # name, shape, blocks
    param_count: str
    macs: str
    forward: list[Equation]
    backward: list[Equation]
    gradients: list[Equation]
    jacobian: list[Equation]
    code: list[tuple[str, str]]  # (line, anchor of the equation it implements or "")
    verification: list[dict] = field(default_factory=list)
    decay: dict | None = None
    # what the Jacobian blocks read: operand blocks, then named tangents (D_b a = da/db)
    jacobian_where: list[Equation] = field(default_factory=list)


class Notation:
    """Display names of every symbol of a derivation, and the two printers over them."""

    def __init__(self, deriv: Derivation):
        cell = deriv.cell
        names: dict[str, Display] = {}
        for name in [cell.input, *cell.state, *cell.order, *(t for t, _, _ in cell.equations)]:
            names[name] = parse_latex_name(cell.latex[name]) if name in cell.latex else \
                default_display(name)
        for s in cell.state:
            d = names[s]
            sub = "t\u22121" if d.sub is None else f"{d.sub},t\u22121"
            names[prev(s)] = Display(d.base, d.accent, sub)
        targets = {t for t, _, _ in cell.equations}
        for node in deriv.nodes:
            if node.name.startswith("z_") and node.name[2:] in targets:
                names[node.name] = Display("z", None, names[node.name[2:]])
        # internal nodes are shown as what they stand for: tanh(c), W_ii x
        special = {n.name: n.expr for n in deriv.nodes
                   if n.kind == "matvec" or (n.kind == "func" and n.name not in targets)}
        # a named tangent of the step Jacobian as the derivative it stands for: D_{h_{t-1}} a
        special |= {t.name: TotalD(sympy.Symbol(t.node), sympy.Symbol(t.leaf))
                    for t in deriv.jacobian_tangents}
        self.latex = ReportLatexPrinter(names, special)
        self.mathml = ReportMathMLPrinter(names, special)

    def show(self, expr) -> tuple[str, str]:
        expr = sympy.sympify(expr)
        return self.latex.doprint(expr), self.mathml.doprint(expr)

    def equation(self, lhs, rhs, number: str = "", note: str = "", op: str = "=") -> Equation:
        (ll, lm), (rl, rm) = self.show(lhs), self.show(rhs)
        mo = "=" if op == "=" else "+="
        latex_op = "=" if op == "=" else r"\mathrel{+}="
        anchor = f"eq-{number}" if number else ""
        return Equation(number, anchor, f"{ll} {latex_op} {rl}", f"{lm}<mo>{mo}</mo>{rm}", note)


def cell_content(deriv: Derivation, module_source: str) -> CellContent:
    cell = deriv.cell
    nota = Notation(deriv)
    S = sympy.Symbol
    forward = [nota.equation(S(t), expr, f"{k}")
               for k, (t, expr, _text) in enumerate(cell.equations, start=1)]
    n = len(forward)

    backward, inline = [], {}
    targets = {t for t, _, _ in cell.equations}
    internal = {node.name for node in deriv.nodes if node.kind == "func"
                and node.name not in targets}
    for a in deriv.adjoints:
        expr = a.expr.xreplace(inline)
        expr = expr.replace(lambda e: isinstance(e, Backprop), lambda e: _backprop(deriv, e))
        if a.name[2:] in internal:  # the adjoint of tanh(c) and the like: inlined where used
            inline[S(a.name)] = expr
            continue
        op, own = "=", S(a.name)
        if expr.is_Add and own in expr.args:  # d_c = d_c + ...: added to what step t+1 sent
            op, expr = "+=", expr - own
        if a.equation:
            source = f"from ({a.equation})"
        else:
            source = "to the input" if a.name == f"d_{cell.input}" else "passed to step t\u22121"
        note = "; ".join([source, *a.rules])
        backward.append(nota.equation(own, expr, f"{n + len(backward) + 1}", note, op))

    gradients = []
    for g in deriv.groups:
        for (_, matrix), adj in zip(g.members, deriv.group_adjoints[g.name], strict=True):
            (ll, lm), (rl, rm), (ol, om) = nota.show(S(f"d_{matrix}")), nota.show(adj), \
                nota.show(S(g.operand))
            gradients.append(Equation(
                "", "", rf"{ll} = \sum_t {rl}\, {ol}^{{\top}}",
                f"{lm}<mo>=</mo><munder><mo>\u2211</mo><mi>t</mi></munder><mrow>{rm}</mrow>"
                f"<mo>\u2062</mo><msup><mrow>{om}</mrow><mo>\u22a4</mo></msup>"))
    for p, expr in deriv.param_adjoints.items():
        (ll, lm), (rl, rm) = nota.show(S(f"d_{p}")), nota.show(expr)
        gradients.append(Equation(
            "", "", rf"{ll} = \sum_t {rl}",
            f"{lm}<mo>=</mo><munder><mo>\u2211</mo><mi>t</mi></munder><mrow>{rm}</mrow>"))

    jacobian = [_jacobian_block(nota, S(s), sp, terms)
                for (s, sp), terms in deriv.jacobian.items()]
    # "where": the blocks of product operands the state blocks read, then the named tangents
    where = [_jacobian_block(nota, S(o), sp, terms)
             for o, blocks in deriv.jacobian_operands.items() for sp, terms in blocks.items()]
    where += [nota.equation(S(t.name), t.expr) for t in deriv.jacobian_tangents]

    return CellContent(
        name=cell.name, title=cell.title, source=cell.source, state=cell.state,
        output=cell.output, input=cell.input, params=_params(deriv),
        param_count=_count(deriv), macs=_macs(deriv), forward=forward, backward=backward,
        gradients=gradients, jacobian=jacobian, code=_code(module_source),
        jacobian_where=where)


def _jacobian_block(nota: Notation, s: sympy.Symbol, sp: str,
                    terms: list[JacobianTerm]) -> Equation:
    """d s / d sp_{t-1} = sum of diag(coef) M [d operand / d sp_{t-1}], one term a row."""
    S = sympy.Symbol
    p = S(prev(sp))
    parts = []
    for t in terms:
        m = S(t.matrix) if t.matrix else sympy.Integer(1)
        parts.append(Diag(t.coef, m, Partial(S(t.operand), p)) if t.operand else Diag(t.coef, m))
    (ll, lm) = nota.show(Partial(s, p))
    shown = [nota.show(q) for q in parts] or [nota.show(sympy.Integer(0))]
    return Equation("", "", f"{ll} = {shown[0][0]}", f"{lm}<mo>=</mo>{shown[0][1]}",
                    more=[(f"+ {l}", f"<mo>+</mo>{m}") for l, m in shown[1:]])


def _backprop(deriv: Derivation, e) -> sympy.Expr:
    group = next(g for g in deriv.groups if g.name == e.args[0].name)
    return sympy.Add(*(MatTVec(sympy.Symbol(m), adj) for (_, m), adj in
                       zip(group.members, deriv.group_adjoints[group.name], strict=True)
                       if adj != 0))


def _params(deriv: Derivation) -> list[tuple[str, str, str]]:
    from derive_cells.plan import make_plan

    cell = deriv.cell
    out = []
    for name, members in make_plan(deriv).params.items():
        kind = cell.matrices.get(members[0], "vector")
        rows = f"{len(members)}H" if len(members) > 1 else "H"
        shape = {"input": f"({rows}, I)", "hidden": f"({rows}, H)", "vector": f"({rows},)"}[kind]
        out.append((name, shape, ", ".join(members)))
    return out


def _count(deriv: Derivation) -> str:
    H, I = sympy.symbols("H I", positive=True)
    cell = deriv.cell
    total = sum((H * (I if cell.matrices.get(p) == "input" else H)) if p in cell.matrices
                else H for p in cell.params)
    return str(sympy.factor(total)).replace("*", "")


def _macs(deriv: Derivation) -> str:
    """Multiply-adds of the matrix products of one step, per batch element."""
    H, I = sympy.symbols("H I", positive=True)
    cell = deriv.cell
    total = sum(H * (I if cell.matrices[n.expr.args[0].name] == "input" else H)
                for n in deriv.nodes if n.kind == "matvec")
    return str(sympy.factor(total)).replace("*", "")


def _code(source: str) -> list[tuple[str, str]]:
    """The emitted step functions, each line with the anchor of the equation it implements."""
    start = source.index("def _forward_step")
    end = source.index("\ndef ", source.index("def _backward_step") + 1)
    lines, anchor = [], ""
    for line in source[start:end].rstrip().splitlines():
        m = re.match(r"\s*# \((\d+)\)", line)
        if m:
            anchor = f"eq-{m.group(1)}"
        elif line.startswith("def "):
            anchor = ""
        lines.append((line, anchor))
    return lines
