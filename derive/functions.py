"""The elementwise functions a cell spec may call: one table, one SymPy class each.

Every class knows its derivative written with its own output (``fdiff`` returns an expression in
``self``), so the derivation can replace ``f(z)`` by the saved activation and no ``exp`` of a
pre-activation reaches emitted code.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy


class CellFunction(sympy.Function):
    """Base of the spec functions: one argument, kept unevaluated."""

    nargs = 1
    latex_name = r"\operatorname{f}"
    exact = None  # the function in SymPy's own terms, for constant arguments

    def value(self) -> sympy.Rational | None:
        """Of a constant argument: the float64 value as an exact rational; None if not finite."""
        try:
            number = complex(sympy.N(type(self).exact(self.args[0]), 30))
            result = float(number.real)
        except (TypeError, ValueError, OverflowError, ZeroDivisionError):
            return None
        if number.imag != 0 or result != result or result in (float("inf"), float("-inf")):
            return None
        return sympy.Rational(repr(result))

    def _latex(self, printer):
        return rf"{self.latex_name}\left({printer._print(self.args[0])}\right)"


class Sigmoid(CellFunction):
    latex_name = r"\sigma"
    exact = staticmethod(lambda a: 1 / (1 + sympy.exp(-a)))

    def fdiff(self, argindex=1):
        return self * (1 - self)


class Tanh(CellFunction):
    latex_name = r"\tanh"
    exact = staticmethod(sympy.tanh)

    def fdiff(self, argindex=1):
        return 1 - self**2


class Exp(CellFunction):
    latex_name = r"\exp"
    exact = staticmethod(sympy.exp)

    def fdiff(self, argindex=1):
        return self


class Log(CellFunction):
    latex_name = r"\log"
    exact = staticmethod(sympy.log)

    def fdiff(self, argindex=1):
        return 1 / self.args[0]


class Sqrt(CellFunction):
    latex_name = r"\sqrt"
    exact = staticmethod(sympy.sqrt)

    def fdiff(self, argindex=1):
        return 1 / (2 * self)

    def _latex(self, printer):
        return rf"\sqrt{{{printer._print(self.args[0])}}}"


class Positive(CellFunction):
    """Indicator [y > 0]: the derivative of relu, written with relu's output."""

    def _latex(self, printer):
        return rf"\left[{printer._print(self.args[0])} > 0\right]"


class Relu(CellFunction):
    latex_name = r"\operatorname{relu}"
    exact = staticmethod(lambda a: sympy.Max(a, 0))

    def fdiff(self, argindex=1):
        return Positive(self)


class Expm1(CellFunction):
    """exp(z) - 1, exact near z = 0: softplus' = 1 - exp(-s) is written -expm1(-s)."""

    def _latex(self, printer):
        return rf"\left(e^{{{printer._print(self.args[0])}}} - 1\right)"


class Softplus(CellFunction):
    latex_name = r"\operatorname{softplus}"
    exact = staticmethod(lambda a: sympy.log(1 + sympy.exp(a)))

    def fdiff(self, argindex=1):
        return -Expm1(-self)


@dataclass(frozen=True)
class FunctionInfo:
    """One row of the function table: the SymPy class and its NumPy/Torch implementations."""

    name: str
    cls: type
    numpy: str  # body of the NumPy helper, in terms of ``z``
    torch: str  # body of the Torch helper, in terms of ``z``
    rule: str  # the derivative in terms of the function's own value, as Python (a comment)


FUNCTIONS: dict[str, FunctionInfo] = {
    f.name: f
    for f in (
        # 1 / (1 + exp(-z)), with |z| capped at 80 so that exp cannot overflow in float32
        FunctionInfo("sigmoid", Sigmoid, "_sigmoid(z)", "torch.sigmoid(z)",
                     "sigmoid'(z) = sigmoid(z) * (1 - sigmoid(z))"),
        FunctionInfo("tanh", Tanh, "np.tanh(z)", "torch.tanh(z)", "tanh'(z) = 1 - tanh(z)**2"),
        FunctionInfo("relu", Relu, "np.maximum(z, 0)", "torch.relu(z)", "relu'(z) = (relu(z) > 0)"),
        FunctionInfo("exp", Exp, "np.exp(z)", "torch.exp(z)", "exp'(z) = exp(z)"),
        FunctionInfo("log", Log, "np.log(z)", "torch.log(z)", "log'(z) = 1 / z"),
        FunctionInfo("softplus", Softplus, "np.logaddexp(0, z)",
                     "torch.nn.functional.softplus(z)", "softplus'(z) = 1 - exp(-softplus(z))"),
        FunctionInfo("sqrt", Sqrt, "np.sqrt(z)", "torch.sqrt(z)", "sqrt'(z) = 1 / (2 * sqrt(z))"),
    )
}

BY_CLASS: dict[type, FunctionInfo] = {f.cls: f for f in FUNCTIONS.values()}

# Functions that appear only in derivatives, never in a spec: name -> (numpy, torch) helper bodies.
DERIVATIVE_HELPERS: dict[type, tuple[str, str, str]] = {
    Positive: ("positive", "(z > 0).astype(z.dtype)", "(z > 0).to(z.dtype)"),
    Exp: ("exp", "np.exp(z)", "torch.exp(z)"),
    Expm1: ("expm1", "np.expm1(z)", "torch.expm1(z)"),
}
