"""`derive-cells verify`: passes untouched modules, catches planted faults and names the array."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner

from derive_cells.cli import main
from derive_cells.derivation import derive
from derive_cells.emit import emit
from derive_cells.spec import load_cell

LSTM = {t: emit(derive(load_cell("lstm")), t) for t in ("numpy", "torch")}


def _module(tmp_path, target="numpy", old=None, new=None, name="lstm_bptt.py"):
    text = LSTM[target]
    if old is not None:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    path = tmp_path / name
    path.write_text(text)
    return path


# A shorter long case than the default (T=200, B=130): the faults here need no long sequence
# (tests/test_verify_coverage.py plants those that do, and runs the default sizes).
SHORT = ("--steps", "21", "--batch", "65")


def _verify(*args):
    result = CliRunner().invoke(main, ["verify", *args])
    return result.exit_code, result.stdout, result.stderr


def _failures(path, dtype="float64", sizes=SHORT):
    code, out, _ = _verify("--module", str(path), "--cell", "lstm", "--dtype", dtype,
                           "--format", "json", *sizes)
    rows = json.loads(out)
    return code, rows, [r for r in rows if not r["passed"]]


@pytest.mark.parametrize("target", ["numpy", "torch"])
def test_untouched_module_passes(tmp_path, target):
    code, rows, failed = _failures(_module(tmp_path, target), sizes=())
    assert code == 0 and not failed
    checks = {r["check"] for r in rows}
    assert {"vs torch.nn.LSTM forward", "vs torch.nn.LSTM gradients", "vs autograd gradients",
            "finite differences", "per-step Jacobian", "adjoint via state_T only"} <= checks
    assert all(r["max_rel_error"] <= r["tolerance"] for r in rows)


FAULTS = {
    "flipped sign": (
        {"numpy": ("d_z_f = d_f * f * (1 - f)", "d_z_f = -d_f * f * (1 - f)"),
         "torch": ("d_z_f = _dsigmoid(d_f, f)", "d_z_f = -_dsigmoid(d_f, f)")},
        "vs autograd gradients", "d_params[weight_hh]", "W_hf"),
    "gate blocks swapped": (
        {t: ("_cat((d_z_i, d_z_f, d_z_g, d_z_o))", "_cat((d_z_f, d_z_i, d_z_g, d_z_o))")
         for t in ("numpy", "torch")},
        "vs torch.nn.LSTM gradients", "d_params[weight_ih]", ("W_ii", "W_if")),
    "bias gradient dropped": (
        {t: ("g['b_hi'] = sum_h_prev_W[0]", "g['b_hi'] = 0 * sum_h_prev_W[0]")
         for t in ("numpy", "torch")},
        "vs torch.nn.LSTM gradients", "d_params[bias_hh]", "b_hi"),
    "final-state gradient dropped": (
        {t: ("d_state = _initial(d_state_T, x, B, H)", "d_state = _initial(None, x, B, H)")
         for t in ("numpy", "torch")},
        "adjoint via state_T only", "d_state0[c]", ""),
    "perturbed forward": (
        {t: ("    h = o * tanh_c\n", "    h = o * tanh_c * (1 + 1e-7)\n")
         for t in ("numpy", "torch")},
        "vs torch.nn.LSTM forward", "outputs", ""),
}


@pytest.mark.parametrize("target", ["numpy", "torch"])
@pytest.mark.parametrize("fault", list(FAULTS))
def test_planted_fault_is_caught_and_named(tmp_path, fault, target):
    edits, check, array, block = FAULTS[fault]
    code, rows, failed = _failures(_module(tmp_path, target, *edits[target]))
    assert code == 1
    named = [r for r in failed if r["check"] == check and r["array"] == array]
    assert named, f"{fault}: no failure of {array} in {check}; got " + \
        ", ".join(f"{r['check']}/{r['array']}" for r in failed)
    if block:
        blocks = (block,) if isinstance(block, str) else block
        assert named[0]["block"] in blocks
    if fault == "bias gradient dropped":  # only that block of that parameter is wrong
        assert {r["array"] for r in failed if "gradients" in r["check"]} == {"d_params[bias_hh]"}
    if fault == "final-state gradient dropped":
        assert not [r for r in failed if r["check"] == "adjoint via outputs only"]
    if fault == "perturbed forward":  # reported as a forward mismatch, before any gradient
        first = next(i for i, r in enumerate(rows) if not r["passed"])
        assert "forward" in rows[first]["check"]


def test_table_names_check_array_block_and_element(tmp_path):
    path = _module(tmp_path, "numpy", *FAULTS["bias gradient dropped"][0]["numpy"])
    code, out, _ = _verify(*SHORT, "--module", str(path), "--cell", "lstm", "--dtype", "float64")
    assert code == 1
    line = next(ln for ln in out.splitlines() if ln.startswith("FAIL lstm numpy float64 vs torch"))
    assert "d_params[bias_hh] block b_hi: worst element at (" in line
    assert re.search(r"expected -?[0-9.e-]+, got -?0; relative error", line)


def test_junit_report_has_a_testcase_per_check(tmp_path):
    path = _module(tmp_path, "numpy", *FAULTS["flipped sign"][0]["numpy"])
    report = tmp_path / "verify.xml"
    code, out, _ = _verify(*SHORT, "--module", str(path), "--cell", "lstm", "--dtype", "float64",
                           "--format", "junit", "-o", str(report))
    assert code == 1 and out == ""
    suite = ET.parse(report).getroot()
    cases = suite.findall("testcase")
    assert len(cases) == int(suite.get("tests")) >= 10
    failing = [c for c in cases if c.find("failure") is not None]
    assert int(suite.get("failures")) == len(failing) > 0
    assert any("d_params[weight_hh] block W_hf" in c.find("failure").text for c in failing)


def test_verify_cells_and_user_spec_json_is_clean_stdout(tmp_path):
    spec = tmp_path / "indrnn.toml"
    spec.write_text('name = "indrnn"\ninput = "x"\nstate = ["h"]\noutput = "h"\n'
                    '[equations]\nh = "tanh(W @ x + u * h_prev + b)"\n')
    code, out, err = _verify("gru", str(spec), "--dtype", "float64", "--format", "json")
    assert code == 0
    rows = json.loads(out)  # progress went to stderr, so stdout is pure JSON
    assert {r["cell"] for r in rows} == {"gru", "indrnn"}
    assert {r["backend"] for r in rows} == {"numpy", "torch"}
    keys = {"cell", "backend", "dtype", "check", "array", "max_rel_error", "tolerance", "passed"}
    assert all(keys <= set(r) for r in rows)
    assert "verify: gru numpy float64" in err
    assert not any(r["check"].startswith("vs torch.nn") for r in rows if r["cell"] == "indrnn")


@pytest.mark.parametrize("args, message", [
    ([], "name at least one cell"),
    (["nope"], "unknown cell"),
    (["--module", "x.py"], "x.py: no such file"),
    (["--cell", "lstm"], "--cell names the cell of a --module file"),
    (["--module", "missing.py", "--cell", "lstm"], "no such file"),
    (["lstm", "--backend", "jax"], "Invalid value for '--backend'"),
])
def test_usage_and_input_errors_exit_2(args, message):
    code, out, err = _verify(*args)
    assert code == 2
    assert message in err
    assert "Traceback" not in out + err


def test_the_cell_of_a_module_is_read_from_its_header(tmp_path):
    """--module without --cell: the regenerate command in the header names the cell (a built-in,
    or a spec path found from the working directory or beside the module); a planted fault
    still exits 1, a file with no such header exits 2."""
    path = _module(tmp_path, "numpy")
    code, out, _ = _verify(*SHORT, "--module", str(path), "--dtype", "float64", "--format", "json")
    assert code == 0 and {r["cell"] for r in json.loads(out)} == {"lstm"}
    faulty = _module(tmp_path, "numpy", "d_f = d_c * c_prev", "d_f = -d_c * c_prev",
                     name="faulty.py")
    assert _verify(*SHORT, "--module", str(faulty), "--dtype", "float64")[0] == 1
    spec = tmp_path / "specs" / "mine.toml"
    spec.parent.mkdir()
    spec.write_text((Path(__file__).parent / "specs" / "gru_cho.toml").read_text())
    kept = tmp_path / "specs" / "mine_bptt.py"
    kept.write_text(emit(derive(load_cell(str(spec))), "torch",
                         command="derive-cells mine.toml --emit torch"))
    code, out, err = _verify(*SHORT, "--module", str(kept), "--dtype", "float64", "--format",
                             "json")
    assert code == 0, err
    bare = tmp_path / "bare.py"
    bare.write_text('"""An emitted module, once."""\nSTATE = ("h",)\n')
    code, _, err = _verify("--module", str(bare))
    assert code == 2 and "names no cell" in err and "give --cell" in err


def test_a_file_that_is_not_an_emitted_module_exits_2(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("x = 1\n")
    code, _, err = _verify("--module", str(bad), "--cell", "lstm")
    assert code == 2 and "not an emitted module" in err
    wrong = _module(tmp_path, "numpy", name="gru_for_lstm.py")
    code, _, err = _verify("--module", str(wrong), "--cell", "gru")
    assert code == 2 and "does not run as a module of gru" in err


# Variable-length faults: the emitted module with its forward wrapped, as a user's edited file.
LENGTH_FAULTS = {
    "lengths ignored": (
        "def forward(x, state0, params, lengths=None, reverse=False, **kw):\n"
        "    return _unwrapped_forward(x, state0, params, reverse=reverse, **kw)\n",
        {"variable lengths", "variable lengths, reverse"}, "outputs at padded steps"),
    "reverse ignored": (
        "def forward(x, state0, params, lengths=None, reverse=False, **kw):\n"
        "    return _unwrapped_forward(x, state0, params, lengths=lengths, **kw)\n",
        {"variable lengths, reverse"}, "outputs"),
    "backward of the unpadded run": (  # right forward values, a cache from all T steps
        "def forward(x, state0, params, lengths=None, reverse=False, **kw):\n"
        "    out, s_T, _ = _unwrapped_forward(x, state0, params, lengths=lengths,\n"
        "                                     reverse=reverse, **kw)\n"
        "    return out, s_T, _unwrapped_forward(x, state0, params, reverse=reverse, **kw)[2]\n",
        {"variable lengths", "variable lengths, reverse"}, "d_params[weight_hh]"),
}


@pytest.mark.parametrize("target", ["numpy", "torch"])
@pytest.mark.parametrize("fault", list(LENGTH_FAULTS))
def test_planted_lengths_fault_is_caught_and_named(tmp_path, fault, target):
    wrapper, checks, array = LENGTH_FAULTS[fault]
    path = _module(tmp_path, target)
    path.write_text(path.read_text() + "\n\n_unwrapped_forward = forward\n\n\n" + wrapper)
    code, rows, failed = _failures(path)
    assert code == 1
    assert {r["check"] for r in failed} == checks  # every other check still passes
    for check in checks:
        assert [r for r in failed if r["check"] == check and r["array"] == array], \
            f"{fault}: no failure of {array} in {check}; got " + \
            ", ".join(f"{r['check']}/{r['array']}" for r in failed)
    if fault == "backward of the unpadded run":  # the forward values are right
        assert not [r for r in failed if not r["array"].startswith("d_")]


def test_untouched_module_runs_variable_lengths_both_ways(tmp_path):
    code, rows, failed = _failures(_module(tmp_path, "torch"), dtype="float32")
    assert code == 0 and not failed
    lengths = [r for r in rows if r["check"].startswith("variable lengths")]
    assert {r["check"] for r in lengths} == {"variable lengths", "variable lengths, reverse"}
    arrays = {r["array"] for r in lengths}
    assert {"outputs", "outputs at padded steps", "state_T[h]", "state_T[c]", "d_x",
            "d_state0[h]", "d_state0[c]", "d_params[weight_ih]", "d_params[weight_hh]",
            "d_params[bias_ih]", "d_params[bias_hh]"} == arrays
    assert all(r["tolerance"] == 1e-4 for r in lengths)


def test_a_module_without_lengths_is_checked_without_them(tmp_path):
    path = _module(tmp_path, "numpy")
    path.write_text(path.read_text() + "\n\n_unwrapped_forward = forward\n\n\n"
                    "def forward(x, state0, params):\n"
                    "    return _unwrapped_forward(x, state0, params)\n")
    code, rows, failed = _failures(path)
    assert code == 0 and not failed
    assert not [r for r in rows if r["check"].startswith("variable lengths")]


def test_several_modules_each_named_by_its_header(tmp_path):
    """--module A.py B.py (pre-commit's form): every file checked against its own cell, results
    labelled by file; one faulty file makes the run exit 1 and is the one named."""
    good = _module(tmp_path, "numpy", name="good_bptt.py")
    torch_one = _module(tmp_path, "torch", name="torch_bptt.py")
    faulty = _module(tmp_path, "numpy", "d_f = d_c * c_prev", "d_f = -d_c * c_prev",
                     name="faulty_bptt.py")
    code, out, _ = _verify(*SHORT, "--module", str(good), str(torch_one), "--dtype", "float64",
                           "--format", "json")
    assert code == 0
    assert {r["cell"] for r in json.loads(out)} == {f"{good} (lstm)", f"{torch_one} (lstm)"}
    code, out, _ = _verify(*SHORT, "--module", str(good), str(faulty), "--dtype", "float64",
                           "--format", "json")
    assert code == 1
    assert {r["cell"] for r in json.loads(out) if not r["passed"]} == {f"{faulty} (lstm)"}


def test_emit_check_finds_a_stale_module(tmp_path):
    fresh = _module(tmp_path, "numpy", name="fresh_bptt.py")
    result = CliRunner().invoke(main, ["emit", "--check", str(fresh)])
    assert result.exit_code == 0, result.stderr
    stale = _module(tmp_path, "numpy", "d_f = d_c * c_prev", "d_f = -d_c * c_prev",
                    name="stale_bptt.py")
    result = CliRunner().invoke(main, ["emit", "--check", str(fresh), str(stale)])
    assert result.exit_code == 1
    assert f"{stale}: stale" in result.stderr and str(fresh) not in result.stderr
    bare = tmp_path / "bare.py"
    bare.write_text('"""No header."""\n')
    result = CliRunner().invoke(main, ["emit", "--check", str(bare)])
    assert result.exit_code == 2 and "names no cell" in result.stderr
