"""The ``derive-cells`` command line.

Exit status: 0 ok, 1 a check failed, 2 usage or input error (unknown cell, bad spec file).
"""

from __future__ import annotations

import errno
import importlib
import os
import shlex
import sys

import click

from derive_cells.command import (
    EMIT_TARGETS,
    OUTPUT_PATH,
    check_outputs,
    fail,
    load_cells,
    spec_files,
    write_output,
)
from derive_cells.version import __version__

# Errors of writing to a stream (stdout, stderr) rather than to a named file.
STREAM_ERRNOS = {errno.EPIPE, errno.ENOSPC, errno.EIO, errno.EDQUOT, errno.EFBIG}


def _silence(stream) -> None:
    """Point a stream's descriptor at /dev/null, so the interpreter's last flush of what is
    still buffered succeeds instead of printing 'Exception ignored ...'."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


def _flush_streams(code: int) -> int:
    """Flush stdout and stderr: a closed pipe ends quietly with status 1, a full or failing
    stdout with a one-line error and status 2."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, f"__{name}__")
        if stream is None:
            continue
        try:
            stream.flush()
        except BrokenPipeError:
            _silence(stream)
            code = code or 1
        except OSError as exc:
            _silence(stream)
            if name == "stdout":
                _report_stream_error(exc)
            code = code or 2
    return code


def _report_stream_error(exc: OSError) -> None:
    try:
        sys.__stderr__.write(f"derive-cells: error: cannot write to stdout: "
                             f"{exc.strerror or exc}\n")
        sys.__stderr__.flush()
    except (OSError, AttributeError):
        pass


# Commands of later stages, imported only when used (the emit path stays light).
LAZY_COMMANDS = {"verify": "derive_cells.verify.cli:verify",
                 "decay": "derive_cells.verify.decay.cli:decay",
                 "report": "derive_cells.reports.cli:report",
                 "train": "derive_cells.train.cli:train"}


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

    def main(self, *args, **kwargs):
        """Run the command, then make sure what it printed reached stdout: a closed pipe
        (`derive-cells lstm --emit numpy | true`) ends quietly with status 1, a full disk
        (`> /dev/full`) with a one-line error and status 2, never a traceback."""
        if not kwargs.get("standalone_mode", True):
            return super().main(*args, **kwargs)
        try:
            super().main(*args, **kwargs)
            code = 0
        except SystemExit as exc:
            code = exc.code
        except OSError as exc:
            if exc.errno not in STREAM_ERRNOS or exc.filename is not None:
                raise
            if isinstance(exc, BrokenPipeError):
                code = 1
            else:
                _report_stream_error(exc)
                code = 2
            _silence(sys.__stdout__)
        sys.exit(_flush_streams(code))

    def format_usage(self, ctx, formatter):
        formatter.write("Usage: derive-cells CELL [--emit numpy|torch] [-o FILE]\n"
                        "       derive-cells COMMAND [ARGS]...\n")


@click.group(cls=CellGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="derive-cells")
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


@main.command("emit")
@click.argument("cell", nargs=-1, required=True, metavar="CELL")
@click.option("--emit", "target", type=click.Choice(EMIT_TARGETS), default=None,
              help="Emit a standalone module for this library (default: print the derivation).")
@click.option("-o", "--output", type=OUTPUT_PATH, metavar="FILE",
              help="Write to FILE instead of stdout ('-': stdout). A symbolic link is written "
                   "through; a FIFO or device is written in place.")
@click.option("--check", is_flag=True,
              help="The arguments are emitted module files: exit 1 if any differs from what "
                   "its header's `Regenerate with:` command prints now (a stale module).")
def emit_command(cell: tuple[str, ...], target: str | None, output: str | None, check: bool):
    """Print a cell's derivation, or emit its forward/backward module.

    `derive-cells CELL ...` is short for `derive-cells emit CELL ...`. CELL is a built-in cell
    (`derive-cells list`) or the path of a .toml spec file. Without --emit, prints the
    normalized forward step, the adjoint of every node, the parameter gradients and the
    per-step Jacobian as text.
    """
    from derive_cells.derivation import derive as run_derivation

    if check:
        if target or output:
            fail("--check reads the cell and target from each file; give neither --emit nor -o")
        sys.exit(_check_regenerated(cell))
    if len(cell) != 1:
        fail("give one CELL (several module files: --check FILE...)")
    (cell,) = cell
    (spec,) = load_cells([cell])
    check_outputs({"-o": output}, spec_files([cell]))
    deriv = run_derivation(spec)
    if target is None:
        from derive_cells.emit.text import derivation_text

        text = derivation_text(deriv)
    else:
        from derive_cells.emit import emit

        text = emit(deriv, target, command=f"derive-cells {shlex.quote(cell)} --emit {target}")
    write_output(output or "-", text)
    if output and output != "-":
        click.echo(f"wrote {output}", err=True)


def _check_regenerated(files) -> int:
    """1 if an emitted module file differs from what its header's command prints now."""
    from derive_cells.derivation import derive as run_derivation
    from derive_cells.emit import emit
    from derive_cells.emit.header import (
        HeaderError,
        cell_of_module,
        first_difference,
        regenerate_command,
    )

    stale = 0
    for path in files:
        try:
            cell = cell_of_module(path)  # the spec as found (cwd, else beside the module)
            written, target = regenerate_command(path)  # the cell as the header spells it
        except HeaderError as exc:
            fail(str(exc))
        (spec,) = load_cells([cell])
        command = f"derive-cells {shlex.quote(written)} --emit {target}"
        try:
            difference = first_difference(path, emit(run_derivation(spec), target,
                                                     command=command))
        except HeaderError as exc:
            fail(str(exc))
        if difference is None:
            continue
        stale = 1
        click.echo(f"{path}: stale: not what `{command}` emits now (first difference: "
                   f"{difference})", err=True)
    return stale


@main.command("list")
def list_command():
    """List the built-in cells with their titles."""
    from derive_cells.api import list_cells

    for name, title in list_cells().items():
        click.echo(f"{name:<16} {title}")


if __name__ == "__main__":
    main()
