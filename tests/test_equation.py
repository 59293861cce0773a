"""One equation's text (derive/equation.py): depth counts nesting, not the length of a run of one
operator level, and the canonical text is what ast.unparse prints, without its recursion."""

from __future__ import annotations

import ast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from derive_cells.equation import MAX_DEPTH, EquationError, depth, parse, text

ATOMS = st.sampled_from(["a", "b", "h_prev", "x", "0", "1", "2.5", "1e-07", "3"])


def _combine(children):
    binary = st.tuples(children, st.sampled_from(["+", "-", "*", "/", "@", "**"]), children).map(
        lambda t: f"{t[0]} {t[1]} {t[2]}")
    return st.one_of(binary, children.map(lambda c: f"({c})"),
                     children.map(lambda c: f"-{c}"), children.map(lambda c: f"+{c}"),
                     children.map(lambda c: f"tanh({c})"))


EXPRESSIONS = st.recursive(ATOMS, _combine, max_leaves=30)


@given(EXPRESSIONS)
def test_text_is_what_ast_unparse_prints(source):
    tree = ast.parse(source, mode="eval").body
    assert text(tree) == ast.unparse(tree)


@pytest.mark.parametrize(("source", "expected"), [
    ("h_prev", 1),
    ("a + b", 2),
    (" + ".join(["h_prev"] * 200), 2),  # a sum of any length: one level
    (" - ".join(["h_prev"] * 200), 2),
    (" * ".join(["h_prev"] * 30) + " / b", 2),
    ("a + b * c + d", 3),  # the product inside the sum is one level deeper
    ("a + (b + (c + d))", 4),  # parentheses written on the right nest
    ("tanh(a + b + c)", 3),
    ("-(-a)", 3),
])
def test_depth(source, expected):
    assert depth(parse(source)) == expected


def test_sum_of_1000_terms_prints_without_recursion():
    source = "+".join(["b"] * 999)
    assert len(source) < 2000
    assert text(parse(source)) == " + ".join(["b"] * 999)


@pytest.mark.parametrize(("source", "reason"), [
    ("tanh(" * (MAX_DEPTH + 1) + "a" + ")" * (MAX_DEPTH + 1), "nested deeper than"),
    ("a + (" * 45 + "a" + ")" * 45, "nested deeper than"),
    ("*".join(["a"] * 41), "a product of more than 40 factors"),
    ("a" + " + a" * 600, "longer than"),
    ("a +", "syntax error"),
])
def test_refused(source, reason):
    with pytest.raises(EquationError, match=reason):
        parse(source)


def test_product_of_40_factors_is_accepted():
    assert depth(parse("*".join(["a"] * 40))) == 2


def test_docstring_examples_run():
    import doctest

    import derive_cells.equation

    failures, tried = doctest.testmod(derive_cells.equation)
    assert tried and not failures
