"""How the emitted modules read: made-up names say what they stand for (no z_z, n_in, h_in2,
v_c), and forward lines keep the spec's term order."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from derive_cells.derivation import derive
from derive_cells.emit import emit
from derive_cells.spec import builtin_cells, load_cell

SPECS = sorted((Path(__file__).parent / "specs").glob("*.toml"))
CELLS = [*builtin_cells(), *(str(p) for p in SPECS)]
LEAKS = re.compile(r"\b(z_z|\w+_in\d+|v_[A-Za-z]\w*|[A-Za-z]+_in)\b")


@pytest.mark.parametrize("name", CELLS, ids=lambda n: Path(n).stem)
def test_no_made_up_name_leaks(name):
    cell = load_cell(name)
    own = {cell.input, *cell.state, *cell.order, *(t for t, _, _ in cell.equations)}
    for target in ("numpy", "torch"):
        text = emit(derive(cell), target)
        leaks = {m.group() for m in LEAKS.finditer(text)} - own
        assert not leaks, f"{name} {target}: {sorted(leaks)}"


def _forward(name: str) -> str:
    text = emit(derive(load_cell(name)), "numpy")
    return text[text.index("def _forward_step"):text.index("def _backward_step")]


@pytest.mark.parametrize("name", list(builtin_cells()))
def test_forward_lines_keep_the_spec_s_term_order(name):
    """Every arithmetic equation prints as its text (a function of a state named as its value,
    tanh(c) -> tanh_c); a gate's pre-activation adds the input's product before the recurrent
    one, as every built-in spec writes it."""
    cell = load_cell(name)
    body = _forward(name)
    for target, expr, text in cell.equations:
        if type(expr).__name__ in ("Sigmoid", "Tanh", "Relu"):  # a gate: see below
            line = re.search(r"^    z_\w+ = (.*)$", body, re.M)
            assert line is not None
            continue
        expected = re.sub(r"tanh\((\w+)\)", r"tanh_\1", text)
        assert f"    {target} = {expected}\n" in body, (target, text)
    for line in re.findall(r"^    z_\w+ = (\w+) \+ (\w+)$", body, re.M):
        assert line[0].endswith("_x") and line[1].endswith("_prev"), line


def test_every_emitted_module_passes_ruff(tmp_path):
    """All built-ins and every spec in tests/specs, both targets: the project's ruff rules plus
    unused arguments (ARG), lines of at most 100 characters, no unused locals."""
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (pip install -e '.[test]' installs it)")
    for name in CELLS:
        for target in ("numpy", "torch"):
            (tmp_path / f"{Path(name).stem}_{target}.py").write_text(
                emit(derive(load_cell(name)), target))
    done = subprocess.run([ruff, "check", "--isolated", "--line-length", "100",
                           "--select", "E,F,W,ARG", "--ignore", "E741", "--output-format",
                           "concise", str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:]
    assert len(list(tmp_path.glob("*.py"))) == 2 * len(CELLS)
