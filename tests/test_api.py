"""The Python API (derive_cells.load, Cell, list_cells, results): the same values as the
command line's JSON, modules imported from a cache (nothing written to the working directory),
and rich displays with the equations as MathML and LaTeX."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch

import derive_cells as dc
from derive_cells.spec import SpecError, builtin_cells

ROOT = Path(__file__).parent.parent


def cli(*args, cwd=ROOT):
    done = subprocess.run([sys.executable, "-m", "derive_cells.cli", *args],
                          capture_output=True, text=True, cwd=cwd)
    return done


@pytest.fixture(autouse=True)
def cache(fresh_module_cache):
    return fresh_module_cache


def test_list_cells_and_load():
    cells = dc.list_cells()
    assert list(cells) == list(builtin_cells())
    for name, path in builtin_cells().items():
        assert cells[name] == tomllib.loads(path.read_text())["title"]
    lstm = dc.load("lstm")
    assert (lstm.name, lstm.state, lstm.input, lstm.output) == ("lstm", ("h", "c"), "x", "h")
    assert ("c", "f * c_prev + i * g") in lstm.equations
    assert dc.load(builtin_cells()["gru"]).name == "gru"  # by path


def test_load_refuses_a_bad_spec(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\ninput = "x"\nstate = ["h"]\n[equations]\nh = "tanh(W @ x +"\n')
    with pytest.raises(SpecError, match="bad.toml"):
        dc.load(bad)
    with pytest.raises(SpecError, match="nosuchcell"):
        dc.load("nosuchcell")


@pytest.mark.parametrize("target", ["numpy", "torch"])
def test_emit_is_what_the_command_prints(target):
    assert dc.load("gru").emit(target) == cli("gru", "--emit", target).stdout


@pytest.mark.parametrize("target", ["numpy", "torch"])
def test_module_is_imported_from_the_cache_and_matches_torch_nn(target, cache, tmp_path,
                                                               monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    module = dc.load("lstm").module(target)
    assert Path(module.__file__).parent == cache
    assert "d_params" in inspect.getsource(module.backward)  # a real file: inspect works
    assert list(work.iterdir()) == []  # nothing written where the user is
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(3, 4).double()
    x = torch.randn(5, 2, 3, dtype=torch.float64)
    out, _ = lstm(x)
    out.sum().backward()
    params = {k.removesuffix("_l0"): v.detach() for k, v in lstm.state_dict().items()}
    if target == "numpy":
        params = {k: v.numpy() for k, v in params.items()}
        outputs, _, cache_ = module.forward(x.numpy(), {}, params)
        _, _, grads = module.backward(np.ones_like(outputs), None, cache_)
    else:
        outputs, _, cache_ = module.forward(x, {}, params)
        _, _, grads = module.backward(torch.ones_like(outputs), None, cache_)
    np.testing.assert_allclose(np.asarray(outputs), out.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(np.asarray(grads["weight_hh"]), lstm.weight_hh_l0.grad.numpy(),
                               rtol=1e-10)
    assert dc.load("lstm").module(target).__file__ == module.__file__  # same source, same file


def test_verify_equals_the_command_s_json():
    result = dc.load("rnn").verify()
    done = cli("verify", "rnn", "--format", "json")
    assert done.returncode == 0, done.stderr
    assert result.results == json.loads(done.stdout)
    assert result.passed and not result.failed
    html = result._repr_html_()
    assert "<table>" in html and "vs torch.nn" in html


def test_decay_equals_the_command_s_json():
    result = dc.load("gru").decay(steps=30, forget_bias=None, seed=3)
    done = cli("decay", "gru", "--steps", "30", "--seed", "3", "--format", "json")
    assert result.as_dict() == json.loads(done.stdout)
    assert result.rate_per_step["h"] == json.loads(done.stdout)["rate_per_step"]["h"]
    assert "<svg" in result._repr_html_() and "gru" in repr(result)


def test_train_equals_the_command_s_json():
    result = dc.load("lstm").train("distance", distances=[3], epochs=2, hidden=6,
                                   train_size=64, test_size=32, forget_bias=1.0)
    done = cli("train", "lstm", "--task", "distance", "--distance", "3", "--epochs", "2",
               "--hidden", "6", "--train-size", "64", "--test-size", "32", "--forget-bias", "1",
               "--format", "json")
    theirs = json.loads(done.stdout)
    mine = result.as_dict()
    for a, b in zip(mine["runs"], theirs["runs"], strict=True):
        assert a["step_losses"] == b["step_losses"]
        assert [e["test_metric"] for e in a["epochs"]] == [e["test_metric"] for e in b["epochs"]]
        untimed = lambda d: {k: v for k, v in d.items() if k != "seconds"}  # noqa: E731
        assert untimed(a["decay"]) == untimed(b["decay"])
        assert [e["decay_rate"] for e in a["epochs"]] == [e["decay_rate"] for e in b["epochs"]]
    assert mine["description"] == theirs["description"]
    assert "<svg" in result._repr_html_()


def test_reprs_show_the_equations():
    lstm = dc.load("lstm")
    html = lstm._repr_html_()
    assert html.count("<math") == len(lstm.spec.equations)
    d = lstm.derivation
    assert len(d.forward) == 6 and len(d.adjoints) > 6 and d.gradients and d.jacobian
    latex = d._repr_latex_()
    assert latex.startswith("$$") and r"\sigma" in latex and r"\tanh" in latex
    assert all(e.latex in latex for e in d.adjoints)
    assert all(e.mathml in d._repr_html_() for e in d.forward + d.adjoints)
    assert "$$" in d._repr_markdown_() and lstm._repr_latex_().count(r"\\") == 6
    assert "Backward (BPTT) equations" in d._repr_html_()


def test_report_is_what_the_command_writes(tmp_path):
    mine, theirs = tmp_path / "api.html", tmp_path / "cli.html"
    assert dc.report(["rnn"], mine) == mine
    done = cli("report", "rnn", "-o", str(theirs))
    assert done.returncode == 0, done.stderr
    assert mine.read_bytes() == theirs.read_bytes()


def test_api_ignores_user_files_in_the_working_directory(tmp_path):
    for name in ("verify.py", "derive.py", "reports/__init__.py"):
        path = tmp_path / name
        path.parent.mkdir(exist_ok=True)
        path.write_text("raise ImportError('a user file was imported')\n")
    code = ("import derive_cells as dc\n"
            "r = dc.load('rnn').verify(dtypes=('float64',))\n"
            "assert r.passed, r\n"
            "print(dc.load('rnn').decay(steps=10))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path, env={**os.environ,
                                             "DERIVE_CELLS_CACHE": str(tmp_path / "c")})
    assert done.returncode == 0, done.stderr
    assert "DecayResult rnn" in done.stdout


def test_the_module_docstring_examples_run():
    import doctest

    import derive_cells.api

    failures, tried = doctest.testmod(derive_cells.api)
    assert tried >= 3 and failures == 0
