"""`derive-cells verify`: prove emitted gradients right, or fail CI saying where they are wrong."""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import click

from derive_cells.cli import (
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


def _fail(message: str) -> None:
    fail(message, "derive-cells verify")


def _choices(value: str, options: tuple[str, ...]) -> tuple[str, ...]:
    return options if value == "all" else (value,)


def cell_of_module(path: str) -> str:
    """The cell a module file's header names (see derive_cells.header); exits 2 if none."""
    from derive_cells.header import HeaderError
    from derive_cells.header import cell_of_module as read

    try:
        return read(path)
    except HeaderError as exc:
        _fail(f"{exc}; give --cell")


def _check_module_matches(module, cell, path: str) -> None:
    """A module file must be an emission of this cell: same states and parameter layout."""
    from derive_cells.derivation import derive
    from derive_cells.plan import make_plan

    expected = make_plan(derive(cell)).params
    got = {n: tuple(b) for n, b in getattr(module, "BLOCKS", {}).items()}
    if tuple(module.STATE) != cell.state or got != {n: tuple(b) for n, b in expected.items()}:
        _fail(f"{path} does not run as a module of {cell.name}: its STATE {tuple(module.STATE)}"
              f" and parameters {sorted(got)} differ from the cell's {cell.state} and "
              f"{sorted(expected)}")


@click.command("verify")
@click.argument("cells", nargs=-1, metavar="CELL_OR_SPEC...")
@click.option("--all", "all_cells", is_flag=True, help="Verify every built-in cell.")
@click.option("--backend", type=click.Choice([*BACKENDS, "all"]), default="all",
              show_default=True, help="Emitted module(s) to check.")
@click.option("--dtype", type=click.Choice([*DTYPES, "all"]), default="all", show_default=True,
              help="Precision(s) to run the modules in (references are float64).")
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
def verify(cells, all_cells, backend, dtype, fmt, output, module_file, module_cell):
    """Check emitted gradients against independent references.

    For each cell, backend and dtype: forward values and gradients against PyTorch's own
    module (rnn, rnn_relu, lstm, gru) and against autograd over a direct Torch evaluation of
    the spec's equations; the adjoint through the outputs and through the final state on its
    own; a saturated-gate case; central finite differences (float64); the derived per-step
    Jacobian against torch.autograd.functional.jacobian; NumPy against Torch.

    \b
      derive-cells verify --all
      derive-cells verify lstm my_cell.toml --dtype float64 --format junit -o verify.xml
      derive-cells verify --module lstm_bptt.py            (the cell from its header)
      derive-cells verify --module lstm_bptt.py gru_bptt.py --cell gru   (... or named)

    --module imports the file, which executes it like `python FILE`; check only files you
    trust (your own emitted modules), never one from an untrusted source.

    Exit status: 0 every check passed, 1 a check failed, 2 usage or input error.
    """
    from derive_cells.spec import builtin_cells

    if module_cell and not module_file:
        _fail("--cell names the cell of a --module file; give cells as arguments otherwise")
    if module_file and all_cells:
        _fail("--module checks module files; do not also give --all")
    names = list(builtin_cells()) if all_cells else list(cells)
    files = [module_file, *cells] if module_file else []
    if module_file:
        names = [module_cell or cell_of_module(f) for f in files]
    if not names:
        _fail("name at least one cell or spec file, or use --all (see --help)")
    require_torch("derive-cells verify", "verify (its references)")
    from derive_cells.verify.checks import Checker
    from derive_cells.verify.modules import ModuleError, Runner, emit_and_import, load_module_file
    from derive_cells.verify.report import FORMATS

    if files:  # one cell per file, in order (load_cells gives each name once)
        loaded = [load_cells([n], "derive-cells verify")[0] for n in names]
    else:
        loaded = load_cells(names, "derive-cells verify")
    inputs = {**spec_files(names), **{f: f for f in files}}
    check_outputs({"-o": output}, inputs, "derive-cells verify")
    results, start = [], time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="derive-cells-verify-") as tmp:
        for i, cell in enumerate(loaded):
            if module_file:
                module_file = files[i]
                try:
                    module, target = load_module_file(module_file)
                except ModuleError as exc:
                    _fail(str(exc))
                _check_module_matches(module, cell, module_file)
                runners = {target: Runner(module, target)}
            else:
                from derive_cells.derivation import derive

                deriv = derive(cell)
                runners = {t: Runner(emit_and_import(deriv, t, Path(tmp)), t)
                           for t in _choices(backend, BACKENDS)}
            cache: dict = {}
            for dt in _choices(dtype, DTYPES):
                for target, runner in runners.items():
                    other = runners.get("torch") if target == "numpy" else None
                    label = f"{module_file} ({cell.name})" if module_file else cell.name
                    click.echo(f"verify: {label} {target} {dt} ...", err=True)
                    try:
                        found = list(Checker(cell, runner, target, dt, other, cache).all())
                    except (ValueError, TypeError, KeyError, AttributeError) as exc:
                        if not module_file:
                            raise
                        _fail(f"{module_file} does not run as a module of {cell.name}: "
                              f"{type(exc).__name__}: {exc}")
                    if len(files) > 1:  # several modules: each result names its file
                        found = [replace(r, cell=label) for r in found]
                    results += found
    text = FORMATS[fmt](results)
    failed = sum(1 for r in results if not r.passed)
    click.echo(f"verify: {len(results)} arrays compared in {time.perf_counter() - start:.1f} s,"
               f" {failed} outside tolerance", err=True)
    write_output(output or "-", text, "derive-cells verify")
    sys.exit(1 if failed else 0)
