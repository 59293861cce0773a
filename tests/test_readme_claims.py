"""Numbers and behaviours the README states, rerun: a closed pipe's exit status, the agreement
`train --check` measures with torch.nn, and the decay table and range of `derive-cells decay`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
COMMAND = [sys.executable, "-m", "derive_cells.cli"]


def run(*args, **kw):
    return subprocess.run([*COMMAND, *args], capture_output=True, text=True, cwd=ROOT, **kw)


def test_a_pipe_closed_before_the_output_is_written_ends_quietly_with_status_1():
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first byte: `derive-cells ... | true`
    try:
        done = subprocess.run([*COMMAND, "lstm", "--emit", "numpy"], stdout=write,
                              stderr=subprocess.PIPE, text=True, cwd=ROOT)
    finally:
        os.close(write)
    assert done.returncode == 1
    assert done.stderr == ""


def test_output_that_reached_the_pipe_before_it_closed_ends_with_status_0():
    """`| head -1`: the module (19 KB) fits in a pipe's buffer, so every write succeeds before
    head exits; nothing failed, and the status is 0."""
    done = subprocess.run(f"{' '.join(COMMAND)} lstm --emit numpy | head -1; "
                          "echo status ${PIPESTATUS[0]}", shell=True, executable="/bin/bash",
                          capture_output=True, text=True, cwd=ROOT)
    first, status = done.stdout.splitlines()
    assert first == '"""lstm: Long short-term memory (PyTorch nn.LSTM layout).'
    assert status == "status 0" and done.stderr == ""
    size = len(run("lstm", "--emit", "numpy").stdout.encode())
    assert size < 65536  # a Linux pipe's default capacity


def test_train_check_agrees_with_torch_nn_as_the_readme_says():
    measured = re.search(r"relative differences of at most (\S+) for `rnn`, `lstm`, `gru`, "
                         r"`simplified_gru` \(`tests/test_readme_claims.py` reruns this and "
                         r"requires at most (\S+)\)", " ".join(README.split()))
    assert measured, "the README states the agreement of train --check"
    stated, required = float(measured[1]), float(measured[2])
    assert stated <= required <= 1e-14
    done = run("train", "rnn", "lstm", "gru", "simplified_gru", "--check", "--format", "json")
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(done.stdout)
    assert [r["cell"] for r in rows] == ["rnn", "lstm", "gru", "simplified_gru"]
    assert all(r["steps"] == 20 and r["passed"] for r in rows)
    worst = max(max(r["max_loss_error"], r["max_param_error"]) for r in rows)
    assert worst <= required, rows


def test_the_readmes_decay_table_is_what_the_command_prints():
    command = "derive-cells decay rnn lstm gru --forget-bias 2 --plot docs/decay.svg"
    # the command's block, the figure between, then the table's block
    table = README[README.index(command):].split("```", 3)[2]
    done = run("decay", "rnn", "lstm", "gru", "--forget-bias", "2")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == table.strip()


@pytest.mark.parametrize("claim", ["a 3000-step tanh RNN is still\nmeasured at 1e-1036"])
def test_a_3000_step_rnn_is_measured_far_below_float64(claim):
    assert claim in README
    done = run("decay", "rnn", "--steps", "3000", "--format", "json")
    assert done.returncode == 0, done.stderr[-2000:]
    last = json.loads(done.stdout)["log10_norm"]["h"][-1]
    assert re.search(r"1e-(\d+)", claim)[1] == str(round(-last))
