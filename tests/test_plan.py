"""The plan stage's decisions, asserted directly: which biases fold into which product, how
products group by operand, which gates fuse into one block."""

from __future__ import annotations

from pathlib import Path

from derive_cells.derivation import derive
from derive_cells.emit.plan import make_plan
from derive_cells.spec import load_cell

SPECS = Path(__file__).parent / "specs"


def plan_of(name: str):
    deriv = derive(load_cell(name))
    return deriv, make_plan(deriv)


def test_lstm_folds_both_biases_of_every_gate_into_the_input_product_and_fuses_the_gates():
    deriv, plan = plan_of("lstm")
    assert plan.folded == {"W_ii_x": ["b_ii", "b_hi"], "W_if_x": ["b_if", "b_hf"],
                           "W_ig_x": ["b_ig", "b_hg"], "W_io_x": ["b_io", "b_ho"]}
    assert plan.bias_names == {"x_W": "b_x"}
    x, h = (next(g for g in deriv.groups if g.operand == o) for o in ("x", "h_prev"))
    assert x.hoisted and not h.hoisted  # the input's products: all steps at once
    assert [m for _, m in h.members] == ["W_hi", "W_hf", "W_hg", "W_ho"]
    fu = plan.fusion
    assert (fu.pre, fu.block) == ("z_ifgo", "ifgo")
    assert fu.pre_nodes == ["z_i", "z_f", "z_g", "z_o"]
    assert fu.runs == [("sigmoid", 0, 2), ("tanh", 2, 3), ("sigmoid", 3, 4)]


def test_gru_keeps_b_hn_with_the_recurrent_product_it_is_multiplied_through():
    """n = tanh(W_in x + b_in + r * (W_hn h_prev + b_hn)): b_hn is scaled by r, so it can only
    fold into the h_prev product; nothing fuses (r multiplies part of n's pre-activation)."""
    _, plan = plan_of("gru")
    assert plan.folded["W_hn_h_prev"] == ["b_hn"]
    assert plan.folded["W_in_x"] == ["b_in"]
    assert plan.folded["W_ir_x"] == ["b_ir", "b_hr"]
    assert plan.bias_names == {"h_prev_W": "b_h_prev", "x_W": "b_x"}
    assert plan.fusion is None


def test_a_bias_is_not_folded_into_a_product_another_product_reads():
    _, plan = plan_of(str(SPECS / "folded_bias_nested_product.toml"))
    inner = [n for n, bs in plan.folded.items() if bs]
    deriv = derive(load_cell(str(SPECS / "folded_bias_nested_product.toml")))
    operands = {g.operand for g in deriv.groups}
    assert not set(inner) & operands


def test_a_pre_activation_of_a_gate_named_z_is_z_pre():
    deriv, _ = plan_of("gru")
    names = [n.name for n in deriv.nodes]
    assert "z_pre" in names and "z_z" not in names
    assert deriv.node("z").expr.args[0].name == "z_pre"


def test_a_product_of_an_expression_is_named_for_it():
    deriv = derive(load_cell(str(SPECS / "gru_cho.toml")))
    (group,) = [g for g in deriv.groups if g.operand not in ("x", "h_prev")]
    assert group.operand == "r_h_prev" and group.members == [("U_n_r_h_prev", "U_n")]
    assert str(deriv.node("r_h_prev").expr) in ("h_prev*r", "r*h_prev")
