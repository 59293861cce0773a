"""Render a report and write it: HTML, LaTeX (figures as PDF files beside it) or PDF (through
pdflatex). The command line and the Python API both call write_report."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from derive_cells import output as _output

FORMATS = {".html": "html", ".htm": "html", ".tex": "tex", ".pdf": "pdf"}


class ReportError(ValueError):
    """A report that cannot be written as asked (format, a missing pdflatex, pdflatex failing)."""


def report_format(path: str, fmt: str | None) -> str:
    """The format asked for, or the one the file's extension names; checks what it needs."""
    fmt = fmt or (None if path == "-" else FORMATS.get(Path(path).suffix.lower()))
    if fmt is None:
        raise ReportError(f"{path}: cannot tell the format from the extension; use --format "
                          "html|tex|pdf or a .html, .tex or .pdf file")
    if fmt not in ("html", "tex", "pdf"):
        raise ReportError(f"format must be html, tex or pdf, not {fmt!r}")
    if fmt == "tex" and path == "-":
        raise ReportError("--format tex writes its figures as files beside the .tex; give "
                          "-o FILE.tex")
    if fmt == "pdf" and shutil.which("pdflatex") is None:
        raise ReportError("--format pdf runs pdflatex, which is not installed (Debian/Ubuntu: "
                          "apt-get install texlive-latex-base); --format tex writes the .tex "
                          "to compile elsewhere")
    return fmt


def render(cells, fmt: str, stem: str, learning: dict | None = None,
           progress=None) -> tuple[str | bytes, dict[str, bytes]]:
    """(the document, {figure file name: PDF bytes} to write beside a .tex)."""
    from derive_cells.reports.build import build

    data = build(cells, progress=progress, learning=learning)
    if fmt == "html":
        from derive_cells.reports.html import render_html

        return render_html(data), {}
    from derive_cells.reports.latex import render_latex

    tex, figures = render_latex(data, stem)
    if fmt == "tex":
        return tex, figures
    return pdflatex(tex, figures, stem), {}


def figure_paths(path: str, figures) -> dict[str, str]:
    return {f"figure {name}": str(Path(path).parent / name) for name in figures}


def write_report(cells, path: str | os.PathLike, fmt: str | None = None,
                 learning: dict | None = None, progress=None) -> Path:
    """Render the report of the parsed cells and write it to path (and a .tex's figures
    beside it); returns the path."""
    path = os.fspath(path)
    fmt = report_format(path, fmt)
    stem = "report" if path == "-" else Path(path).stem
    document, figures = render(cells, fmt, stem, learning, progress)
    for name, pdf in figures.items():
        _output.write(str(Path(path).parent / name), pdf)
    _output.write(path, document)
    return Path(path)


def pdflatex(tex: str, figures: dict[str, bytes], stem: str) -> bytes:
    """Compile in a temporary folder (twice, for the table of contents); return the PDF."""
    with tempfile.TemporaryDirectory(prefix="derive-cells-pdf-") as tmp:
        folder = Path(tmp)
        (folder / f"{stem}.tex").write_text(tex, encoding="utf-8")
        for name, pdf in figures.items():
            (folder / name).write_bytes(pdf)
        # fixed dates and IDs: the same document gives the same bytes
        env = {**os.environ, "SOURCE_DATE_EPOCH": "0", "FORCE_SOURCE_DATE": "1"}
        for _ in range(2):
            run = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error",
                                  "-no-shell-escape", f"{stem}.tex"], cwd=folder, env=env,
                                 capture_output=True, text=True, errors="replace", timeout=300)
            if run.returncode != 0:
                tail = "\n".join(run.stdout.splitlines()[-25:])
                raise ReportError(f"pdflatex failed:\n{tail}")
        return (folder / f"{stem}.pdf").read_bytes()
