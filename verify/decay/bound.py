"""A bound on the norm of a single-state cell's step Jacobian, from the derivation, with every
factor between the previous state and the new one in it.

The step Jacobian is a sum of terms diag(c) M J: c an elementwise coefficient, M a recurrent
matrix, J the block of the product's operand (itself such a sum, or the identity). Its norm is
at most the sum over the terms of sup|c| * sigma_max(M) * (the bound of J), where sup|c| is
taken factor by factor over the values each activation output can take (tanh in [-1, 1],
sigmoid in [0, 1], ...). For h = phi(W h_prev + ...) this is the bound of Pascanu, Mikolov &
Bengio (2013), gamma * sigma_max(W), gamma = sup |phi'|. A coefficient with a factor that has no
largest value (an input product, a parameter, the previous state) gives no bound.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy
from sympy.calculus.util import maximum, minimum

from derive_cells.derivation import Derivation, JacobianTerm
from derive_cells.functions import BY_CLASS, Expm1, Positive

PASCANU = "Pascanu bound: gamma * sigma_max(W)"
# the values a function's output takes: what bounds the coefficients of the step Jacobian
RANGES = {"tanh": (-1, 1), "sigmoid": (0, 1), "relu": (0, sympy.oo), "softplus": (0, sympy.oo),
          "exp": (0, sympy.oo), "sqrt": (0, sympy.oo)}


@dataclass
class Bound:
    """A bound on the norm of a state's step Jacobian: a sum over its terms of
    gamma * sigma_max(M) * (the bound of the operand's block, or 1)."""

    terms: list[tuple[float, str | None, Bound | None]]  # gamma, matrix, operand's bound
    pascanu: bool = False  # diag(phi'(z)) W: the state is phi of a sum that holds W h_prev

    def value(self, sigma: dict[str, float]) -> float:
        return sum(g * (sigma[m] if m else 1.0) * (b.value(sigma) if b else 1.0)
                   for g, m, b in self.terms)

    @property
    def matrices(self) -> set[str]:
        return {m for _, m, b in self.terms if m} | {m for _, _, b in self.terms if b
                                                     for m in b.matrices}

    def formula(self) -> str:
        """The bound in words: 3 * sigma_max(U), 0.25 * sigma_max(U) * (1 + sigma_max(V))."""
        parts = []
        for g, m, b in self.terms:
            if b is not None and not b.matrices:  # a constant operand block: a factor
                g, b = g * b.value({}), None
            factors = [] if g == 1 and m else [f"{g:.4g}"]
            factors += [f"sigma_max({m})"] if m else []
            if b is not None:
                factors.append(f"({b.formula()})" if len(b.terms) > 1 else b.formula())
            parts.append(" * ".join(factors))
        return " + ".join(parts)

    @property
    def kind(self) -> str:
        """What the bound is, for the table: Pascanu's gamma * sigma_max(W) for
        h = phi(W h_prev + ...), else its formula."""
        return PASCANU if self.pascanu else f"bound: {self.formula()}"


def is_bound(kind: str | None) -> bool:
    """Whether a prediction's kind names a bound (not a gate product or nothing)."""
    return kind is not None and (kind == PASCANU or kind.startswith("bound: "))


def step_bound(deriv: Derivation, s: str) -> Bound | None:
    """The bound on ||d s_t / d s_{t-1}|| of a single-state cell, or None where a factor
    between the previous state and the new one is not bounded."""
    terms = deriv.jacobian.get((s, s), [])
    bound = _bound(deriv, terms, s, 0)
    node = deriv.node(s)
    if bound is not None and len(terms) == 1 and terms[0].operand is None and \
            node.kind == "func":  # is the coefficient phi'(z), phi the state's own function?
        slope = node.expr.fdiff().xreplace({node.expr: sympy.Symbol(s)})
        bound.pascanu = sympy.simplify(terms[0].coef - slope) == 0
    return bound


def _bound(deriv: Derivation, terms: list[JacobianTerm], sp: str, depth: int) -> Bound | None:
    if not terms or depth > 4:
        return None
    out = []
    for t in terms:
        gamma = sup_abs(deriv, t.coef)
        if gamma is None:
            return None
        inner = None
        if t.operand is not None:
            inner = _bound(deriv, deriv.jacobian_operands.get(t.operand, {}).get(sp, []), sp,
                           depth + 1)
            if inner is None:
                return None
        out.append((gamma, t.matrix, inner))
    return Bound(out)


def sup_abs(deriv: Derivation, expr) -> float | None:
    """sup |expr| over the values of its symbols, each the output of a bounded function
    (tanh, sigmoid, ...: RANGES), taken factor by factor; None when a symbol is anything else
    (an input product, a parameter, a previous state) or the supremum is not finite.

    >>> from derive_cells.spec import load_cell
    >>> from derive_cells.derivation import derive
    >>> deriv = derive(load_cell("rnn"))
    >>> h, x = sympy.Symbol("h"), sympy.Symbol("x")  # h = tanh(...) lies in [-1, 1]
    >>> sup_abs(deriv, 1 - h**2), sup_abs(deriv, h * (1 - h)), sup_abs(deriv, x * (1 - h**2))
    (1.0, 2.0, None)
    """
    expr = sympy.sympify(expr)
    expr = expr.replace(lambda e: isinstance(e, Positive), lambda e: sympy.Integer(1))
    expr = expr.replace(lambda e: isinstance(e, Expm1), lambda e: sympy.exp(e.args[0]) - 1)
    for form in (expr, sympy.factor(expr)):
        value = _sup_by_factors(deriv, form)
        if value is not None:
            return value
    return None


def _sup_by_factors(deriv: Derivation, expr) -> float | None:
    total, groups = 1.0, {}
    for factor in sympy.Mul.make_args(expr):
        symbols = factor.free_symbols
        if not symbols:
            total *= abs(float(factor))
        elif len(symbols) == 1:
            (sym,) = symbols
            groups[sym] = groups.get(sym, sympy.Integer(1)) * factor
        else:
            return None
    for sym, factor in groups.items():
        node = next((n for n in deriv.nodes if n.name == sym.name), None)
        name = BY_CLASS[type(node.expr)].name if node and node.kind == "func" else None
        if name not in RANGES:
            return None
        domain = sympy.Interval(*RANGES[name])
        try:
            hi, lo = maximum(factor, sym, domain), minimum(factor, sym, domain)
        except (NotImplementedError, ValueError, TypeError):
            return None
        value = sympy.Max(sympy.Abs(hi), sympy.Abs(lo))
        if not value.is_finite:
            return None
        total *= float(value)
    return total
