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


# Forms a reader should never meet: a per-step list of lists built by a counted comprehension,
# an empty slice, an adjoint of a product that only renames another adjoint.
DEGENERATE = re.compile(r"for _ in range\(\d\)|\[:0\]|^\s+d_\w+_W = d_\w+$", re.M)


@pytest.mark.parametrize("name", CELLS, ids=lambda n: Path(n).stem)
def test_no_degenerate_forms(name):
    for target in ("numpy", "torch"):
        text = emit(derive(load_cell(name)), target)
        found = [m.group().strip() for m in DEGENERATE.finditer(text)]
        assert not found, f"{name} {target}: {found}"


@pytest.mark.parametrize("name", CELLS, ids=lambda n: Path(n).stem)
def test_each_equation_is_named_once_per_step(name):
    """Lines of one equation sit under one comment: the forward step names each equation
    once, and the backward step once too."""
    text = emit(derive(load_cell(name)), "numpy")
    for step in ("_forward_step", "_backward_step"):
        body = text[text.index(f"def {step}"):]
        body = body[:body.index("\ndef ", 1)]
        comments = re.findall(r"^    # (\(\d+\).*)$", body, re.M)
        assert len(comments) == len(set(comments)), (step, comments)


def test_runtime_and_generator_sources_pass_ruff():
    """The runtime emitted modules inline (derive/runtime/) is linted as code, as is the rest of
    the project."""
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (pip install -e '.[test]' installs it)")
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([ruff, "check", "derive", "verify", "train", "reports", "bench",
                           "tests"],
                          cwd=root, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    runtimes = sorted(p.name for p in (root / "derive" / "runtime").glob("*.py"))
    assert runtimes == ["__init__.py", "checks.py", "numpy_arrays.py", "steps.py",
                        "torch_arrays.py", "torch_function.py", "torch_layer.py"]


def test_emitted_modules_carry_the_runtime_verbatim():
    """What follows each runtime's marker is in the module as it is (the layer class under the
    cell's name), and verify/ decodes shapes with the very function the modules carry."""
    from derive_cells.emit import targets
    from derive_cells.emit.torch_layer import LAYER
    from derive_cells.runtime.checks import _dims
    from derive_cells.verify.inputs import dims

    lstm = derive(load_cell("lstm"))
    numpy_text, torch_text = emit(lstm, "numpy"), emit(lstm, "torch")
    for text in (numpy_text, torch_text):
        assert targets.CHECKS.strip("\n") in text
        assert targets.STEP_API.strip("\n") in text
    assert targets.TORCH.api.strip("\n") in torch_text
    assert LAYER.strip("\n").replace("class CellLayer(", "class LSTM(") in torch_text
    assert dims is _dims and dims(("4*H", "I"), 3, 5) == (20, 3)


def test_a_product_that_is_a_whole_pre_activation_is_named_for_it():
    """y = sigmoid(V @ h + a): the product, a folded in, is z_y itself (no V_h = ...; z_y = V_h);
    RNN: the adjoint handed back for the recurrent product is d_z_h itself."""
    spec = str(Path(__file__).parent / "specs" / "readout.toml")
    text = emit(derive(load_cell(spec)), "numpy")
    assert "    z_y = _addmm(b_h, h, W_h)  # + a, folded in\n" in text
    assert "V_h" not in text
    rnn = emit(derive(load_cell("rnn")), "numpy")
    assert "    d_h_prev = d_z_h @ W_h_prev\n    return (d_h_prev,), (d_z_h,), (), None\n" in rnn


@pytest.mark.parametrize("name", list(builtin_cells()))
def test_the_cell_s_own_code_comes_before_the_shared_runtime(name):
    """Constants and step math at the top (the forward step within 60 lines of the end of the
    module docstring), the runtime every module of the target carries in one section at the
    end."""
    for target in ("numpy", "torch"):
        lines = emit(derive(load_cell(name)), target).splitlines()
        first = {line.split("(")[0]: k for k, line in reversed(list(enumerate(lines)))
                 if line.startswith(("def ", "class ", "# ---- runtime"))}
        docstring_end = lines.index('"""')
        assert first["def _forward_step"] - docstring_end < 60, (target, docstring_end)
        runtime = first["# ---- runtime: the array helpers and input checks every emitted "
                        f"{'NumPy' if target == 'numpy' else 'PyTorch'} module carries ----"]
        assert max(first["def step_jacobian"], first.get("class " + name.upper(), 0)) < runtime
        assert min(first["def _check"], first["def _addmm"], first["def _split"]) > runtime
