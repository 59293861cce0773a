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
    """Prints step expressions; ``Backprop(G)`` prints as ``d_G @ W_G``."""

    def __init__(self, group_matrices: dict[str, str]):
        super().__init__({"fully_qualified_modules": False, "standard": "python3"})
        self.group_matrices = group_matrices
        self.used: set[type] = set()  # function classes printed so far: the helpers to define

    def doprint(self, expr, assign_to=None) -> str:
        """SymPy's text with spaces around * and / (not **), as code is written by hand."""
        return _SPACED.sub(r" \1 ", super().doprint(expr, assign_to))

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
        return f"d_{group} @ {self.group_matrices[group]}"

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
