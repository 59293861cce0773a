"""What every command shares: usage errors (exit 2), loading cells, the torch requirement, and
output paths written as the README's "Output files" says."""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import click

from derive_cells import output as _output
from derive_cells.spec import SpecError, builtin_cells, load_cell

EMIT_TARGETS = ("numpy", "torch")


def fail(message: str, command: str = "derive-cells") -> None:
    """Report a usage or input error and exit with status 2 (no traceback)."""
    click.echo(f"{command}: error: {message}", err=True)
    sys.exit(2)


def load_cells(names, command: str = "derive-cells") -> list:
    """Cells by name or spec path, each once, in order; a bad one exits 2 naming it."""
    try:
        return [load_cell(n) for n in dict.fromkeys(names)]
    except SpecError as exc:
        fail(str(exc), command)


TORCH_CPU = "python3 -m pip install torch --index-url https://download.pytorch.org/whl/cpu"


def torch_missing(purpose: str) -> str:
    """What to say when torch is not installed: how to install its CPU build."""
    return (f"{purpose} needs torch, which is not installed; install its CPU build with "
            f"`{TORCH_CPU}` (a plain `pip install torch` on Linux is the CUDA build, several GB)")


def require_torch(command: str, purpose: str) -> None:
    """Commands whose references are computed by torch: a clear error when it is missing."""
    try:
        import torch  # noqa: F401
    except ImportError:
        fail(torch_missing(purpose), command)


def spec_files(names) -> dict[str, Path]:
    """The files that cells given by name or path are read from, by how the user named them
    (a built-in as 'lstm (its path)')."""
    builtins = builtin_cells()
    return {(f"{n} ({builtins[n]})" if n in builtins else n): builtins.get(n, Path(n))
            for n in names}


class FiniteFloat(click.FloatRange):
    """A float within [min, max] that is a number: 'nan' and 'inf' are refused (a plain
    FloatRange lets nan through, since every comparison with it is false)."""

    name = "finite float"

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


# Every command that writes files takes its path with this type; write_output checks the rest.
OUTPUT_PATH = click.Path(allow_dash=True)


def check_outputs(outputs: dict[str, str | None], inputs: dict[str, str | os.PathLike],
                  command: str = "derive-cells") -> None:
    """Before anything is computed or written: refuse an output that names one of the inputs
    (spec files, a module file; the same file however it is spelled) or another output.
    Both map how the user named a file (an option, a cell) to its path."""
    try:
        _output.check_outputs(outputs, inputs)
    except _output.OutputError as exc:
        fail(str(exc), command)


def write_output(path: str, data: str | bytes, command: str = "derive-cells") -> None:
    """Write a command's result to path ('-': stdout); see derive.output for what a path may
    be. A file that cannot be written exits 2 naming it; stdout's errors are the entry
    point's to report (a closed pipe ends quietly)."""
    if _output.is_stdout(path):
        _output.write(path, data)
        return
    try:
        _output.write(path, data)
    except OSError as exc:
        fail(f"cannot write {path}: {exc.strerror or exc}", command)
