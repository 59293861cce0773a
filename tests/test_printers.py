"""What the code printers print, asserted directly: the author's term order, the adjoint first,
float literals, powers, and Torch's fused derivative kernels."""

from __future__ import annotations

import doctest

import sympy

import derive_cells.emit.printers
import derive_cells.naming
from derive_cells.emit.printers import CellCodePrinter, TorchCodePrinter, term_ranks
from derive_cells.functions import Sigmoid, Tanh

d, s, t, f, c_prev, i, g, z, n, h_prev, d_c = sympy.symbols(
    "d s t f c_prev i g z n h_prev d_c")


def test_docstring_examples_run():
    for module in (derive_cells.emit.printers, derive_cells.naming):
        failures, tried = doctest.testmod(module)
        assert tried and not failures


def test_spec_order_and_adjoint_first():
    p = CellCodePrinter({})
    ranks = term_ranks("(1 - z) * n + z * h_prev")
    assert p.doprint(z * h_prev + (1 - z) * n, ranks=ranks) == "(1 - z) * n + z * h_prev"
    assert p.doprint(h_prev - n, ranks=ranks) == "h_prev - n"  # positive term first
    d_z = sympy.Symbol("d_z")
    assert p.doprint((h_prev - n) * d_z, ranks=ranks) == "d_z * (h_prev - n)"
    lstm = term_ranks("f * c_prev + i * g")
    assert p.doprint(d_c + d * (1 - t**2), ranks=lstm) == "d_c + d * (1 - t**2)"
    assert p.doprint(c_prev * sympy.Symbol("d_f"), ranks=lstm) == "d_f * c_prev"


def test_a_name_that_stands_for_an_expression_ranks_with_its_parts():
    ranks = term_ranks("tanh(W_in @ x + b_in + r * (W_hn @ h_prev + b_hn))",
                       {"W_in_x": sympy.Symbol("W_in") * sympy.Symbol("x"),
                        "W_hn_h_prev": sympy.Symbol("W_hn") * sympy.Symbol("h_prev")})
    w_in_x, r, w_hn = sympy.symbols("W_in_x r W_hn_h_prev")
    assert CellCodePrinter({}).doprint(w_hn * r + w_in_x, ranks=ranks) == \
        "W_in_x + r * W_hn_h_prev"


def test_numbers_print_as_python_literals():
    p = CellCodePrinter({})
    assert p.doprint(sympy.Rational(1, 2) * s, ranks={"s": 0}) == "0.5 * s"
    assert p.doprint(sympy.Rational(1, 3) * s) == "0.3333333333333333 * s"
    assert p.doprint(sympy.sqrt(s)) == "s**0.5"
    assert p.doprint(sympy.Integer(2**60) * s) == "1.152921504606847e+18 * s"


def test_derivatives_print_with_the_activation_and_torch_fuses_them():
    sig, th = sympy.symbols("sig th")
    expr_s, expr_t = d * sig * (1 - sig), d * (1 - th**2)
    assert CellCodePrinter({}).doprint(expr_s, ranks={"d": 0, "sig": 1}) == "d * sig * (1 - sig)"
    torch = TorchCodePrinter({})
    assert torch.doprint(expr_s) == "_dsigmoid(d, sig)"
    assert torch.doprint(expr_t) == "_dtanh(d, th)"


def test_the_printer_records_the_helpers_it_calls():
    p = CellCodePrinter({})
    p.doprint(Sigmoid(s) + Tanh(t))
    assert p.used == {Sigmoid, Tanh}
