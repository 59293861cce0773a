"""Emitted source is fixed (golden files) and byte-for-byte deterministic."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from update_golden import TARGETS, golden_path, render

from derive_cells.cli import main
from derive_cells.spec import builtin_cells

CELLS = list(builtin_cells())
ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("cell", CELLS)
def test_emitted_source_matches_golden(cell, target):
    expected = golden_path(cell, target).read_text(encoding="utf-8")
    assert render(cell, target) == expected, (
        f"emitted {target} source of {cell} changed; if intended, run "
        "`python tests/update_golden.py` and review the diff")


@pytest.mark.parametrize("cell", CELLS)
def test_cli_prints_the_golden_module(cell):
    result = CliRunner().invoke(main, [cell, "--emit", "numpy"])
    assert result.exit_code == 0, result.output
    assert result.stdout == golden_path(cell, "numpy").read_text(encoding="utf-8")


def test_cli_writes_file(tmp_path):
    out = tmp_path / "lstm_bptt.py"
    result = CliRunner().invoke(main, ["lstm", "--emit", "numpy", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text() == golden_path("lstm", "numpy").read_text()
    assert not [p for p in tmp_path.iterdir() if p.name != "lstm_bptt.py"]  # no temp left


def test_same_bytes_across_processes_and_hash_seeds():
    """Set and dict orders must not leak into the output: other hash seeds, same bytes."""
    code = ("import sys; from update_golden import render; "
            "sys.stdout.write(''.join(render(c, 'numpy') for c in "
            "['lstm', 'gru', 'simplified_gru']))")
    outputs = set()
    for seed in ("0", "1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        run = subprocess.run([sys.executable, "-c", code], cwd=ROOT / "tests", env=env,
                             capture_output=True, text=True, check=True)
        outputs.add(run.stdout)
    assert len(outputs) == 1


def test_header_names_cell_version_and_command():
    import derive_cells

    text = render("gru", "numpy")
    head = text.split('"""')[1]
    assert "gru:" in head and derive_cells.__version__ in head
    assert "derive-cells gru --emit numpy" in head


def test_emitted_lstm_backward_reads_like_the_textbook():
    """Each adjoint line sits under its equation, derivatives written with the activations."""
    text = render("lstm", "numpy")
    body = text[text.index("def _backward_step"):text.index("def forward")]
    assert "# (6) h = o * tanh(c)" in body
    assert "d_c = d_c + d_tanh_c * (1 - tanh_c**2)  # tanh'(z) = 1 - tanh(z)**2" in body
    assert "d_z_i = d_i * i * (1 - i)  # sigmoid'(z) = sigmoid(z) * (1 - sigmoid(z))" in body
    assert "d_f = d_c * c_prev" in body  # the adjoint first in a product
    assert "exp(" not in body
    assert body.index("# (6)") < body.index("# (5)") < body.index("# (1)")
    forward = text[text.index("def _forward_step"):text.index("def _backward_step")]
    assert "    c = f * c_prev + i * g\n" in forward  # the spec's term order


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("relative", [False, True], ids=["absolute", "relative"])
def test_api_emits_the_cli_bytes_for_a_spec_file(tmp_path, monkeypatch, target, relative):
    """Cell.emit() of a spec file is what `derive-cells PATH --emit TARGET` prints (its header
    names the path, not the cell's name), so `emit --check` accepts the module."""
    import derive_cells

    monkeypatch.chdir(ROOT / "tests")
    spec = "specs/peephole_lstm.toml" if relative else str(ROOT / "tests/specs/peephole_lstm.toml")
    api = derive_cells.load(spec).emit(target)
    cli = CliRunner().invoke(main, [spec, "--emit", target])
    assert cli.exit_code == 0, cli.output
    assert api == cli.stdout
    assert f"Regenerate with:  derive-cells {spec} --emit {target}\n" in api
    module = tmp_path / f"peephole_{target}.py"
    module.write_text(api, encoding="utf-8")
    check = CliRunner().invoke(main, ["emit", "--check", str(module)])
    assert check.exit_code == 0, check.output
    assert derive_cells.load(Path(spec)).emit(target) == api


def test_api_emit_of_a_builtin_names_the_builtin():
    import derive_cells

    assert derive_cells.load("gru").emit("numpy") == golden_path("gru", "numpy").read_text(
        encoding="utf-8")
