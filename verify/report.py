"""Verification results as a table (one row per check), JSON (one object per array) or JUnit XML
(one testcase per check), with failures spelled out: array, gate block, worst element."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from itertools import groupby

from derive_cells.verify.results import Result


def _key(r: Result) -> tuple[str, str, str, str]:
    return (r.cell, r.backend, r.dtype, r.check)


def grouped(results: list[Result]):
    """(cell, backend, dtype, check) -> its array results, in the order they were run."""
    return [(key, list(rows)) for key, rows in groupby(results, key=_key)]


def number(value: float) -> str:
    """A tolerance in two digits at most: 1e-10, 1.3e-10, inf."""
    return f"{value:.1e}".replace(".0e", "e")


def describe(r: Result) -> str:
    """One failure, in words a reader can act on."""
    if r.error:
        return f"the module raised {r.error} (case {r.case})"
    where = f" block {r.block}" if r.block else ""
    index = f" at {tuple(r.index)}" if r.index else ""
    return (f"{r.array}{where}: worst element{index} expected {r.expected:.10g}, got "
            f"{r.actual:.10g}; relative error {r.max_rel_error:.2e} > {number(r.tolerance)}"
            f" (case {r.case})")


def _worst(arrays: list[Result]) -> Result:
    """The array closest to (or furthest past) its tolerance."""
    return max(arrays, key=lambda r: (not r.passed, r.max_rel_error / r.tolerance
                                      if 0 < r.tolerance < float("inf") else 0.0))


def table(results: list[Result], notes: list[str] = ()) -> str:
    rows = [("cell", "backend", "dtype", "check", "worst array", "max rel. error", "tolerance",
             "result")]
    failures = []
    for (cell, backend, dtype, check), arrays in grouped(results):
        worst = _worst(arrays)
        ok = all(r.passed for r in arrays)
        rows.append((cell, backend, dtype, check, worst.array, f"{worst.max_rel_error:.1e}",
                     number(worst.tolerance), "ok" if ok else "FAIL"))
        failures += [f"FAIL {cell} {backend} {dtype} {check}: {describe(r)}"
                     for r in arrays if not r.passed]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    n_checks = len(rows) - 1
    n_failed = sum(1 for row in rows[1:] if row[-1] == "FAIL")
    lines += ["", *failures] if failures else []
    lines.append(f"\n{n_checks} checks, {n_failed} failed; tolerances are relative errors "
                 "||a - b|| / ||b|| per array (float64 references), scaled to the rounding "
                 "error each problem shows in float32 (see --help).")
    lines += [f"note: {note}" for note in notes]
    return "\n".join(lines) + "\n"


def as_json(results: list[Result], notes: list[str] = ()) -> str:
    """The results only (notes go to stderr): stdout stays one JSON array."""
    return json.dumps([r.as_dict() for r in results], indent=1) + "\n"


def junit(results: list[Result], notes: list[str] = ()) -> str:
    groups = grouped(results)
    failed = sum(1 for _, arrays in groups if not all(r.passed for r in arrays))
    suite = ET.Element("testsuite", name="derive-cells verify", tests=str(len(groups)),
                       failures=str(failed), errors="0")
    if notes:
        properties = ET.SubElement(suite, "properties")
        for note in notes:
            ET.SubElement(properties, "property", name="note", value=note)
    for (cell, backend, dtype, check), arrays in groups:
        case = ET.SubElement(suite, "testcase", classname=f"{cell}.{backend}.{dtype}",
                             name=check)
        bad = [r for r in arrays if not r.passed]
        if bad:
            failure = ET.SubElement(case, "failure", message=describe(bad[0]))
            failure.text = "\n".join(describe(r) for r in bad)
        else:
            worst = _worst(arrays)
            ET.SubElement(case, "system-out").text = (
                f"worst {worst.array}: relative error {worst.max_rel_error:.2e} "
                f"(tolerance {number(worst.tolerance)})")
    ET.indent(suite)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suite, "unicode") + "\n"


FORMATS = {"table": table, "json": as_json, "junit": junit}
