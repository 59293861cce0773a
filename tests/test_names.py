"""Every cell name the spec checker accepts (1-64 of letters, digits, '_', '-', '.') gives a Torch
module whose layer class is a valid, free identifier, in bounded time: names with '-' or '.'
once sent the class-name loop round forever."""

from __future__ import annotations

import ast
import builtins
import keyword
import re
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from derive_cells.derivation import derive
from derive_cells.emit import emit
from derive_cells.emit.torch_layer import class_name
from derive_cells.spec import cell_from_dict
from derive_cells.verify.modules import import_file

ACCEPTED = r"[A-Za-z0-9_.-]{1,64}"  # the spec checker's rule for a cell name
NAMES = st.from_regex(ACCEPTED, fullmatch=True)
DERIVE_CELLS = Path(sys.executable).with_name("derive-cells")


def rnn_spec(name: str) -> dict:
    return {"name": name, "input": "x", "state": ["h"], "output": "h",
            "equations": {"h": "tanh(W @ x + U @ h_prev + b)"}}


@contextmanager
def within(seconds: float):
    """Raise TimeoutError in the block after seconds (a hang becomes a failure)."""
    def expire(signum, frame):
        raise TimeoutError(f"took longer than {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def layer_classes(text: str) -> list[str]:
    tree = ast.parse(text)
    return [n.name for n in tree.body if isinstance(n, ast.ClassDef) and any(
        ast.unparse(b) == "torch.nn.Module" for b in n.bases)]


def assert_valid_class_name(name: str, taken: set[str]) -> None:
    assert re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", name), name
    assert name.isidentifier() and not keyword.iskeyword(name)
    assert not hasattr(builtins, name) and name not in taken


@settings(max_examples=1000)
@given(NAMES, st.sets(st.sampled_from(["Cell", "CellLayer", "A", "ALayer", "MyCell", "LSTM",
                                       "Cell1", "Cell1Layer"])))
def test_class_name_of_every_accepted_name(spec_name, taken):
    cell_from_dict(rnn_spec(spec_name), "<fuzz>")  # the checker accepts it
    with within(1):
        name = class_name(spec_name, set(taken))
    assert_valid_class_name(name, taken)


@pytest.mark.parametrize(("spec_name", "expected"), [
    ("my-cell.v2", "MyCellV2"), ("lstm-peephole", "LSTMPeephole"), ("gru.2", "GRU2"),
    ("1st", "Cell1st"), ("-", "Cell"), (".", "Cell"), ("_-.", "Cell"), ("a.b", "AB"),
    ("none", "NoneLayer"), ("x" * 64, "X" + "x" * 63),
])
def test_class_names(spec_name, expected):
    assert class_name(spec_name, set()) == expected


@settings(max_examples=25)
@given(NAMES)
def test_torch_module_of_every_accepted_name(spec_name):
    """The emitted Torch module compiles and defines its layer class under a valid name."""
    with within(60):
        text = emit(derive(cell_from_dict(rnn_spec(spec_name), "<fuzz>")), "torch")
    compile(text, "<emitted>", "exec")
    (name,) = layer_classes(text)
    assert_valid_class_name(name, set())
    assert name == class_name(spec_name, set())


def test_dotted_dashed_name_end_to_end(tmp_path):
    """`derive-cells SPEC --emit torch` ends, and the module's layer runs."""
    spec = tmp_path / "dotted.toml"
    spec.write_text('name = "my-cell.v2"\ninput = "x"\nstate = ["h"]\noutput = "h"\n'
                    '[equations]\nh = "tanh(W @ x + U @ h_prev + b)"\n')
    done = subprocess.run([str(DERIVE_CELLS), str(spec), "--emit", "torch"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    path = tmp_path / "my_cell_v2_torch.py"
    path.write_text(done.stdout)
    mod = import_file(path, "my_cell_v2_torch")
    layer = mod.MyCellV2(3, 4, num_layers=2, bidirectional=True, dtype=torch.float64)
    out, h_n = layer(torch.randn(5, 2, 3, dtype=torch.float64))
    assert out.shape == (5, 2, 8) and h_n.shape == (4, 2, 4)


def test_docstring_examples_run():
    import doctest

    import derive_cells.emit.torch_layer

    failures, tried = doctest.testmod(derive_cells.emit.torch_layer)
    assert tried and not failures
