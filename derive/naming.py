"""Names the derivation and the plan make up, each from what it stands for, by named rules;
every made-up name is unique among the spec's names and each other (one rule: ``unique``).

>>> x, r, h_prev = sympy.symbols("x r h_prev")
>>> describe(r * h_prev, "tanh(W @ x + U @ (r * h_prev))")
'r_h_prev'
>>> pre_activation("i"), pre_activation("z")
('z_i', 'z_pre')
>>> unique("tanh_c", {"tanh_c"})
'tanh_c_2'
"""

from __future__ import annotations

import re

import sympy

_NAME = re.compile(r"[A-Za-z_]\w*")
MAX_DESCRIBED = 3  # at most this many names joined into one made-up name
MAX_LENGTH = 16  # and no longer than this: a longer one is named by its role


def unique(base: str, taken: set[str]) -> str:
    """base, or base_2, base_3, ... : the first that is not taken (then taken)."""
    name, k = base, 2
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    taken.add(name)
    return name


def pre_activation(target: str) -> str:
    """The argument of the function an equation applies: z_i for i; z_pre for a gate named z
    (never z_z, which reads as z applied to z)."""
    return "z_pre" if target == "z" else f"z_{target}"


def function_value(fname: str, arg: str) -> str:
    """A function of a value inside an equation: tanh_c = tanh(c)."""
    return f"{fname}_{arg}"


def product(matrix: str, operand: str) -> str:
    """A matrix times its operand: W_hr_h_prev = W_hr @ h_prev."""
    return f"{matrix}_{operand}"


def group(operand: str) -> str:
    """Every product of one operand, stacked: h_prev_W = h_prev @ [W_hr | W_hz | ...].T."""
    return f"{operand}_W"


def stacked_matrix(operand: str) -> str:
    """The matrices of one operand, stacked by rows: W_h_prev."""
    return f"W_{operand}"


def folded_bias(operand: str) -> str:
    """The biases folded into one operand's stacked product, summed: b_h_prev."""
    return f"b_{operand}"


def describe(expr: sympy.Expr, text: str = "") -> str | None:
    """A name for a small expression from its parts, in the order the equation's text has
    them: r * h_prev -> r_h_prev, 1 + a -> a_plus_1, c**2 -> c_sq; None for anything larger
    (the caller then names it by its role)."""
    first = {m.group(): k for k, m in reversed(list(enumerate(_NAME.finditer(text))))}

    def part(atom) -> str | None:
        if atom.is_Symbol:
            return atom.name
        if atom.is_Integer and 0 <= atom <= 99:
            return str(atom)
        return None

    if expr.is_Pow and expr.base.is_Symbol and expr.exp == 2:
        return f"{expr.base.name}_sq"
    if not (expr.is_Mul or expr.is_Add) or len(expr.args) > MAX_DESCRIBED:
        return None
    parts = [part(a) for a in expr.args]
    if None in parts:
        return None
    parts.sort(key=lambda p: (p.isdigit(), first.get(p, len(first)), p))
    name = ("_" if expr.is_Mul else "_plus_").join(parts)
    return name if len(name) <= MAX_LENGTH else None
