"""Verification results as a table (one row per check), JSON (one object per array) or JUnit XML
(one testcase per check), with failures spelled out: array, gate block, worst element."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from itertools import groupby

from derive_cells.verify.checks import Result


def _key(r: Result) -> tuple[str, str, str, str]:
    return (r.cell, r.backend, r.dtype, r.check)


def grouped(results: list[Result]):
    """(cell, backend, dtype, check) -> its array results, in the order they were run."""
    return [(key, list(rows)) for key, rows in groupby(results, key=_key)]


def describe(r: Result) -> str:
    """One failure, in words a reader can act on."""
    where = f" block {r.block}" if r.block else ""
    index = f" at {tuple(r.index)}" if r.index else ""
    return (f"{r.array}{where}: worst element{index} expected {r.expected:.10g}, got "
            f"{r.actual:.10g}; relative error {r.max_rel_error:.2e} > {r.tolerance:.0e}"
            f" (case {r.case})")


def table(results: list[Result]) -> str:
    rows = [("cell", "backend", "dtype", "check", "worst array", "max rel. error", "tolerance",
             "result")]
    failures = []
    for (cell, backend, dtype, check), arrays in grouped(results):
        worst = max(arrays, key=lambda r: r.max_rel_error / r.tolerance)
        ok = all(r.passed for r in arrays)
        rows.append((cell, backend, dtype, check, worst.array, f"{worst.max_rel_error:.1e}",
                     f"{worst.tolerance:.0e}", "ok" if ok else "FAIL"))
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
                 "||a - b|| / ||b|| per array (float64 references).")
    return "\n".join(lines) + "\n"


def as_json(results: list[Result]) -> str:
    return json.dumps([r.as_dict() for r in results], indent=1) + "\n"


def junit(results: list[Result]) -> str:
    groups = grouped(results)
    failed = sum(1 for _, arrays in groups if not all(r.passed for r in arrays))
    suite = ET.Element("testsuite", name="derive-cells verify", tests=str(len(groups)),
                       failures=str(failed), errors="0")
    for (cell, backend, dtype, check), arrays in groups:
        case = ET.SubElement(suite, "testcase", classname=f"{cell}.{backend}.{dtype}",
                             name=check)
        bad = [r for r in arrays if not r.passed]
        if bad:
            failure = ET.SubElement(case, "failure", message=describe(bad[0]))
            failure.text = "\n".join(describe(r) for r in bad)
        else:
            worst = max(arrays, key=lambda r: r.max_rel_error)
            ET.SubElement(case, "system-out").text = (
                f"worst {worst.array}: relative error {worst.max_rel_error:.2e} "
                f"(tolerance {worst.tolerance:.0e})")
    ET.indent(suite)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(suite, "unicode") + "\n"


FORMATS = {"table": table, "json": as_json, "junit": junit}
