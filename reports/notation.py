"""LaTeX and MathML printers for reports, over the display names of derive/display.py.

MathML is SymPy's presentation printer restricted to MathML Core (no mfenced, no mathvariant),
with the LaTeX kept as an annotation beside it. An adjoint ``d_X`` prints as delta X; internal
nodes print as what they stand for (``tanh_c`` as tanh(c), ``W_ii_x`` as W_ii x).

A spec's equation text can be read into an unevaluated expression (``spec_order``) that the
printers, made with ``keep_order=True``, print with its terms and factors in the order the spec
writes them.
"""

from __future__ import annotations

import ast
import re
from html import escape
from xml.dom.minidom import parseString

import sympy
from sympy.printing.latex import LatexPrinter
from sympy.printing.mathml import MathMLPresentationPrinter
from sympy.printing.precedence import PRECEDENCE

from derive_cells.display import Display, default_display
from derive_cells.functions import BY_CLASS, FUNCTIONS, Expm1, Positive, Sqrt
from derive_cells.spec import MatVec

FUNCTION_SIGNS = {"sigmoid": "\u03c3", "tanh": "tanh", "relu": "relu", "exp": "exp",
                  "log": "log", "softplus": "softplus"}


def _mrow(*parts: str) -> str:
    return f"<mrow>{''.join(parts)}</mrow>"


_Z = "<mrow><mo>(</mo><mi>z</mi><mo>)</mo></mrow>"

# each function's derivative rule, written with its own output as the rules in functions.py
# are (the emitted code's comments): (LaTeX, MathML)
RULES: dict[str, tuple[str, str]] = {
    "sigmoid": (r"\sigma'(z) = \sigma(1-\sigma)",
                _mrow("<mi>\u03c3\u2032</mi>", _Z, "<mo>=</mo><mi>\u03c3</mi>",
                      "<mrow><mo>(</mo><mn>1</mn><mo>\u2212</mo><mi>\u03c3</mi><mo>)</mo></mrow>")),
    "tanh": (r"\tanh'(z) = 1-\tanh^2",
             _mrow("<mi>tanh\u2032</mi>", _Z,
                   "<mo>=</mo><mn>1</mn><mo>\u2212</mo><msup><mi>tanh</mi><mn>2</mn></msup>")),
    "relu": (r"\operatorname{relu}'(z) = [z > 0]",
             _mrow("<mi>relu\u2032</mi>", _Z,
                   "<mo>=</mo><mrow><mo>[</mo><mi>z</mi><mo>&gt;</mo><mn>0</mn><mo>]</mo></mrow>")),
    "exp": (r"\exp'(z) = \exp(z)",
            _mrow("<mi>exp\u2032</mi>", _Z, "<mo>=</mo><mi>exp</mi>", _Z)),
    "log": (r"\log'(z) = 1/z",
            _mrow("<mi>log\u2032</mi>", _Z,
                  "<mo>=</mo><mn>1</mn><mo>/</mo><mi>z</mi>")),
    "softplus": (r"\operatorname{softplus}'(z) = 1-e^{-\operatorname{softplus}(z)}",
                 _mrow("<mi>softplus\u2032</mi>", _Z,
                       "<mo>=</mo><mn>1</mn><mo>\u2212</mo><msup><mi>e</mi><mrow><mo>\u2212</mo>"
                       "<mi>softplus</mi>", _Z, "</mrow></msup>")),
    "sqrt": (r"\left(\sqrt{z}\right)' = \frac{1}{2\sqrt{z}}",
             _mrow("<mrow><mo>(</mo><msqrt><mi>z</mi></msqrt><mo>)</mo></mrow><mo>\u2032</mo>",
                   "<mo>=</mo><mfrac><mn>1</mn><mrow><mn>2</mn><msqrt><mi>z</mi></msqrt>"
                   "</mrow></mfrac>")),
}


class MatTVec(sympy.Function):
    """``M^T d``: a product's adjoint passed back to its operand."""

    nargs = 2

    def _latex(self, printer):
        m, v = self.args
        inner = printer._print(v)
        return rf"{printer._print(m)}^{{\top}} " + (rf"\left({inner}\right)" if v.is_Add else inner)


class Diag(sympy.Function):
    """``diag(v) M [J]``: the rows of M scaled by v, times J when given: an operand's Jacobian
    block, or the next factor of a chain (a term of the step Jacobian). ``diag(1)`` is left
    out, and a lone ``diag(1)`` prints as the identity I."""

    nargs = (2, 3)

    def _latex(self, printer):
        v, m, *j = self.args
        parts = [] if v == 1 else [rf"\operatorname{{diag}}\left({printer._print(v)}\right)"]
        parts += [] if m == 1 else [printer._print(m)]
        parts += [printer._print(b) for b in j]
        return r"\, ".join(parts) or "I"


class Partial(sympy.Function):
    """``d a / d b``: a Jacobian block (of a product's operand by a previous state)."""

    nargs = 2

    def _latex(self, printer):
        a, b = self.args
        top = printer._print(a)
        if not a.is_Symbol:
            top = rf"\left({top}\right)"
        return rf"\frac{{\partial {top}}}{{\partial {printer._print(b)}}}"


class TotalD(sympy.Function):
    """``D_leaf node``: a named tangent of the step Jacobian, the elementwise derivative of node
    by leaf (a previous state or a matrix product) within one step."""

    nargs = 2

    def _latex(self, printer):
        node, leaf = self.args
        shown = printer._print(node)
        if not node.is_Symbol:
            shown = rf"\left({shown}\right)"
        return rf"D_{{{printer._print(leaf)}}} {shown}"


class _Names:
    def __init__(self, names: dict[str, Display], special: dict[str, sympy.Expr]):
        self.names, self.special = names, special

    def display(self, name: str) -> Display:
        return self.names.get(name) or default_display(name)

    def resolve(self, expr):
        """What a symbol stands for, when it stands for something (tanh_c: tanh(c))."""
        while expr.is_Symbol and expr.name in self.special:
            expr = self.special[expr.name]
        return expr


# functions written by name, whose powers print as tanh^2(c) rather than tanh(c)^2
_NAMED = {cls for cls in BY_CLASS if cls is not Sqrt}


def _negated(term) -> sympy.Expr | None:
    """The term without its leading -1, for a product written as ``-1 * a * b``."""
    if term.is_Mul and term.args[0] == -1 and len(term.args) > 1:
        rest = term.args[1:]
        return rest[0] if len(rest) == 1 else sympy.Mul(*rest, evaluate=False)
    if term.is_Number and term < 0:
        return -term
    return None


def _terms(printer, expr, order) -> list[tuple[bool, sympy.Expr]]:
    """The terms of a sum to print, each as (subtracted, what is added or subtracted): in the
    order they were built (keep_order), or SymPy's order with a positive term first
    (h - n rather than -n + h)."""
    if printer.keep_order:
        out = []
        for term in expr.args:
            negated = _negated(term)
            out.append((True, negated) if negated is not None else (False, term))
        return out
    out = [(True, -t) if t.could_extract_minus_sign() else (False, t)
           for t in printer._as_ordered_terms(expr, order=order)]
    first = next((k for k, (minus, _) in enumerate(out) if not minus), 0)
    return [out[first], *out[:first], *out[first + 1:]]


class ReportLatexPrinter(LatexPrinter):
    """SymPy's LaTeX printer with our display names and elementwise products as odot.

    keep_order: print sums and products with their arguments in the order they were built
    (an unevaluated expression from ``spec_order``), instead of SymPy's canonical order."""

    def __init__(self, names: dict[str, Display], special: dict[str, sympy.Expr],
                 keep_order: bool = False):
        super().__init__({"mul_symbol": r" \odot ", "order": "none" if keep_order else None})
        self.n = _Names(names, special)
        self.keep_order = keep_order

    def doprint(self, expr) -> str:
        # a number times a vector is plain scaling, not an elementwise product
        return re.sub(r"(?<![\w.])(\d+(?:\.\d+)?) \\odot ", r"\1 ", super().doprint(expr))

    def _print_Symbol(self, expr, style="plain"):
        name = expr.name
        if name.startswith("d_"):
            rest = name[2:]
            if rest in self.n.special:
                return rf"\delta\left({self._print(self.n.special[rest])}\right)"
            return rf"\delta {self.n.display(rest).latex()}"
        if name in self.n.special:
            return self._print(self.n.special[name])
        return self.n.display(name).latex()

    def _print_Pow(self, expr):
        base, exp = self.n.resolve(expr.base), expr.exp
        if type(base) in _NAMED and exp.is_Integer and exp > 0:
            return (rf"{base.latex_name}^{{{self._print(exp)}}}"
                    rf"\left({self._print(base.args[0])}\right)")
        root = exp.is_Rational and abs(exp.p) == 1 and exp.q != 1
        if expr.base.is_Function and not root and not exp.is_negative:
            # SymPy would hand the exponent to the function's own printer, which takes none
            return rf"\left({self._print(expr.base)}\right)^{{{self._print(exp)}}}"
        return super()._print_Pow(expr)

    def _print_Add(self, expr, order=None):
        tex = ""
        for i, (minus, term) in enumerate(_terms(self, expr, order)):
            if minus:
                tex += " - " if i else "- "
            elif i:
                tex += " + "
            term_tex = self._print(term)
            if term.is_Add or self._needs_add_brackets(term) or (
                    minus and (_negated(term) is not None or term.could_extract_minus_sign())):
                term_tex = rf"\left({term_tex}\right)"
            tex += term_tex
        return tex

    def _print_Mul(self, expr):
        negated = _negated(expr) if self.keep_order else None
        if negated is not None:
            inner = self._print(negated)
            return rf"- \left({inner}\right)" if negated.is_Add else f"- {inner}"
        return super()._print_Mul(expr)


class ReportMathMLPrinter(MathMLPresentationPrinter):
    """SymPy's presentation MathML, MathML Core only, with our display names.

    keep_order: as for ReportLatexPrinter."""

    def __init__(self, names: dict[str, Display], special: dict[str, sympy.Expr],
                 keep_order: bool = False):
        super().__init__({"mul_symbol": "dot"})
        self.n = _Names(names, special)
        self.keep_order = keep_order

    def doprint(self, expr) -> str:
        text = super().doprint(expr)
        # elementwise products as odot; numeric entities, so the markup parses as XML too
        text = (text.replace("<mo>&#xB7;</mo>", "<mo>\u2299</mo>")
                .replace("&InvisibleTimes;", "&#x2062;").replace("<mo>-</mo>", "<mo>\u2212</mo>"))
        # a number times a vector is plain scaling, not an elementwise product
        return re.sub(r"(<mn>[^<]*</mn>)<mo>\u2299</mo>", "\\1<mo>&#x2062;</mo>", text)

    def _el(self, tag: str, *children, text: str | None = None):
        node = self.dom.createElement(tag)
        if text is not None:
            node.appendChild(self.dom.createTextNode(text))
        for child in children:
            node.appendChild(child)
        return node

    def _parens(self, inner):
        return self._el("mrow", self._el("mo", text="("), inner, self._el("mo", text=")"))

    def _markup(self, xml: str):
        return parseString(f"<mrow>{xml}</mrow>").documentElement

    def _print_Symbol(self, sym, style="plain"):
        name = sym.name
        if name.startswith("d_"):
            rest = name[2:]
            if rest in self.n.special:
                return self._el("mrow", self._el("mi", text="\u03b4"),
                                self._parens(self._print(self.n.special[rest])))
            return self._el("mrow", self._el("mi", text="\u03b4"),
                            self._markup(self.n.display(rest).mathml()))
        if name in self.n.special:
            return self._print(self.n.special[name])
        return self._markup(self.n.display(name).mathml())

    def _print_Pow(self, e):
        base = self.n.resolve(e.base)
        if type(base) in _NAMED and e.exp.is_Integer and e.exp > 0:
            sign = FUNCTION_SIGNS.get(BY_CLASS[type(base)].name, BY_CLASS[type(base)].name)
            return self._el("mrow", self._el("msup", self._el("mi", text=sign),
                                             self._print(e.exp)),
                            self._parens(self._print(base.args[0])))
        return super()._print_Pow(e)

    def _print_Add(self, expr, order=None):
        row = self._el("mrow")
        for i, (minus, term) in enumerate(_terms(self, expr, order)):
            if minus:
                row.appendChild(self._el("mo", text="-"))
            elif i:
                row.appendChild(self._el("mo", text="+"))
            printed = self._print(term)
            if term.is_Add or (
                    minus and (_negated(term) is not None or term.could_extract_minus_sign())):
                printed = self._parens(printed)
            row.appendChild(printed)
        return row

    def _print_Mul(self, expr):
        if not self.keep_order:
            return super()._print_Mul(expr)
        negated = _negated(expr)
        if negated is not None:
            inner = self._print(negated)
            return self._el("mrow", self._el("mo", text="-"),
                            self._parens(inner) if negated.is_Add else inner)
        if any(a.is_Pow and a.exp.is_negative for a in expr.args):  # a fraction
            return super()._print_Mul(expr)
        row = self._el("mrow")
        for i, term in enumerate(expr.args):
            if i:
                row.appendChild(self._el("mo", text=self.mathml_tag(expr)))
            row.appendChild(self.parenthesize(term, PRECEDENCE["Mul"]))
        return row

    def _print_Function(self, e):
        if isinstance(e, MatVec):
            m, v = e.args
            operand = self._print(v)
            if not v.is_Symbol:
                operand = self._parens(operand)
            return self._el("mrow", self._print(m), self._el("mo", text="\u2062"), operand)
        if isinstance(e, MatTVec):
            m, v = e.args
            inner = self._print(v)
            if v.is_Add:
                inner = self._parens(inner)
            top = self._el("msup", self._print(m), self._el("mo", text="\u22a4"))
            return self._el("mrow", top, self._el("mo", text="\u2062"), inner)
        if isinstance(e, Diag):
            v, m, *j = e.args
            row = self._el("mrow")
            factors = ([] if v == 1 else [self._el("mrow", self._el("mi", text="diag"),
                                                   self._parens(self._print(v)))])
            factors += [self._print(b) for b in ([m] if m != 1 else []) + j]
            for k, factor in enumerate(factors or [self._el("mi", text="I")]):
                if k:  # a thin space too: "U diag(r)", not "Udiag(r)"
                    row.appendChild(self._el("mo", text="\u2062"))
                    space = self._el("mspace")
                    space.setAttribute("width", "0.17em")
                    row.appendChild(space)
                row.appendChild(factor)
            return row
        if isinstance(e, Partial):
            a, b = e.args
            top = self._print(a)
            if not a.is_Symbol:
                top = self._parens(top)
            return self._el("mfrac", self._el("mrow", self._el("mo", text="\u2202"), top),
                            self._el("mrow", self._el("mo", text="\u2202"), self._print(b)))
        if isinstance(e, TotalD):
            node, leaf = e.args
            shown = self._print(node)
            if not node.is_Symbol:
                shown = self._parens(shown)
            return self._el("mrow", self._el("msub", self._el("mi", text="D"),
                                             self._el("mrow", self._print(leaf))),
                            self._el("mo", text="\u2062"), shown)
        if isinstance(e, Sqrt):
            return self._el("msqrt", self._print(e.args[0]))
        if isinstance(e, Expm1):
            power = self._el("msup", self._el("mi", text="e"), self._print(e.args[0]))
            return self._parens(self._el("mrow", power, self._el("mo", text="\u2212"),
                                         self._el("mn", text="1")))
        if isinstance(e, Positive):
            return self._el("mrow", self._el("mo", text="["), self._print(e.args[0]),
                            self._el("mo", text=">"), self._el("mn", text="0"),
                            self._el("mo", text="]"))
        info = BY_CLASS.get(type(e))
        if info is not None:
            sign = FUNCTION_SIGNS.get(info.name, info.name)
            return self._el("mrow", self._el("mi", text=sign),
                            self._parens(self._print(e.args[0])))
        return super()._print_Function(e)


def spec_order(text: str, expr: sympy.Expr) -> sympy.Expr:
    """A spec equation's text as an unevaluated expression, its terms and factors in the order
    the text writes them: what the keep_order printers print. ``expr`` is the parsed equation
    (spec.py); it is returned instead when the text reads as anything else (a function of a
    constant, which the parser folds into its value)."""

    def build(node: ast.AST) -> sympy.Expr:
        if isinstance(node, ast.Constant) and not isinstance(node.value, bool):
            if isinstance(node.value, int):
                return sympy.Integer(node.value)
            return sympy.Rational(repr(node.value))
        if isinstance(node, ast.Name):
            return sympy.Symbol(node.id)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            value = build(node.operand)
            if isinstance(node.op, ast.UAdd):
                return value
            return -value if value.is_Number else sympy.Mul(-1, value, evaluate=False)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                and node.func.id in FUNCTIONS and len(node.args) == 1:
            arg = build(node.args[0])
            if arg.is_number:
                raise ValueError("a function of a constant")
            return FUNCTIONS[node.func.id].cls(arg)
        if isinstance(node, ast.BinOp):
            a, b = build(node.left), build(node.right)
            op = type(node.op)
            if op is ast.MatMult:
                return MatVec(a, b)
            if op is ast.Pow:
                return sympy.Pow(a, b, evaluate=False)
            if op in (ast.Add, ast.Sub):
                if op is ast.Sub:
                    b = -b if b.is_Number else sympy.Mul(-1, b, evaluate=False)
                left = list(a.args) if a.is_Add else [a]
                return sympy.Add(*left, b, evaluate=False)
            if op in (ast.Mult, ast.Div):
                if op is ast.Div:
                    b = sympy.Pow(b, -1, evaluate=False)
                left = list(a.args) if a.is_Mul and _negated(a) is None else [a]
                return sympy.Mul(*left, b, evaluate=False)
        raise ValueError(f"cannot read {ast.dump(node)}")

    try:
        ordered = build(ast.parse(text.strip(), mode="eval").body)
    except (ValueError, SyntaxError, TypeError):
        return expr
    return ordered if ordered.doit() == expr else expr


def math_block(latex: str, mathml: str, label: str = "", anchor: str = "",
               note: str = "") -> str:
    """A display equation: MathML with its LaTeX source as annotation, then a note (HTML) and
    a number, each in its own column of the row (see the report's .eq style)."""
    eq_id = f' id="{escape(anchor)}"' if anchor else ""
    plain = "" if label or note else " plain"
    note = f'<span class="note">{note}</span>' if note else ""
    number = f'<span class="eqno">({escape(label)})</span>' if label else ""
    return (f'<div class="eq{plain}"{eq_id}><math display="block"><semantics><mrow>{mathml}'
            f'</mrow><annotation encoding="application/x-tex">{escape(latex)}</annotation>'
            f"</semantics></math>{note}{number}</div>")


def inline_math(latex: str, mathml: str) -> str:
    """Inline MathML with its LaTeX source as annotation."""
    return (f"<math><semantics><mrow>{mathml}</mrow><annotation encoding=\"application/x-tex\">"
            f"{escape(latex)}</annotation></semantics></math>")


def aligned_block(rows: list[tuple[str, str, str]], latex: str) -> str:
    """One display equation of several rows, aligned at the relation: (left, relation,
    right) MathML per row, e.g. a Jacobian block written one term a row."""
    body = "".join(f'<mtr><mtd class="lhs">{left}</mtd><mtd class="rhs"><mo form="infix">{rel}'
                   f"</mo>{right}</mtd></mtr>" for left, rel, right in rows)
    return (f'<div class="eq plain"><math display="block"><semantics>'
            f'<mtable displaystyle="true">{body}</mtable>'
            f'<annotation encoding="application/x-tex">{escape(latex)}</annotation>'
            f"</semantics></math></div>")


def aligned_equations(equations) -> str:
    """Unnumbered equations with continuation rows (the Jacobian blocks: ``latex``, ``mathml``
    and ``more``, a list of "+ term" rows) as one display, one term a row, aligned at = and +."""
    rows, latex = [], []
    for e in equations:
        left, right = e.mathml.split("<mo>=</mo>", 1)
        rows.append((left, "=", right))
        rows += [("", "+", m.removeprefix("<mo>+</mo>")) for _, m in e.more]
        latex.append(" ".join([e.latex, *(m for m, _ in e.more)]))
    return aligned_block(rows, r" \\ ".join(latex)) if rows else ""

