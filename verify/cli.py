"""`derive-cells verify`: prove emitted gradients right, or fail CI saying where they are wrong."""

from __future__ import annotations

import shlex
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import click

from derive_cells.command import (
    OUTPUT_PATH,
    check_outputs,
    fail,
    load_cells,
    require_torch,
    spec_files,
    write_output,
)

BACKENDS = ("numpy", "torch")
DTYPES = ("float64", "float32")
MAX_ROWS = 1_000_000  # steps x batch of the long case: about 1 GB of arrays at the most


def _fail(message: str) -> None:
    fail(message, "derive-cells verify")


def _choices(value: str, options: tuple[str, ...]) -> tuple[str, ...]:
    return options if value == "all" else (value,)


def read_header(path: str, cell_given: bool) -> tuple[str, str] | None:
    """(cell as written, target) from a module file's header, None where it names no cell and
    --cell names it; exits 2 for a file that is not an emitted module (only its first lines are
    read: see derive_cells.emit.header)."""
    from derive_cells.emit.header import HeaderError, NotAModuleError, regenerate_command

    try:
        return regenerate_command(path)
    except NotAModuleError as exc:
        _fail(str(exc))
    except HeaderError as exc:
        if cell_given and Path(path).is_file():
            return None
        _fail(f"{exc}; give --cell" if Path(path).is_file() else str(exc))


def cell_of_module(path: str) -> str:
    """The cell a module file's header names (see derive_cells.emit.header); exits 2 if none."""
    from derive_cells.emit.header import HeaderError
    from derive_cells.emit.header import cell_of_module as read

    try:
        return read(path)
    except HeaderError as exc:
        _fail(f"{exc}; give --cell")


def _check_module_matches(module, cell, deriv, path: str) -> None:
    """A module file must be an emission of this cell: same states and parameter layout."""
    from derive_cells.emit.plan import make_plan

    expected = make_plan(deriv).params
    got = {n: tuple(b) for n, b in getattr(module, "BLOCKS", {}).items()}
    if tuple(module.STATE) != cell.state or got != {n: tuple(b) for n, b in expected.items()}:
        _fail(f"{path} does not run as a module of {cell.name}: its STATE {tuple(module.STATE)}"
              f" and parameters {sorted(got)} differ from the cell's {cell.state} and "
              f"{sorted(expected)}")


def load_module(path: str, cell, header: tuple[str, str] | None):
    """(module, target, note) of a --module file: refused (exit 2) when it is far larger than
    what derive-cells emits for the cell (it is not an emitted module, and importing it could
    take minutes and gigabytes); note says how its text differs from that emission, if it
    does."""
    from derive_cells.derivation import derive
    from derive_cells.emit import emit
    from derive_cells.emit.header import HeaderError, first_difference
    from derive_cells.verify.modules import ModuleError, load_module_file

    deriv = derive(cell)
    target = header[1] if header else "numpy"
    command = f"derive-cells {shlex.quote(header[0])} --emit {target}" if header else None
    fresh = emit(deriv, target, command=command)
    size, emitted = Path(path).stat().st_size, len(fresh.encode("utf-8"))
    if size > 4 * emitted + 2 ** 20:
        _fail(f"{path}: {size} bytes, far more than the {emitted} bytes of the module "
              f"derive-cells emits for {cell.name}: not an emitted module, not imported")
    try:
        difference = first_difference(path, fresh) if header else None
        module, found = load_module_file(path)
    except (ModuleError, HeaderError) as exc:
        _fail(str(exc))
    _check_module_matches(module, cell, deriv, path)
    if header is None:
        note = f"{path} has no 'Regenerate with:' header: its text was not compared"
    elif difference is not None or found != target:
        note = (f"{path} is not the text `{command}` emits now (first difference: "
                f"{difference or f'a {found} module, not {target}'}); the checks ran on the "
                "file as it is")
    else:
        note = None
    return module, found, note


def _sizes_of(steps: int, batch: int):
    from derive_cells.verify.checks import Sizes

    if steps * batch > MAX_ROWS:
        _fail(f"--steps {steps} x --batch {batch} = {steps * batch} rows; at most {MAX_ROWS}")
    return Sizes(steps, batch)


@click.command("verify")
@click.argument("cells", nargs=-1, metavar="CELL_OR_SPEC...")
@click.option("--all", "all_cells", is_flag=True, help="Verify every built-in cell.")
@click.option("--backend", type=click.Choice([*BACKENDS, "all"]), default="all",
              show_default=True, help="Emitted module(s) to check.")
@click.option("--dtype", type=click.Choice([*DTYPES, "all"]), default="all", show_default=True,
              help="Precision(s) to run the modules in (references are float64).")
@click.option("--steps", type=click.IntRange(1, MAX_ROWS), default=200, show_default=True,
              help="Time steps T of the long case (past any cut-off in time); steps x batch "
                   f"at most {MAX_ROWS:,}.")
@click.option("--batch", type=click.IntRange(1, MAX_ROWS), default=130, show_default=True,
              help="Batch rows B of the long case (past any cut-off in batch size).")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "junit"]), default="table",
              show_default=True, help="table: a row per check; json: an object per array; "
                                      "junit: JUnit XML, a testcase per check.")
@click.option("-o", "--output", type=OUTPUT_PATH, metavar="FILE",
              help="Write the report to FILE ('-': stdout, the default).")
@click.option("--module", "module_file", type=click.Path(dir_okay=False),
              help="Check this emitted module file (kept, perhaps edited, in your repository) "
                   "instead of freshly emitted code, and the files given as arguments after it "
                   "(--module A.py B.py ...: how pre-commit passes files); each one's cell is "
                   "read from its header (the regenerate command) unless --cell names it. A "
                   "file is imported and so RUNS, as `python FILE` would: only pass files you "
                   "trust.")
@click.option("--cell", "module_cell",
              help="The cell (name or spec) that --module implements (default: the one its "
                   "header's regenerate command names).")
def verify(cells, all_cells, backend, dtype, steps, batch, fmt, output, module_file,
           module_cell):
    """Check emitted gradients against independent references.

    For each cell, backend and dtype: forward values and gradients against PyTorch's own
    module (rnn, rnn_relu, lstm, gru) and against autograd over a direct Torch evaluation of
    the spec's equations; the adjoint through the outputs and through the final state on its
    own; central finite differences (float64); the derived per-step Jacobian against
    torch.autograd.functional.jacobian; NumPy against Torch; a padded batch of unequal
    lengths. Cases: small odd shapes, a long case of --steps x --batch (H and I apart from
    both) and a saturated case whose pre-activations, of mixed size, reach +-1e3 and beyond
    (past where exp leaves float32's range, -87.7, and float64's, -708).

    \b
    Tolerances (relative error ||a-b||/||b|| per array) follow the problem:
      max(floor, 10 * k * (u / u32) * e32)
    e32: the measured error of the reference run in float32 on the same
    inputs, which holds the magnitudes and the conditioning (cancellation,
    powers, saturation, long chains); u: the dtype's unit roundoff; k = 2
    where both sides round in the dtype (float64 against the float64
    reference, NumPy against Torch), else 1. Floors: float64 1e-10 (NumPy
    vs Torch 1e-12), float32 1e-4 (1e-5). Finite differences (h = 1e-6):
      max(1e-6, 10 * sqrt(n) * eta / (h * ||D||))
    eta: the rounding error of one evaluation of the loss (its terms' size,
    their measured rounding); n: the array's size. Each row shows the
    tolerance it used (derive_cells.verify.tolerances has the details).

    \b
      derive-cells verify --all
      derive-cells verify lstm my_cell.toml --dtype float64 --format junit -o verify.xml
      derive-cells verify --module lstm_bptt.py            (the cell from its header)
      derive-cells verify --module lstm_bptt.py gru_bptt.py --cell gru   (... or named)
      derive-cells verify gru --steps 2000 --batch 500     (go further)

    --module imports the file, which executes it like `python FILE`; check only files you
    trust (your own emitted modules), never one from an untrusted source. Before that only
    its first lines are read: a file that does not begin with a module docstring, or is far
    larger than the module derive-cells emits for its cell, is refused (exit 2). Where the
    text differs from what derive-cells emits for the header's cell, the first differing line
    is reported beside the verdict (a note; the checks decide the exit status).

    Exit status: 0 every check passed, 1 a check failed, 2 usage or input error.
    """
    from derive_cells.spec import builtin_cells

    if module_cell and not module_file:
        _fail("--cell names the cell of a --module file; give cells as arguments otherwise")
    if module_file and all_cells:
        _fail("--module checks module files; do not also give --all")
    require_torch("derive-cells verify", "verify (its references)")
    sizes = _sizes_of(steps, batch)
    names = list(builtin_cells()) if all_cells else list(cells)
    files = [module_file, *cells] if module_file else []
    headers = [read_header(f, bool(module_cell)) for f in files]
    if module_file:
        names = [module_cell or cell_of_module(f) for f in files]
    if not names:
        _fail("name at least one cell or spec file, or use --all (see --help)")
    from derive_cells.verify.checks import Checker
    from derive_cells.verify.modules import Runner, emit_and_import
    from derive_cells.verify.report import FORMATS

    if files:  # one cell per file, in order (load_cells gives each name once)
        loaded = [load_cells([n], "derive-cells verify")[0] for n in names]
    else:
        loaded = load_cells(names, "derive-cells verify")
    inputs = {**spec_files(names), **{f: f for f in files}}
    check_outputs({"-o": output}, inputs, "derive-cells verify")
    results, notes, start = [], [], time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="derive-cells-verify-") as tmp:
        for i, cell in enumerate(loaded):
            if files:
                module, target, note = load_module(files[i], cell, headers[i])
                notes += [note] if note else []
                runners = {target: Runner(module, target)}
            else:
                from derive_cells.derivation import derive

                deriv = derive(cell)
                runners = {t: Runner(emit_and_import(deriv, t, Path(tmp)), t)
                           for t in _choices(backend, BACKENDS)}
            cache: dict = {}
            label = f"{files[i]} ({cell.name})" if files else cell.name
            for dt in _choices(dtype, DTYPES):
                for target, runner in runners.items():
                    other = runners.get("torch") if target == "numpy" else None
                    click.echo(f"verify: {label} {target} {dt} ...", err=True)
                    found = list(Checker(cell, runner, target, dt, other, cache, sizes).all())
                    if len(files) > 1:  # several modules: each result names its file
                        found = [replace(r, cell=label) for r in found]
                    results += found
    text = FORMATS[fmt](results, notes)
    failed = sum(1 for r in results if not r.passed)
    click.echo(f"verify: {len(results)} arrays compared in {time.perf_counter() - start:.1f} s,"
               f" {failed} outside tolerance", err=True)
    for note in notes:
        click.echo(f"verify: note: {note}", err=True)
    write_output(output or "-", text, "derive-cells verify")
    sys.exit(1 if failed else 0)
