"""LaTeX and MathML printers for reports, over the display names of derive/display.py.

MathML is SymPy's presentation printer restricted to MathML Core (no mfenced, no mathvariant),
with the LaTeX kept as an annotation beside it. An adjoint ``d_X`` prints as delta X; internal
nodes print as what they stand for (``tanh_c`` as tanh(c), ``W_ii_x`` as W_ii x).
"""

from __future__ import annotations

import re
from html import escape
from xml.dom.minidom import parseString

import sympy
from derive_cells.display import Display, default_display
from derive_cells.functions import BY_CLASS, Expm1, Positive, Sqrt
from derive_cells.spec import MatVec
from sympy.printing.latex import LatexPrinter
from sympy.printing.mathml import MathMLPresentationPrinter

FUNCTION_SIGNS = {"sigmoid": "\u03c3", "tanh": "tanh", "relu": "relu", "exp": "exp",
                  "log": "log", "softplus": "softplus"}


class MatTVec(sympy.Function):
    """``M^T d``: a product's adjoint passed back to its operand."""

    nargs = 2

    def _latex(self, printer):
        m, v = self.args
        inner = printer._print(v)
        return rf"{printer._print(m)}^{{\top}} " + (rf"\left({inner}\right)" if v.is_Add else inner)


class Diag(sympy.Function):
    """``diag(v) M [J]``: the rows of M scaled by v, times an operand's Jacobian block J when
    given (a term of the step Jacobian)."""

    nargs = (2, 3)

    def _latex(self, printer):
        v, m, *j = self.args
        tail = "" if m == 1 else f" {printer._print(m)}"
        tail += "".join(rf"\, {printer._print(b)}" for b in j)
        return rf"\operatorname{{diag}}\left({printer._print(v)}\right){tail}"


class Partial(sympy.Function):
    """``d a / d b``: a Jacobian block (of a product's operand by a previous state)."""

    nargs = 2

    def _latex(self, printer):
        a, b = self.args
        return rf"\frac{{\partial {printer._print(a)}}}{{\partial {printer._print(b)}}}"


class TotalD(sympy.Function):
    """``D_leaf node``: a named tangent of the step Jacobian, the elementwise derivative of node
    by leaf (a previous state or a matrix product) within one step."""

    nargs = 2

    def _latex(self, printer):
        node, leaf = self.args
        return rf"D_{{{printer._print(leaf)}}} {printer._print(node)}"


class _Names:
    def __init__(self, names: dict[str, Display], special: dict[str, sympy.Expr]):
        self.names, self.special = names, special

    def display(self, name: str) -> Display:
        return self.names.get(name) or default_display(name)


class ReportLatexPrinter(LatexPrinter):
    """SymPy's LaTeX printer with our display names and elementwise products as odot."""

    def __init__(self, names: dict[str, Display], special: dict[str, sympy.Expr]):
        super().__init__({"mul_symbol": r" \odot "})
        self.n = _Names(names, special)

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


class ReportMathMLPrinter(MathMLPresentationPrinter):
    """SymPy's presentation MathML, MathML Core only, with our display names."""

    def __init__(self, names: dict[str, Display], special: dict[str, sympy.Expr]):
        super().__init__({"mul_symbol": "dot"})
        self.n = _Names(names, special)

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
            row = self._el("mrow", self._el("mi", text="diag"), self._parens(self._print(v)))
            for b in ([m] if m != 1 else []) + j:
                row.appendChild(self._el("mo", text="\u2062"))
                row.appendChild(self._print(b))
            return row
        if isinstance(e, Partial):
            a, b = e.args
            return self._el("mfrac", self._el("mrow", self._el("mo", text="\u2202"),
                                              self._print(a)),
                            self._el("mrow", self._el("mo", text="\u2202"), self._print(b)))
        if isinstance(e, TotalD):
            node, leaf = e.args
            return self._el("mrow", self._el("msub", self._el("mi", text="D"),
                                             self._el("mrow", self._print(leaf))),
                            self._el("mo", text="\u2062"), self._print(node))
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


def math_block(latex: str, mathml: str, label: str = "", anchor: str = "") -> str:
    """A display equation: MathML with its LaTeX source as annotation, and a number."""
    eq_id = f' id="{escape(anchor)}"' if anchor else ""
    number = f'<span class="eqno">({escape(label)})</span>' if label else ""
    return (f'<div class="eq"{eq_id}><math display="block"><semantics><mrow>{mathml}</mrow>'
            f'<annotation encoding="application/x-tex">{escape(latex)}</annotation>'
            f"</semantics></math>{number}</div>")
