"""The ``derive-cells`` command line.

Exit status: 0 ok, 1 a check failed, 2 usage or input error (unknown cell, bad spec file).
"""

from __future__ import annotations

import importlib
import os
import shlex
import sys
import tempfile
from pathlib import Path

import click

import derive
from derive.spec import SpecError, builtin_cells, load_cell

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


def require_torch(command: str, purpose: str) -> None:
    """Commands whose references are computed by torch: a clear error when it is missing."""
    try:
        import torch  # noqa: F401
    except ImportError:
        fail(f"{purpose} needs torch (pip install torch)", command)


# Commands of later stages, imported only when used (the emit path stays light).
LAZY_COMMANDS = {"verify": "verify.cli:verify", "decay": "verify.decay_cli:decay",
                 "report": "reports.cli:report"}


class CellGroup(click.Group):
    """A group whose first argument may be a cell instead of a command: ``derive-cells lstm``."""

    def list_commands(self, ctx):
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS})

    def get_command(self, ctx, name):
        if name in LAZY_COMMANDS:
            module, _, attr = LAZY_COMMANDS[name].partition(":")
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)

    def parse_args(self, ctx, args):
        if args and args[0] not in self.list_commands(ctx) and not args[0].startswith("-"):
            args = ["emit", *args]
        return super().parse_args(ctx, args)

    def format_usage(self, ctx, formatter):
        formatter.write("Usage: derive-cells CELL [--emit numpy|torch] [-o FILE]\n"
                        "       derive-cells COMMAND [ARGS]...\n")


@click.group(cls=CellGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(derive.__version__, prog_name="derive-cells")
def main():
    """Derive the BPTT gradients of a recurrent cell and emit code for them.

    CELL is a built-in cell (see `derive-cells list`) or the path of a .toml spec file.

    \b
      derive-cells lstm                       the forward and adjoint equations, as text
      derive-cells lstm --emit numpy          a standalone NumPy module on stdout
      derive-cells my_cell.toml --emit numpy -o my_cell_bptt.py
      derive-cells verify --all               check every emitted gradient (needs torch)
      derive-cells decay rnn lstm gru --plot decay.svg   how fast gradients vanish
      derive-cells report lstm -o lstm.html   the whole story as a document (.html/.tex/.pdf)

    Exit status: 0 ok, 1 a check failed, 2 usage or input error.
    """




def write_atomic(path: str, data: str | bytes) -> None:
    """Write text or bytes to path through a temporary file: a failure leaves no partial file."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent or ".", prefix=f".{target.name}.", suffix=".tmp")
    try:
        if isinstance(data, bytes):
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
        else:
            with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
                fh.write(data)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # as open() would have made it, not mkstemp's 0600
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@main.command("emit")
@click.argument("cell")
@click.option("--emit", "target", type=click.Choice(EMIT_TARGETS), default=None,
              help="Emit a standalone module for this library (default: print the derivation).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True),
              help="Write to FILE instead of stdout.")
def emit_command(cell: str, target: str | None, output: str | None):
    """Print a cell's derivation, or emit its forward/backward module.

    `derive-cells CELL ...` is short for `derive-cells emit CELL ...`. CELL is a built-in cell
    (`derive-cells list`) or the path of a .toml spec file. Without --emit, prints the
    normalized forward step, the adjoint of every node, the parameter gradients and the
    per-step Jacobian as text.
    """
    from derive.derivation import derive as run_derivation

    (spec,) = load_cells([cell])
    deriv = run_derivation(spec)
    if target is None:
        from derive.text import derivation_text

        text = derivation_text(deriv)
    else:
        from derive.emit import emit

        text = emit(deriv, target, command=f"derive-cells {shlex.quote(cell)} --emit {target}")
    if output:
        try:
            write_atomic(output, text)
        except OSError as exc:
            fail(f"cannot write {output}: {exc.strerror or exc}")
        click.echo(f"wrote {output}", err=True)
    else:
        click.echo(text, nl=False)


@main.command("list")
def list_command():
    """List the built-in cells with their titles."""
    import tomllib

    for name, path in builtin_cells().items():
        title = tomllib.loads(path.read_text(encoding="utf-8")).get("title", "")
        click.echo(f"{name:<16} {title}")


if __name__ == "__main__":
    main()
