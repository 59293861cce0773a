"""Code printers: one per target, built on SymPy's Python printer.

Elementwise functions print as calls of helpers the emitted module defines (``sigmoid(z_i)``), so
the step bodies read the same for every target and never name the array library.
"""

from __future__ import annotations

import re

import sympy
from sympy.printing.pycode import PythonCodePrinter

from derive_cells.derivation import Backprop
from derive_cells.functions import BY_CLASS, DERIVATIVE_HELPERS, CellFunction

_SPACED = re.compile(r"(?<!\*)([*/])(?!\*)")  # a lone * or /, not either half of **


class CellCodePrinter(PythonCodePrinter):
    """Prints step expressions; ``Backprop(G)`` prints as ``d_G @ W_G``.

    Given ``ranks`` (a name's position in the equation being printed), terms and factors print
    in the author's order instead of SymPy's: adjoints first in a product, then names in the
    order the spec's text has them, positive terms before negative ones.

    >>> f, c_prev, i, g, d_c = sympy.symbols("f c_prev i g d_c")
    >>> p = CellCodePrinter({})
    >>> p.doprint(f * c_prev + i * g)
    'c_prev * f + g * i'
    >>> p.doprint(f * c_prev + i * g, ranks=term_ranks("f * c_prev + i * g"))
    'f * c_prev + i * g'
    >>> p.doprint(c_prev * d_c, ranks=term_ranks("f * c_prev + i * g"))
    'd_c * c_prev'
    """

    def __init__(self, group_matrices: dict[str, str]):
        super().__init__({"fully_qualified_modules": False, "standard": "python3"})
        self.group_matrices = group_matrices
        self.used: set[type] = set()  # function classes printed so far: the helpers to define
        self.adjoint_names: dict[str, str] = {}  # group -> the name its adjoint has, if not d_G

    def doprint(self, expr, assign_to=None, ranks: dict[str, int] | None = None) -> str:
        """SymPy's text with spaces around * and / (not **), as code is written by hand; with
        ranks, in the author's term order."""
        if ranks:
            expr = in_order(sympy.sympify(expr), ranks)
            old = self._settings["order"]
            self._settings["order"] = "none"
            try:
                text = super().doprint(expr, assign_to)
            finally:
                self._settings["order"] = old
        else:
            text = super().doprint(expr, assign_to)
        return _SPACED.sub(r" \1 ", text)

    def _print(self, expr, **kwargs) -> str:
        if isinstance(expr, CellFunction):  # before SymPy's own _print_Sqrt, _print_Exp, ...
            return self._print_CellFunction(expr)
        return super()._print(expr, **kwargs)

    def _print_CellFunction(self, expr: CellFunction) -> str:
        info = BY_CLASS.get(type(expr))
        name = info.name if info else DERIVATIVE_HELPERS[type(expr)][0]
        self.used.add(type(expr))
        return f"{name}({self._print(expr.args[0])})"

    def _print_Backprop(self, expr: Backprop) -> str:
        group = expr.args[0].name
        return f"{self.adjoint_names.get(group, f'd_{group}')} @ {self.group_matrices[group]}"

    def parenthesize(self, item, level, strict=False) -> str:
        """A positive fraction prints as a float literal (0.5), which needs no parentheses."""
        if isinstance(item, sympy.Rational) and not item.is_Integer and item > 0:
            return self._print(item)
        return super().parenthesize(item, level, strict)

    def _print_Rational(self, expr) -> str:
        return repr(float(expr))  # correctly rounded, also for huge numerators and denominators

    def _print_Half(self, expr) -> str:
        return "0.5"

    def _print_Integer(self, expr) -> str:
        value = int(expr)  # beyond 2**53 as a float, which any array library can multiply by
        return str(value) if abs(value) <= 2**53 else repr(float(value))

    def _print_Pow(self, expr, rational=False) -> str:
        """Powers stay powers (x**0.5, not a sqrt helper that no emitted module defines)."""
        if expr.exp in (sympy.S.Half, -sympy.S.Half):
            return self._hprint_Pow(expr, rational=True)
        return super()._print_Pow(expr, rational=rational)


class TorchCodePrinter(CellCodePrinter):
    """Like CellCodePrinter, but ``d * s * (1 - s)`` and ``d * (1 - t**2)`` print as one call
    of Torch's fused derivative kernels (``_dsigmoid(d, s)``, ``_dtanh(d, t)``): the rule stays
    in the comment beside the line, and each becomes one operation instead of three."""

    def _print_Mul(self, expr) -> str:
        factors = list(expr.args)
        for k, f in enumerate(factors):
            if not f.is_Add or len(f.args) != 2 or sympy.S.One not in f.args:
                continue
            other = next(a for a in f.args if a != 1)
            rest = factors[:k] + factors[k + 1:]
            for y in {s for s in expr.free_symbols}:
                if other == -y**2:
                    helper, rest_ = "_dtanh", rest
                elif other == -y and y in rest:
                    helper, rest_ = "_dsigmoid", list(rest)
                    rest_.remove(y)
                else:
                    continue
                grad = sympy.Mul(*rest_)
                if not grad.free_symbols:
                    continue
                return f"{helper}({self._print(grad)}, {self._print(y)})"
        return super()._print_Mul(expr)


_NAME = re.compile(r"[A-Za-z_]\w*")
_LAST = 10**6  # the rank of a name the equation's text does not have


def term_ranks(text: str, stands_for: dict[str, sympy.Expr] | None = None) -> dict[str, int]:
    """Each name's first position in an equation's text; a name the text does not have but
    that stands for an expression of names it has (a product, a pre-activation) ranks as the
    first of those.

    >>> term_ranks("tanh(W_in @ x + b_in + r * (W_hn @ h_prev))")["r"]
    4
    """
    ranks: dict[str, int] = {}
    for k, m in enumerate(_NAME.finditer(text)):
        ranks.setdefault(m.group(), k)
    pending = dict(stands_for or {})
    while pending:  # names defined by other names: as early as the earliest of them
        progress = False
        for name, expr in list(pending.items()):
            inner = [s.name for s in sympy.sympify(expr).free_symbols]
            if all(n in ranks or n not in pending for n in inner):
                ranks.setdefault(name, min((ranks.get(n, _LAST) for n in inner), default=_LAST))
                del pending[name]
                progress = True
        if not progress:
            break
    return ranks


def _ranks_of(expr: sympy.Expr, ranks: dict[str, int]) -> tuple[int, ...]:
    return tuple(sorted(ranks.get(s.name, _LAST) for s in expr.free_symbols))


def _adjoint(expr: sympy.Expr) -> bool:
    return isinstance(expr, sympy.Symbol) and expr.name.startswith("d_")


def in_order(expr: sympy.Expr, ranks: dict[str, int]) -> sympy.Expr:
    """expr rebuilt unevaluated with its terms and factors in the author's order (see
    CellCodePrinter); printed with order='none' it reads as the spec does. An adjoint being
    accumulated comes first (``d_c = d_c + ...``)."""
    if not expr.args or isinstance(expr, Backprop):
        return expr
    args = [in_order(a, ranks) for a in expr.args]
    if expr.is_Add:
        args.sort(key=lambda t: (t.could_extract_minus_sign(), not _adjoint(t),
                                 not t.is_Number, _ranks_of(t, ranks)))
        return sympy.Add(*args, evaluate=False)
    if expr.is_Mul:
        args.sort(key=lambda f: (not f.is_Number, not _adjoint(f), _ranks_of(f, ranks)))
        return sympy.Mul(*args, evaluate=False)
    if expr.is_Pow:
        return sympy.Pow(*args, evaluate=False)
    return expr.func(*args)
