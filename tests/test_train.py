"""Training with the derived gradients: agreement with torch.nn + autograd along whole SGD runs,
NumPy optimizers against torch.optim, a torch-free NumPy backend, and the command line."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from derive_cells.derivation import derive
from derive_cells.spec import load_cell
from derive_cells.train.check import agreement
from derive_cells.train.model import NumpyModel
from derive_cells.train.optim import SGD, Adam, clip_by_global_norm
from derive_cells.train.run import Config, Variant, train, variants
from derive_cells.train.tasks import make_task
from derive_cells.verify.modules import emit_and_import

SPECS = Path(__file__).parent / "specs"
ROOT = Path(__file__).parent.parent
SMALL = Config(hidden=8, embed=6, batch_size=16, lr=0.3, seed=3)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("train")


def variant(name: str, folder: Path, forget_bias=None) -> Variant:
    deriv = derive(load_cell(name))
    modules = {t: emit_and_import(deriv, t, folder) for t in ("numpy", "torch")}
    return Variant(deriv.cell.name, deriv, modules, forget_bias)


@pytest.fixture(scope="module")
def sentiment():
    return make_task("sentiment", seed=5, n_train=160, n_test=40)


# rnn, lstm, gru against torch.nn; the others against autograd over the spec: a simplified GRU,
# and a user spec whose output is a read-out of the state (the loss reads the outputs at each
# row's last step, not a state)
@pytest.mark.parametrize("name", ["rnn", "lstm", "gru", "simplified_gru",
                                  str(SPECS / "readout.toml")])
def test_sgd_run_agrees_with_torch(name, folder, sentiment):
    v = variant(name, folder, forget_bias=1.0 if name == "lstm" else None)
    batches = [sentiment.train.lengths[i:i + 16] for i in range(0, 160, 16)]
    assert all(len(set(b)) > 1 for b in batches)  # every batch has rows of several lengths
    a = agreement(v, sentiment, SMALL, steps=24)
    assert a.steps == 24
    assert a.max_loss_error <= 1e-9 and a.max_param_error <= 1e-9, a.as_dict()
    expected = {"rnn": "torch.nn.RNN", "lstm": "torch.nn.LSTM", "gru": "torch.nn.GRU"}
    assert a.reference.startswith(expected.get(name, "autograd over the spec"))


def _wrong(module, name):
    """The emitted module, but its backward is off by one part in 1e6 in one gradient."""
    wrong = types.ModuleType("wrong")
    wrong.__dict__.update({k: v for k, v in vars(module).items() if not k.startswith("__")})

    def backward(*args):
        d_x, d_s, d_p = module.backward(*args)
        return d_x, d_s, {**d_p, name: d_p[name] * (1 + 1e-6)}

    wrong.backward = backward
    return wrong


def test_agreement_catches_a_gradient_off_by_one_part_in_a_million(folder, sentiment):
    v = variant("gru", folder)
    v.modules = {**v.modules, "numpy": _wrong(v.modules["numpy"], "bias_hh")}
    a = agreement(v, sentiment, SMALL, steps=20)
    assert not a.passed
    assert a.max_param_error > 1e-9


def test_torch_backend_takes_the_numpy_backend_s_steps(folder, sentiment):
    """The emitted Torch module (derived backward in an autograd.Function) and the NumPy module
    give the same losses along a run, with Adam and clipping."""
    v = variant("lstm", folder)
    config = Config(hidden=8, embed=6, batch_size=16, epochs=2, seed=1, dtype="float64",
                    clip=0.5)
    a = train(v, sentiment, config, decay=False)
    b = train(v, sentiment, Config(**{**config.__dict__, "backend": "torch"}), decay=False)
    assert len(a.step_losses) == 20
    np.testing.assert_allclose(a.step_losses, b.step_losses, rtol=1e-9)
    assert a.final["test_metric"] == b.final["test_metric"]


def test_optimizers_match_torch_optim():
    rng = np.random.default_rng(0)
    shapes = {"a": (3, 4), "b": (5,)}
    start = {n: rng.standard_normal(s) for n, s in shapes.items()}
    grads = [{n: rng.standard_normal(s) * 10 for n, s in shapes.items()} for _ in range(6)]
    for ours, theirs in ((lambda p: SGD(p, lr=0.1, momentum=0.9),
                          lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9)),
                         (lambda p: Adam(p, lr=0.05), lambda p: torch.optim.Adam(p, lr=0.05))):
        mine = {n: v.copy() for n, v in start.items()}
        tensors = {n: torch.tensor(v, requires_grad=True) for n, v in start.items()}
        opt, ref = ours(mine), theirs(list(tensors.values()))
        for g in grads:
            g_mine = {n: v.copy() for n, v in g.items()}
            clip_by_global_norm(g_mine, 5.0)
            for n, t in tensors.items():
                t.grad = torch.tensor(g[n])
            torch.nn.utils.clip_grad_norm_(list(tensors.values()), 5.0)
            opt.step(g_mine)
            ref.step()
            for n in shapes:
                np.testing.assert_allclose(mine[n], tensors[n].detach().numpy(), rtol=1e-12)


def test_forget_bias_sets_the_measured_memory(folder, sentiment):
    """The decay rate beside the learning results: LSTM's cell-state rate at initialisation
    follows sigma(b_f) (0.5 at b_f = 0, 0.73 at 1, 0.95 at 3), measured at the run's weights."""
    lstm = derive(load_cell("lstm"))
    pairs = variants([lstm, derive(load_cell("rnn"))], [0.0, 3.0])
    assert [b for _, b in pairs] == [0.0, 3.0, None]
    rates = {}
    for b in (0.0, 3.0):
        run = train(variant("lstm", folder, b), sentiment,
                    Config(hidden=8, embed=6, epochs=1, seed=2), decay=True)
        rates[b] = run.decay["rates"]["c"]
    assert 0.4 < rates[0.0] < 0.66  # sigma(0) = 0.5, on the task's own sequences
    assert 0.9 < rates[3.0] < 0.97


def test_lstm_learns_the_sentiment_task(folder):
    task = make_task("sentiment", seed=0, n_train=2000, n_test=300)
    run = train(variant("lstm", folder), task, Config(epochs=4, seed=0), decay=False)
    assert run.epochs[0]["test_metric"] < 0.7  # chance-like before training
    assert run.final["test_metric"] > 0.9
    assert run.final["train_loss"] < run.epochs[0]["train_loss"] / 3
    assert run.reached is not None and run.reached <= 4


def test_adding_loss_is_the_mse(folder):
    """Regression: the loss is the squared error of the linear read-out, computed here from
    the model's own scores."""
    task = make_task("adding", steps=12, seed=1, n_train=64, n_test=32)
    v = variant("gru", folder)
    run = train(v, task, Config(hidden=8, epochs=2, seed=0, dtype="float64"), decay=False)
    model = NumpyModel(v.modules["numpy"], _init(v, task), "regression")
    z, _ = model.scores(task.test)
    assert run.epochs[0]["test_metric"] == pytest.approx(np.mean((z - task.test.targets) ** 2))
    assert run.epochs[0]["test_loss"] == pytest.approx(run.epochs[0]["test_metric"])


def _init(v, task):
    from derive_cells.train.model import init_params

    return init_params(v.modules["numpy"], v.deriv, task.train, 16, 8, 0, None, "float64")


BLOCK_TORCH = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this test")
sys.meta_path.insert(0, Block())
"""


def test_numpy_backend_imports_no_torch(tmp_path):
    """The whole loop in NumPy: the API, and the command with --no-decay."""
    script = tmp_path / "run.py"
    script.write_text(BLOCK_TORCH + """
import tempfile
from pathlib import Path
from derive_cells.derivation import derive
from derive_cells.spec import load_cell
from derive_cells.verify.modules import emit_and_import
from derive_cells.train.tasks import make_task
from derive_cells.train.run import Config, Variant, train
deriv = derive(load_cell("lstm"))
module = emit_and_import(deriv, "numpy", Path(tempfile.mkdtemp()))
task = make_task("sentiment", n_train=64, n_test=16)
run = train(Variant("lstm", deriv, {"numpy": module}), task, Config(epochs=1, hidden=4),
            decay=False)
assert len(run.step_losses) == 2
sys.argv = ["derive-cells", "train", "gru", "--epochs", "1", "--train-size", "32",
            "--test-size", "8", "--no-decay", "--format", "json"]
from derive_cells.cli import main
try:
    main()
finally:
    assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules), "torch loaded"
""")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["runs"][0]["cell"] == "gru"


def cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "derive_cells.cli", *args], capture_output=True,
                          text=True, cwd=cwd)


def test_cli_check_passes_and_reports(tmp_path):
    done = cli("train", "rnn", str(SPECS / "peephole_lstm.toml"), "--check", "--hidden", "6",
               "--embed", "5", "--train-size", "96", "--check-steps", "20", "--format", "json")
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert [r["steps"] for r in rows] == [20, 20] and all(r["passed"] for r in rows)
    assert all(r["max_loss_error"] < 1e-12 for r in rows)


def test_cli_json_is_the_runs_and_the_plot_draws_them(tmp_path):
    plot = tmp_path / "curves.svg"
    done = cli("train", "lstm", "--task", "distance", "--distance", "2,4", "--epochs", "2",
               "--hidden", "6", "--train-size", "64", "--test-size", "32", "--forget-bias", "0,1",
               "--format", "json", "--plot", str(plot))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["sweep"] == "distance"
    assert [(r["cell"], r["info"]["distance"]) for r in result["runs"]] == [
        ("lstm (b_f=0)", 2), ("lstm (b_f=1)", 2), ("lstm (b_f=0)", 4), ("lstm (b_f=1)", 4)]
    for r in result["runs"]:
        assert len(r["step_losses"]) == 2 * 2 and len(r["epochs"]) == 3
        assert r["decay"]["rates"]["c"] == pytest.approx(0.5 if "0)" in r["cell"] else 0.73,
                                                          abs=0.08)
    svg = plot.read_text()
    assert 'id="sweep-lstm__b_f_0_"' in svg and 'id="sweep-lstm__b_f_1_"' in svg
    again = cli("train", "lstm", "--task", "distance", "--distance", "2,4", "--epochs", "2",
                "--hidden", "6", "--train-size", "64", "--test-size", "32", "--forget-bias",
                "0,1", "--format", "json")
    assert [r["step_losses"] for r in json.loads(again.stdout)["runs"]] == \
        [r["step_losses"] for r in result["runs"]]  # deterministic


@pytest.mark.parametrize("args, message", [
    (["rnn", "--distance", "3"], "--distance applies to --task distance only"),
    (["rnn", "--task", "adding", "--distance", "3"], "--distance applies"),
    (["rnn", "--plot", "x.pdf"], "must end in .svg or .png"),
    (["rnn", "--forget-bias", "1"], "needs a cell with a forget gate"),
    (["rnn", "--distance", "1,x", "--task", "distance"], "comma-separated list"),
    (["rnn", "--forget-bias", "nan"], "must be a number"),
    (["nocell"], "nocell"),
])
def test_cli_refuses_bad_input(args, message):
    done = cli("train", *args, "--no-decay")
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("backend", ["numpy", "torch"])
def test_cli_a_diverging_run_exits_1_saying_where(backend):
    done = cli("train", "rnn", "--task", "adding", "--steps", "20", "--optimizer", "sgd",
               "--lr", "100", "--clip", "0", "--epochs", "3", "--no-decay", "--train-size",
               "256", "--backend", backend)
    assert done.returncode == 1
    assert "rnn diverged at epoch 1, step" in done.stderr and "smaller --lr" in done.stderr
    assert "Traceback" not in done.stderr and "Warning" not in done.stderr


def test_cli_reviews_archive_with_a_wrong_hash_exits_2(tmp_path):
    """A file in the cache under the archive's name that is not the archive: refused by hash,
    nothing downloaded, exit 2."""
    from derive_cells.train import reviews

    (tmp_path / reviews.SDIST).write_bytes(b"not the archive")
    done = cli("train", "rnn", "--task", "reviews", "--data-dir", str(tmp_path), "--no-decay")
    assert done.returncode == 2, done.stderr
    assert reviews.SHA256 in done.stderr
    assert "Traceback" not in done.stderr


def test_report_learning_section_from_a_saved_result(tmp_path):
    """`report --train RESULT.json`: the Learning section shows that result's numbers and plots,
    in HTML and in a LaTeX document that compiles."""
    from tests.test_reports import need

    saved = tmp_path / "result.json"
    done = cli("train", "rnn", "gru", "--epochs", "2", "--hidden", "6", "--train-size", "64",
               "--test-size", "32", "--format", "json", "-o", str(saved), "--no-decay")
    assert done.returncode == 0, done.stderr
    result = json.loads(saved.read_text())
    html = tmp_path / "r.html"
    done = cli("report", "rnn", "gru", "--train", str(saved), "-o", str(html))
    assert done.returncode == 0, done.stderr
    page = html.read_text()
    section = page[page.index('<section id="learning">'):]
    section = section[:section.index("</section>")]
    for run in result["runs"]:
        assert f"{run['epochs'][-1]['test_metric']:.3f}" in section
        assert f'id="learning-curves-test_metric-{run["cell"]}"' in section
    assert '<a href="#learning">Learning</a>' in page
    tex = tmp_path / "r.tex"
    done = cli("report", "rnn", "gru", "--train", str(saved), "-o", str(tex))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "r-learning-curves.pdf").read_bytes().startswith(b"%PDF")
    need("pdflatex")
    run = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", tex.name],
                         cwd=tmp_path, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-2000:]


@pytest.mark.parametrize("content, message", [
    (None, "neither a task"),
    ("{not json", "not a result of derive-cells train"),
    ('{"runs": []}', "not a result of derive-cells train"),
])
def test_report_refuses_a_bad_train_argument(tmp_path, content, message):
    path = tmp_path / "bad.json"
    if content is not None:
        path.write_text(content)
    argument = str(path) if content is not None else "sentimental"
    done = cli("report", "rnn", "--train", argument, "-o", str(tmp_path / "r.html"))
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert not (tmp_path / "r.html").exists()
