"""Code printers: one per target, built on SymPy's Python printer.

Elementwise functions print as calls of helpers the emitted module defines (``sigmoid(z_i)``), so
the step bodies read the same for every target and never name the array library.
"""

from __future__ import annotations

from sympy.printing.pycode import PythonCodePrinter

from derive.derivation import Backprop
from derive.functions import BY_CLASS, DERIVATIVE_HELPERS, CellFunction


class CellCodePrinter(PythonCodePrinter):
    """Prints step expressions; ``Backprop(G)`` prints as ``d_G @ W_G``."""

    def __init__(self, group_matrices: dict[str, str]):
        super().__init__({"fully_qualified_modules": False, "standard": "python3"})
        self.group_matrices = group_matrices

    def _print_CellFunction(self, expr: CellFunction) -> str:
        info = BY_CLASS.get(type(expr))
        name = info.name if info else DERIVATIVE_HELPERS[type(expr)][0]
        return f"{name}({self._print(expr.args[0])})"

    def _print_Function(self, expr) -> str:
        if isinstance(expr, CellFunction):
            return self._print_CellFunction(expr)
        return super()._print_Function(expr)

    def _print_Backprop(self, expr: Backprop) -> str:
        group = expr.args[0].name
        return f"d_{group} @ {self.group_matrices[group]}"

    def _print_Rational(self, expr) -> str:
        return repr(float(expr.p) / float(expr.q))

    def _print_Half(self, expr) -> str:
        return "0.5"

    def _print_Integer(self, expr) -> str:
        return str(int(expr))


def helper_names(exprs) -> set[type]:
    """Function classes used by a collection of expressions."""
    found: set[type] = set()
    for e in exprs:
        found |= {type(f) for f in e.atoms(CellFunction)}
    return found
