"""What a report says about a cell, gathered once and printed by the HTML and LaTeX builders.

Forward equations (terms in the order the spec writes them), the derived adjoint equations
(numbered, each citing the forward equations it differentiates and the derivative rules it
uses), the parameter gradients, the per-step Jacobian, the emitted code with each line tied to
its equation, the verification results and the gradient decay.

States carry their time index (h_t, c_{t-1}); every other value belongs to step t and carries
none. Internal values of the derivation that the spec does not name (a product's operand such as
r * h_prev) are shown as what they compute, so that no symbol is left undefined.
"""

from __future__ import annotations

import ast
import re
import shlex
from dataclasses import dataclass, field
from html import escape

import sympy

from derive_cells import naming
from derive_cells.derivation import Backprop, Derivation, JacobianTerm
from derive_cells.display import Display, default_display, parse_latex_name
from derive_cells.functions import FUNCTIONS
from derive_cells.reports.notation import (
    RULES,
    Diag,
    MatTVec,
    Partial,
    ReportLatexPrinter,
    ReportMathMLPrinter,
    TotalD,
    spec_order,
)
from derive_cells.spec import prev
from derive_cells.verify.decay.bound import PASCANU, is_bound

BOUND_RTOL = 1e-9  # a rate at its bound (an orthogonal W at zero) may round just above it

# a Jacobian block whose product-operand blocks expand into more terms than this keeps them as
# blocks of their own, written out after the state blocks
MAX_EXPANDED_TERMS = 8


@dataclass
class Equation:
    number: str
    anchor: str
    latex: str
    mathml: str
    note: str = ""  # the whole note as plain text: sources, destination and rules
    more: list[tuple[str, str]] = field(default_factory=list)  # "+ term" continuation rows
    sources: list[int] = field(default_factory=list)  # forward equations this line differentiates
    goes: str = ""  # where the adjoint goes: "passed to step t−1" or "to the input"
    rules: list[tuple[str, str]] = field(default_factory=list)  # derivative rules (LaTeX, MathML)


def source_runs(sources: list[int]) -> list[tuple[int, int]]:
    """Equation numbers as runs to cite: [1, 2, 3, 4, 6] -> [(1, 4), (6, 6)]; a run of two is
    cited as two numbers."""
    runs: list[list[int]] = []
    for k in sorted(sources):
        if runs and k == runs[-1][1] + 1:
            runs[-1][1] = k
        else:
            runs.append([k, k])
    out = []
    for a, b in runs:
        out += [(a, a), (b, b)] if b == a + 1 else [(a, b)]
    return out


def _cite_text(sources: list[int]) -> str:
    return ", ".join(f"({a})" if a == b else f"({a})–({b})" for a, b in source_runs(sources))


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
    # the decay again with the forget gate's bias at 1 (cells with a forget gate 'f')
    decay_forget_bias: dict | None = None
    # pre-activations shown as z_v: (z_v in LaTeX, in MathML, v's equation number)
    preactivations: list[tuple[str, str, int]] = field(default_factory=list)
    # per state with a direct elementwise path: the path's coefficient (LaTeX, MathML)
    direct_paths: dict[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def regenerate(self) -> str:
        """The command that prints the emitted module, as its header gives it: the built-in
        name, or the spec's path."""
        return regenerate_command(self.source, "numpy")

    @property
    def verification_grid(self) -> list[dict]:
        """Checks passed per backend and dtype."""
        cells: dict[tuple[str, str], dict] = {}
        for r in self.verification:
            cell = cells.setdefault((r["backend"], r["dtype"]), {
                "backend": r["backend"], "dtype": r["dtype"], "passed": 0, "checks": 0})
            cell["checks"] += 1
            cell["passed"] += bool(r["passed"])
        return list(cells.values())

    @property
    def verification_families(self) -> list[dict]:
        """One row per family of checks (forward and gradients of one comparison, or its
        variants, together) over both backends and dtypes: checks passed and the worst error
        relative to its tolerance, with where it occurred."""
        families: dict[str, dict] = {}
        for r in self.verification:
            name = check_family(r["check"])
            row = families.setdefault(name, {"family": name, "passed": 0, "checks": 0,
                                             "worst": r})
            row["checks"] += 1
            row["passed"] += bool(r["passed"])
            if r["error"] / r["tolerance"] > row["worst"]["error"] / row["worst"]["tolerance"]:
                row["worst"] = r
        return list(families.values())

    @property
    def decay_rows(self) -> list[dict]:
        """The decay table: one row per setup and state."""
        rows = []
        for setup, d in (("default", self.decay), ("forget bias 1", self.decay_forget_bias)):
            if d is None:
                continue
            for s, rate in d["rate_per_step"].items():
                rows.append({"setup": setup, "state": s, "rate": rate,
                             "predicted": d["predicted_rate_per_step"][s],
                             "kind": d["prediction"][s], "tau": d["time_constant"][s],
                             "half_life": d["half_life"][s]})
        return rows

    @property
    def gate_states(self) -> list[str]:
        """States whose decay is predicted by a gate product."""
        return [s for s, kind in (self.decay or {}).get("prediction", {}).items()
                if kind == "gate product"]

    @property
    def bound_rows(self) -> list[dict]:
        """The decay rows whose theory is a bound on the step Jacobian's norm."""
        return [r for r in self.decay_rows if is_bound(r["kind"])]

    @property
    def bounded(self) -> bool:
        """Whether a state's theory is a bound rather than a gate product."""
        return bool(self.bound_rows)

    @property
    def theoryless(self) -> bool:
        """Whether a measured state has neither a gate product nor a bound beside it."""
        return any(r["kind"] is None and r["rate"] is not None for r in self.decay_rows)

    @property
    def pascanu(self) -> bool:
        """Whether a bound is Pascanu et al.'s gamma * sigma_max(W) itself."""
        return any(r["kind"] == PASCANU for r in self.bound_rows)

    @property
    def below_bound(self) -> bool | None:
        """Whether every measured rate lies below its bound (None: no rate was measured)."""
        pairs = [(r["rate"], r["predicted"]) for r in self.bound_rows if r["rate"] is not None]
        if not pairs:
            return None
        return all(rate <= bound * (1 + BOUND_RTOL) for rate, bound in pairs)

    @property
    def forget_summary(self) -> dict | None:
        """The state with a gate product measured at both initializations: its rates and
        half-lives as text (default, then forget bias 1); None without a forget-bias run."""
        if not self.decay or not self.decay_forget_bias:
            return None
        d0, d1 = self.decay, self.decay_forget_bias
        for s, kind in d1["prediction"].items():
            if kind == "gate product" and d0["rate_per_step"][s] and d1["rate_per_step"][s]:
                def num(value, spec=".3g"):
                    return "\u2013" if value is None else format(value, spec)

                longer = d1["rate_per_step"][s] > d0["rate_per_step"][s]
                ratio = (d1["half_life"][s] / d0["half_life"][s]
                         if d0["half_life"][s] and d1["half_life"][s] else None)
                return {"state": s, "rate": num(d0["rate_per_step"][s]),
                        "half_life": num(d0["half_life"][s]),
                        "biased_rate": num(d1["rate_per_step"][s]),
                        "biased_predicted": num(d1["predicted_rate_per_step"][s]),
                        "biased_half_life": num(d1["half_life"][s]),
                        "longer": "yes" if longer else "", "ratio": num(ratio, ".2g")}
        return None

    @property
    def decay_measurements(self) -> list[dict]:
        """The decay measurements to plot: default initialization, then forget bias 1 (named
        apart, so that its curves have their own labels and ids)."""
        out = [self.decay] if self.decay else []
        if self.decay_forget_bias:
            out.append({**self.decay_forget_bias,
                        "cell": f"{self.decay_forget_bias['cell']}, forget bias 1"})
        return out


def regenerate_command(source: str, target: str) -> str:
    """derive-cells CELL --emit TARGET, CELL the built-in name or the spec's path (quoted as a
    shell word)."""
    return f"derive-cells {shlex.quote(source)} --emit {target}"


def prediction_label(kind: str | None) -> tuple[str, str]:
    """What a decay prediction is, for the table: (HTML, LaTeX); "" when there is none."""
    from derive_cells.reports.tex import tex_escape

    if kind is None:
        return "", ""
    if kind == "gate product":
        return "gate product", "gate product"
    if kind == PASCANU:
        return ("bound <math><mi>γ</mi><mo>⁢</mo><msub><mi>σ</mi><mi>max</mi>"
                "</msub><mo>(</mo><mi>W</mi><mo>)</mo></math>",
                r"bound $\gamma\,\sigma_{\max}(W)$")
    if is_bound(kind):
        formula = kind.removeprefix("bound: ")
        html = re.sub(r"sigma_max\((\w+)\)", r"σ<sub>max</sub>(\1)",
                      escape(formula).replace(" * ", " · "))
        tex = re.sub(r"sigma\\_max\(([^)]*)\)", r"$\\sigma_{\\max}$(\1)",
                     tex_escape(formula).replace(" * ", r" $\cdot$ "))
        return f"bound {html}", f"bound {tex}"
    return escape(kind), tex_escape(kind)


def check_family(check: str) -> str:
    """'vs autograd gradients' -> 'vs autograd'; 'variable lengths, reverse' -> 'variable
    lengths'; 'finite differences, random directions' -> 'finite differences'."""
    return re.sub(r" (forward|gradients)$", "", check).split(", ")[0]


class Notation:
    """Display names of every symbol of a derivation, and the printers over them: canonical
    order for derived expressions, the spec's own order for its equations."""

    def __init__(self, deriv: Derivation):
        cell = deriv.cell
        plain: dict[str, Display] = {}
        for name in cell.written:
            plain[name] = parse_latex_name(cell.latex[name]) if name in cell.latex else \
                default_display(name)
        names = dict(plain)
        for s in cell.state:  # states carry their time index: h_t, h_{t-1}
            d = plain[s]
            names[s] = Display(d.base, d.accent, "t" if d.sub is None else f"{d.sub},t")
            sub = "t\u22121" if d.sub is None else f"{d.sub},t\u22121"
            names[prev(s)] = Display(d.base, d.accent, sub)
        targets = {t: k for k, (t, _, _) in enumerate(cell.equations, start=1)}
        pre_of = {naming.pre_activation(t): t for t in targets}
        self.preactivations: list[tuple[str, int]] = []  # (node, equation)
        for node in deriv.nodes:
            gate = pre_of.get(node.name)
            if gate is not None and node.equation == targets[gate]:  # z with its gate below
                names[node.name] = Display("z", None, plain[gate])
                self.preactivations.append((node.name, targets[gate]))
        # values the spec does not name (a product's operand r * h_prev, the argument of an
        # inner function) are written as what they compute
        self.expand = {sympy.Symbol(n.name): n.expr for n in deriv.nodes
                       if n.kind == "arith" and n.name not in targets and n.name not in names}
        # internal nodes are shown as what they stand for: tanh(c), W_ii x
        special = {n.name: n.expr for n in deriv.nodes
                   if n.kind == "matvec" or (n.kind == "func" and n.name not in targets)}
        special |= {s.name: e for s, e in self.expand.items()}
        # a named tangent of the step Jacobian as the derivative it stands for: D_{h_{t-1}} a
        special |= {t.name: TotalD(sympy.Symbol(t.node), sympy.Symbol(t.leaf))
                    for t in deriv.jacobian_tangents}
        special = {k: self.inline(v) for k, v in special.items()}
        self.latex = ReportLatexPrinter(names, special)
        self.mathml = ReportMathMLPrinter(names, special)
        self.latex_spec = ReportLatexPrinter(names, special, keep_order=True)
        self.mathml_spec = ReportMathMLPrinter(names, special, keep_order=True)

    def inline(self, expr):
        """expr with every unnamed internal value replaced by what it computes."""
        expr = sympy.sympify(expr)
        for _ in range(len(self.expand) + 1):
            done = expr.xreplace(self.expand)
            if done == expr:
                break
            expr = done
        return expr

    def show(self, expr, spec: bool = False) -> tuple[str, str]:
        expr = self.inline(expr)
        if spec:
            return self.latex_spec.doprint(expr), self.mathml_spec.doprint(expr)
        return self.latex.doprint(expr), self.mathml.doprint(expr)

    def equation(self, lhs, rhs, number: str = "", note: str = "", op: str = "=",
                 spec: bool = False) -> Equation:
        (ll, lm), (rl, rm) = self.show(lhs), self.show(rhs, spec)
        mo = "=" if op == "=" else "+="
        latex_op = "=" if op == "=" else r"\mathrel{+}="
        anchor = f"eq-{number}" if number else ""
        return Equation(number, anchor, f"{ll} {latex_op} {rl}", f"{lm}<mo>{mo}</mo>{rm}", note)


_RULE_OF = {f.rule: f.name for f in FUNCTIONS.values()}  # the derivation's rule -> function
# the rules as plain text, for Equation.note (the documents print RULES)
_RULE_TEXT = {"sigmoid": "\u03c3\u2032(z) = \u03c3(1 \u2212 \u03c3)",
              "tanh": "tanh\u2032(z) = 1 \u2212 tanh\u00b2",
              "relu": "relu\u2032(z) = [z > 0]", "exp": "exp\u2032(z) = exp(z)",
              "log": "log\u2032(z) = 1/z",
              "softplus": "softplus\u2032(z) = 1 \u2212 exp(\u2212softplus(z))",
              "sqrt": "(\u221az)\u2032 = 1/(2\u221az)"}


def _sources(deriv: Derivation, expr: sympy.Expr, own: str) -> list[int]:
    """The forward equations a backward line differentiates: those of the nodes whose adjoints
    it reads (each term of an adjoint is d_reader * d reader / d this), and of the matrix
    products whose stacked adjoint it passes back."""
    equation = {n.name: n.equation for n in deriv.nodes}
    found = {equation[s.name[2:]] for s in expr.free_symbols
             if s.name.startswith("d_") and s.name != own and s.name[2:] in equation}
    for b in expr.atoms(Backprop):
        group = next(g for g in deriv.groups if g.name == b.args[0].name)
        found |= {equation[m] for (m, _), adj in
                  zip(group.members, deriv.group_adjoints[group.name], strict=True) if adj != 0}
    return sorted(found)


def cell_content(deriv: Derivation, module_source: str) -> CellContent:
    cell = deriv.cell
    nota = Notation(deriv)
    S = sympy.Symbol
    forward = [nota.equation(S(t), spec_order(text, expr), f"{k}", spec=True)
               for k, (t, expr, text) in enumerate(cell.equations, start=1)]
    n = len(forward)

    backward, inline = [], {}
    targets = {t for t, _, _ in cell.equations}
    internal = {node.name for node in deriv.nodes if node.kind == "func"
                and node.name not in targets}
    pending: dict[str, tuple[list[int], tuple[str, ...]]] = {}  # inlined: sources, rules
    for a in deriv.adjoints:
        sources = set(_sources(deriv, a.expr, a.name))
        rules = list(a.rules)
        for sym in a.expr.free_symbols & set(inline):  # an inlined adjoint's own sources
            more, more_rules = pending[sym.name]
            sources |= set(more)
            rules = list(more_rules) + rules
        expr = a.expr.xreplace(inline)
        expr = expr.replace(lambda e: isinstance(e, Backprop), lambda e: _backprop(deriv, e))
        if a.name[2:] in internal:  # the adjoint of tanh(c) and the like: inlined where used
            inline[S(a.name)] = expr
            pending[a.name] = (sorted(sources), tuple(rules))
            continue
        op, own = "=", S(a.name)
        if expr.is_Add and own in expr.args:  # d_c = d_c + ...: added to what step t+1 sent
            op, expr = "+=", expr - own
        goes = "" if a.equation else (
            "to the input" if a.name == f"d_{cell.input}" else "passed to step t\u22121")
        sources = sorted(sources) or ([a.equation] if a.equation else [])
        shown = [RULES[_RULE_OF[r]] for r in dict.fromkeys(rules) if _RULE_OF.get(r) in RULES]
        words = [f"from {_cite_text(sources)}"] if sources else []
        words += [goes] if goes else []
        words += [_RULE_TEXT[_RULE_OF[r]] for r in dict.fromkeys(rules)
                  if _RULE_OF.get(r) in _RULE_TEXT]
        eq = nota.equation(own, expr, f"{n + len(backward) + 1}", "; ".join(words), op)
        eq.sources, eq.goes, eq.rules = sources, goes, shown
        backward.append(eq)

    gradients = []
    for g in deriv.groups:
        for (_, matrix), adj in zip(g.members, deriv.group_adjoints[g.name], strict=True):
            (ll, lm), (rl, rm), (ol, om) = nota.show(S(f"d_{matrix}")), nota.show(adj), \
                nota.show(S(g.operand))
            if not nota.inline(S(g.operand)).is_Symbol:
                ol, om = rf"\left({ol}\right)", f"<mrow><mo>(</mo>{om}<mo>)</mo></mrow>"
            gradients.append(Equation(
                "", "", rf"{ll} = \sum_t {rl}\, {ol}^{{\top}}",
                f"{lm}<mo>=</mo><munder><mo>\u2211</mo><mi>t</mi></munder><mrow>{rm}</mrow>"
                f"<mo>\u2062</mo><msup><mrow>{om}</mrow><mo>\u22a4</mo></msup>"))
    for p, expr in deriv.param_adjoints.items():
        (ll, lm), (rl, rm) = nota.show(S(f"d_{p}")), nota.show(expr)
        gradients.append(Equation(
            "", "", rf"{ll} = \sum_t {rl}",
            f"{lm}<mo>=</mo><munder><mo>\u2211</mo><mi>t</mi></munder><mrow>{rm}</mrow>"))

    jacobian, kept = [], False
    for (s, sp), terms in deriv.jacobian.items():
        chains = _chains(deriv, terms, sp)
        if chains is not None and len(chains) <= MAX_EXPANDED_TERMS:
            jacobian.append(_jacobian_block(nota, S(s), sp, chains))
        else:
            kept = True
            jacobian.append(_jacobian_block(nota, S(s), sp, _factors(terms, sp)))
    # "where": the blocks of product operands the state blocks read, then the named tangents
    where = [_jacobian_block(nota, S(o), sp, _factors(terms, sp))
             for o, blocks in deriv.jacobian_operands.items() for sp, terms in blocks.items()
             if kept]
    where += [nota.equation(S(t.name), t.expr) for t in deriv.jacobian_tangents]

    direct = {}
    for s in cell.state:
        diagonal = [t.coef for t in deriv.jacobian.get((s, s), []) if t.matrix is None]
        if diagonal:
            direct[s] = nota.show(sympy.Add(*diagonal))
    return CellContent(
        name=cell.name, title=cell.title, source=cell.source, state=cell.state,
        output=cell.output, input=cell.input, params=_params(deriv),
        param_count=_count(deriv), macs=_macs(deriv), forward=forward, backward=backward,
        gradients=gradients, jacobian=jacobian, code=_code(module_source),
        jacobian_where=where,
        preactivations=[(*nota.show(S(z)), k) for z, k in nota.preactivations],
        direct_paths=direct)


def _factors(terms: list[JacobianTerm], sp: str) -> list[sympy.Expr]:
    """diag(coef) M [d operand / d sp_{t-1}] for each term, diagonal terms first."""
    S = sympy.Symbol
    out = []
    for t in sorted(terms, key=lambda t: t.matrix is not None):
        m = S(t.matrix) if t.matrix else sympy.Integer(1)
        out.append(Diag(t.coef, m, Partial(S(t.operand), S(prev(sp)))) if t.operand
                   else Diag(t.coef, m))
    return out


def _chains(deriv: Derivation, terms: list[JacobianTerm], sp: str,
            depth: int = 0) -> list[sympy.Expr] | None:
    """The terms with every product operand's block multiplied out: diag(a) U diag(r) + ...,
    a chain of factors per term, diagonal terms first; None when nested too deeply."""
    if depth > 4:
        return None
    out = []
    for t in sorted(terms, key=lambda t: t.matrix is not None):
        m = sympy.Symbol(t.matrix) if t.matrix else sympy.Integer(1)
        if t.operand is None:
            out.append(Diag(t.coef, m))
            continue
        inner = _chains(deriv, deriv.jacobian_operands.get(t.operand, {}).get(sp, []), sp,
                        depth + 1)
        if inner is None:
            return None
        out += [Diag(t.coef, m, chain) for chain in inner]
    return out


def _jacobian_block(nota: Notation, s: sympy.Symbol, sp: str,
                    parts: list[sympy.Expr]) -> Equation:
    """d s / d sp_{t-1} = sum of the parts, one a row."""
    (ll, lm) = nota.show(Partial(s, sympy.Symbol(prev(sp))))
    shown = [nota.show(q) for q in parts] or [nota.show(sympy.Integer(0))]
    return Equation("", "", f"{ll} = {shown[0][0]}", f"{lm}<mo>=</mo>{shown[0][1]}",
                    more=[(f"+ {l}", f"<mo>+</mo>{m}") for l, m in shown[1:]])


def _backprop(deriv: Derivation, e) -> sympy.Expr:
    group = next(g for g in deriv.groups if g.name == e.args[0].name)
    return sympy.Add(*(MatTVec(sympy.Symbol(m), adj) for (_, m), adj in
                       zip(group.members, deriv.group_adjoints[group.name], strict=True)
                       if adj != 0))


def _params(deriv: Derivation) -> list[tuple[str, str, str]]:
    from derive_cells.emit.plan import make_plan

    plan = make_plan(deriv)
    out = []
    for name, members in plan.params.items():
        dims = [d.replace("*", "") for d in plan.shape(name)]  # ('4*H', 'I') -> (4H, I)
        shape = f"({', '.join(dims)}{',' if len(dims) == 1 else ''})"
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
    """The emitted step functions, each line with the anchor of the equation it implements;
    a power in a comment (tanh'(z) = 1 - t^2) is written with Python's ** like the code."""
    found = {node.name: node for node in ast.parse(source).body
             if isinstance(node, ast.FunctionDef)}
    text = source.splitlines()
    forward, backward = (text[found[n].lineno - 1: found[n].end_lineno]
                         for n in ("_forward_step", "_backward_step"))
    lines, anchor = [], ""
    for line in [*forward, "", "", *backward]:
        code, hash_, comment = line.partition("#")
        if hash_ and "^" in comment:  # a rule comment's power, in the code's own notation
            line = code + hash_ + comment.replace("^", "**")
        m = re.match(r"\s*# \((\d+)\)", line)
        if m:
            anchor = f"eq-{m.group(1)}"
        elif line.startswith("def "):
            anchor = ""
        lines.append((line, anchor))
    return lines
