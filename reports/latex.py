"""The LaTeX report: a .tex document (amsmath, graphicx) whose figures are PDF files written
beside it; it compiles with pdflatex from a plain TeX Live (texlive-latex-base)."""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

import jinja2

from derive_cells.plots import render
from derive_cells.reports.build import Report
from derive_cells.reports.content import prediction_label, source_runs
from derive_cells.reports.tex import tex_escape
from derive_cells.train.plots import learning_figures
from derive_cells.verify.decay.plots import decay_figure
from derive_cells.version import __version__

TEMPLATES = Path(__file__).parent / "templates"
def _aligned(latex: str) -> str:
    """'lhs = rhs' -> 'lhs &= rhs' for align environments."""
    for op in (r" \mathrel{+}= ", " = "):
        if op in latex:
            left, right = latex.split(op, 1)
            return f"{left} &{op.strip()} {right}"
    return latex


def _num(value, spec: str) -> str:
    return "--" if value is None else format(value, spec)


def _note_tex(e, slug: str) -> str:
    """from (k) as references to the forward equations, where the adjoint goes, and the
    derivative rules as mathematics."""
    parts = []
    if e.sources:
        parts.append("from " + ", ".join(
            rf"\eqref{{{slug}-eq-{a}}}" if a == b else
            rf"\eqref{{{slug}-eq-{a}}}--\eqref{{{slug}-eq-{b}}}"
            for a, b in source_runs(e.sources)))
    if e.goes:
        parts.append(tex_escape(e.goes).replace("t-1", "$t-1$"))
    parts += [f"${latex}$" for latex, _ in e.rules]
    if not parts and e.note:
        parts.append(tex_escape(e.note))
    return "; ".join(parts)


def _verification_row(r: dict) -> str:
    return " & ".join([tex_escape(r["backend"]), tex_escape(r["dtype"]), tex_escape(r["check"]),
                       tex_escape(r["array"]), f"{r['error']:.1e}", f"{r['tolerance']:.0e}",
                       "ok" if r["passed"] else r"\textbf{FAIL}"])


def render_latex(report: Report, stem: str) -> tuple[str, dict[str, bytes]]:
    """The .tex text and its figures ({file name: PDF bytes})."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES), block_start_string=r"\BLOCK{",
        block_end_string="}", variable_start_string=r"\VAR{", variable_end_string="}",
        comment_start_string=r"\#{", comment_end_string="}", trim_blocks=True,
        autoescape=False, keep_trailing_newline=True, undefined=jinja2.StrictUndefined)
    figures: dict[str, bytes] = {}
    cells = []
    for c in report.cells:
        slug = re.sub(r"[^A-Za-z0-9]", "-", c.name)
        figure = f"{stem}-{slug}-decay.pdf"
        figures[figure] = render(decay_figure(c.decay_measurements, f"{c.name}: gradient norm "
                                              "across timesteps"), "pdf")
        for e in (*c.forward, *c.backward, *c.gradients, *c.jacobian, *c.jacobian_where):
            e.latex_aligned = _aligned(e.latex)
            e.note_tex = _note_tex(e, slug)
            e.more_tex = [m[0] for m in e.more]
        cells.append(SimpleNamespace(
            **{k: getattr(c, k) for k in ("forward", "backward", "gradients", "jacobian",
                                          "jacobian_where", "param_count", "macs",
                                          "bounded", "pascanu", "below_bound",
                                          "theoryless")},
            gate_states=[tex_escape(s) for s in c.gate_states],
            name=tex_escape(c.name), title=tex_escape(c.title), slug=slug,
            regenerate_tex=tex_escape(c.regenerate).replace(r"\_", r"\char95{}"),
            input_tex=tex_escape(c.input), output_tex=tex_escape(c.output),
            state_tex=tex_escape(", ".join(c.state)),
            params=[tuple(tex_escape(v) for v in row) for row in c.params],
            code_text="\n".join(line for line, _ in c.code).replace("\\end{verbatim}", ""),
            verification_tex=[_verification_row(r) for r in c.verification],
            grid_tex=[f"{tex_escape(g['backend'])} & {tex_escape(g['dtype'])} & "
                      f"{g['passed']} / {g['checks']}" for g in c.verification_grid],
            families_tex=[" & ".join([tex_escape(f["family"]), f"{f['passed']} / {f['checks']}",
                                      f"{f['worst']['error']:.1e}",
                                      f"{f['worst']['tolerance']:.0e}",
                                      tex_escape(f"{f['worst']['backend']} "
                                                 f"{f['worst']['dtype']}, "
                                                 f"{f['worst']['array']}")])
                          for f in c.verification_families],
            checks=len(c.verification), passed=sum(r["passed"] for r in c.verification),
            figure=figure, forget=c.decay_forget_bias is not None,
            forget_summary=c.forget_summary and {k: tex_escape(v).replace("\u2013", "--")
                                                  for k, v in c.forget_summary.items()},
            preactivations=[(latex, k) for latex, _, k in c.preactivations],
            direct_paths={tex_escape(s): latex for s, (latex, _) in c.direct_paths.items()},
            decay_tex=[" & ".join(([tex_escape(r["setup"])] if c.decay_forget_bias else []) +
                                  [tex_escape(r["state"]), _num(r["rate"], ".4g"),
                                   f"{r['predicted']:.4g} ({prediction_label(r['kind'])[1]})"
                                   if r["predicted"] is not None else "--",
                                   _num(r["tau"], ".3g"), _num(r["half_life"], ".3g")])
                       for r in c.decay_rows],
            decay_notes_tex=[f"{tex_escape(s)}: {tex_escape(note)}"
                             for s, note in c.decay.get("notes", {}).items()]))
    comparison = ""
    if len(report.cells) > 1:
        comparison = f"{stem}-comparison-decay.pdf"
        figures[comparison] = render(decay_figure([c.decay for c in report.cells],
                                                  "Gradient norm across timesteps"), "pdf")
    learning = None
    if report.learning:
        names = []
        for name, fig in learning_figures(report.learning).items():
            names.append(f"{stem}-learning-{name}.pdf")
            figures[names[-1]] = render(fig, "pdf")
        key = report.learning.get("sweep")
        learning = SimpleNamespace(
            description=tex_escape(report.learning["description"]),
            budget=tex_escape(report.learning_budget), key=key and tex_escape(key),
            metric=tex_escape(report.learning["runs"][0]["metric"]),
            chance=f"{report.learning['runs'][0]['chance']:.3f}",
            rows=[" & ".join(tex_escape(v).replace("–", "--") for v in
                             ([r["cell"]] + ([r["point"]] if key else []) +
                              [r["train"], r["test"], r["reached"], r["seconds"], r["decay"],
                               r["horizon"], r["decay_end"]]))
                  for r in report.learning_rows], figures=names)
    tex = env.get_template("report.tex.j2").render(learning=learning,
        title=tex_escape(report.title), version=__version__, cells=cells,
        decay_setup=tex_escape(report.decay_setup), comparison_figure=comparison)
    return tex, figures
