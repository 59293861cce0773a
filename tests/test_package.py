"""The distribution installs one import name, derive_cells, and a user's own files named like
the project's folders (verify.py, reports/, derive.py) in the working directory change nothing."""

from __future__ import annotations

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
                   "derive_cells/reports/templates/report.html.j2", "derive_cells/cli.py"):
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
             "print([n for n in ('derive', 'verify', 'reports') "
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
    for name in ("verify.py", "derive.py", "reports/__init__.py", "derive_cells_x.py"):
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
