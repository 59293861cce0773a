"""The distribution installs one import name, derive_cells, and a user's own files named like
the project's folders (verify.py, reports/, derive.py) in the working directory change nothing."""

from __future__ import annotations

import json
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                           "--no-build-isolation", "-q", "-w", str(out), str(ROOT)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    (path,) = out.glob("derive_cells-*.whl")
    return path


def test_wheel_holds_one_top_level_package(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"derive_cells"}
    for needed in ("derive_cells/cells/lstm.toml", "derive_cells/verify/checks.py",
                   "derive_cells/reports/templates/report.html.j2", "derive_cells/cli.py",
                   "derive_cells/emit/module.py", "derive_cells/runtime/checks.py",
                   "derive_cells/verify/decay/measurement.py", "derive_cells/train/cli.py"):
        assert needed in names
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "derive-cells = derive_cells.cli:main" in zipfile.ZipFile(wheel).read(entry).decode()


def test_wheel_in_a_fresh_environment(wheel, tmp_path):
    """Installed into a new virtual environment (its dependencies from this interpreter's
    site-packages): derive_cells imports, derive/verify/reports do not, and the command runs."""
    env = tmp_path / "env"
    venv.create(env, system_site_packages=True, with_pip=False)
    python = env / "bin" / "python"
    done = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install",
                           "-q", "--no-deps", "--no-index", str(wheel)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    work = tmp_path / "elsewhere"
    work.mkdir()
    probe = ("import importlib.util, derive_cells\n"
             "print(derive_cells.__file__)\n"
             "print([n for n in ('derive', 'verify', 'train', 'reports') "
             "if importlib.util.find_spec(n) is not None])\n")
    done = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, cwd=work)
    assert done.returncode == 0, done.stderr
    where, leaked = done.stdout.splitlines()
    assert str(env) in where
    assert leaked == "[]"
    done = subprocess.run([str(env / "bin" / "derive-cells"), "rnn", "--emit", "numpy"],
                          capture_output=True, text=True, cwd=work)
    assert done.returncode == 0 and "def backward(" in done.stdout, done.stderr


HOSTILE = "raise ImportError('a user file was imported instead of derive-cells')\n"


@pytest.fixture()
def hostile(tmp_path) -> Path:
    for name in ("verify.py", "derive.py", "train.py", "reports/__init__.py", "derive_cells_x.py"):
        path = tmp_path / name
        path.parent.mkdir(exist_ok=True)
        path.write_text(HOSTILE)
    return tmp_path


@pytest.mark.parametrize("args", [["verify", "rnn", "--dtype", "float64"], ["list"],
                                  ["decay", "rnn", "--steps", "10", "--format", "json"]])
def test_cli_ignores_user_files_in_the_working_directory(hostile, args):
    # python -m puts the working directory first on sys.path, the hardest case
    done = subprocess.run([sys.executable, "-m", "derive_cells.cli", *args],
                          capture_output=True, text=True, cwd=hostile)
    assert done.returncode == 0, done.stderr
    assert "a user file was imported" not in done.stderr


def test_torch_is_an_extra_only(wheel):
    """`pip install .` (the README's first command) pulls in no torch: every torch requirement
    of the wheel belongs to an extra."""
    meta = next(n for n in zipfile.ZipFile(wheel).namelist() if n.endswith("/METADATA"))
    requires = [line.split(":", 1)[1].strip() for line in
                zipfile.ZipFile(wheel).read(meta).decode().splitlines()
                if line.startswith("Requires-Dist:")]
    assert requires
    for requirement in requires:
        if requirement.lower().startswith(("torch", "nvidia")):
            assert "extra ==" in requirement, requirement


BLOCK_TORCH = """import sys


class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError("No module named 'torch'", name="torch")


sys.meta_path.insert(0, _NoTorch())
"""

CPU_HINT = "--index-url https://download.pytorch.org/whl/cpu"


@pytest.fixture(scope="module")
def torchless(wheel, tmp_path_factory) -> Path:
    """The wheel in a new virtual environment where torch cannot be imported (the other
    dependencies from this interpreter's site-packages)."""
    env = tmp_path_factory.mktemp("torchless") / "env"
    venv.create(env, system_site_packages=True, with_pip=False)
    python = env / "bin" / "python"
    done = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install",
                           "-q", "--no-deps", "--no-index", str(wheel)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path("
                           "'purelib'))"], capture_output=True, text=True).stdout.strip()
    (Path(site) / "_derive_cells_no_torch.py").write_text(BLOCK_TORCH)
    (Path(site) / "_derive_cells_no_torch.pth").write_text("import _derive_cells_no_torch\n")
    done = subprocess.run([str(python), "-c", "import torch"], capture_output=True, text=True)
    assert done.returncode != 0 and "No module named 'torch'" in done.stderr
    return env


def test_without_torch_the_main_job_runs(torchless, tmp_path):
    """Deriving, emitting, listing, help, and the emitted NumPy module: no torch needed."""
    command = str(torchless / "bin" / "derive-cells")
    module = tmp_path / "lstm_bptt.py"
    for args in (["lstm", "--emit", "numpy", "-o", str(module)], ["--help"], ["list"],
                 ["lstm"], ["gru", "--emit", "torch"], ["train", "--help"],
                 ["train", "rnn", "--epochs", "1", "--train-size", "32", "--test-size", "8",
                  "--no-decay"]):
        done = subprocess.run([command, *args], capture_output=True, text=True, cwd=tmp_path)
        assert done.returncode == 0, (args, done.stderr)
        assert done.stdout.strip() or module.exists(), args
    probe = """
import numpy as np, lstm_bptt as cell
rng = np.random.default_rng(0)
H, I, T, B = 5, 3, 7, 2
params = {n: rng.standard_normal(tuple({"H": H, "I": I, "4*H": 4 * H}[d] for d in shape))
          for n, shape in cell.PARAMS.items()}
outputs, state_T, cache = cell.forward(rng.standard_normal((T, B, I)), {}, params)
d_x, d_state0, d_params = cell.backward(np.ones_like(outputs), None, cache)
assert outputs.shape == (T, B, H) and d_x.shape == (T, B, I)
assert all(d_params[n].shape == params[n].shape for n in params)
print("ok")
"""
    done = subprocess.run([str(torchless / "bin" / "python"), "-c", probe], capture_output=True,
                          text=True, cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_without_torch_training_watches_the_decay_with_the_emitted_numpy_module(torchless,
                                                                                 tmp_path):
    """`derive-cells train rnn --task sentiment` trains by default with NumPy alone: the decay
    is measured with the emitted NumPy backward at every epoch; no theory column."""
    done = subprocess.run([str(torchless / "bin" / "derive-cells"), "train", "rnn", "--task",
                           "sentiment", "--epochs", "2", "--train-size", "64", "--test-size",
                           "16", "--format", "json"], capture_output=True, text=True,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    run = json.loads(done.stdout)["runs"][0]
    rates = [e["decay_rate"] for e in run["epochs"]]
    assert len(rates) == 3 and all(0 < r < 1 for r in rates), rates
    assert run["decay"]["theory"] is False and run["decay"]["predicted_rate_per_step"] is None
    assert run["predicted_horizon"] > 0


@pytest.mark.parametrize("args", [
    ["verify", "rnn"], ["decay", "rnn", "--steps", "10"], ["report", "rnn", "-o", "r.html"],
    ["train", "rnn", "--check"],
    ["train", "rnn", "--backend", "torch", "--no-decay"],
])
def test_without_torch_commands_that_need_it_say_how_to_install_the_cpu_build(torchless,
                                                                            tmp_path, args):
    done = subprocess.run([str(torchless / "bin" / "derive-cells"), *args], capture_output=True,
                          text=True, cwd=tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "needs torch" in lines[0] and CPU_HINT in lines[0], done.stderr
    assert not list(tmp_path.iterdir())


def test_readme_first_command_installs_no_torch_and_runs_the_main_job():
    """The README's set-up starts with one command that installs what deriving and emitting
    need (no torch, whose Linux build from PyPI is the CUDA one) and runs the main job."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    setup = readme[readme.index("## Set-up"):]
    first = setup[setup.index("```sh") + len("```sh"):]
    first = first[:first.index("```")].strip()
    assert "pip install ." in first and "derive-cells lstm --emit numpy" in first, first
    assert "torch" not in first, first
