"""The LaTeX report: a .tex document (amsmath, graphicx) whose figures are PDF files written
beside it; it compiles with pdflatex from a plain TeX Live (texlive-latex-base)."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from types import SimpleNamespace

import jinja2

import derive_cells
from derive_cells.display import GREEK
from derive_cells.reports.build import Report
from derive_cells.reports.content import prediction_label, source_runs
from derive_cells.reports.plots import decay_figure, learning_figures, render

TEMPLATES = Path(__file__).parent / "templates"
_SPECIAL = {"\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "$": r"\$", "&": r"\&",
            "#": r"\#", "^": r"\^{}", "_": r"\_", "%": r"\%", "~": r"\textasciitilde{}",
            "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}"}


# what pdflatex sets from a plain TeX Live (OT1 text fonts, math fonts) for characters beyond
# ASCII; an accented Latin letter is its base letter under LaTeX's accent commands, and anything
# else is written as its code point, U+XXXX, so that every title compiles and stays legible
_TEXT = {"\u2013": r"\textendash{}", "\u2014": r"\textemdash{}", "\u2018": "`", "\u2019": "'",
         "\u201c": "``", "\u201d": "''", "\u2026": r"\dots{}", "\u2212": "-", "\u00a0": "~",
         "\u00df": r"\ss{}", "\u00e6": r"\ae{}", "\u00c6": r"\AE{}", "\u0153": r"\oe{}",
         "\u0152": r"\OE{}", "\u00f8": r"\o{}", "\u00d8": r"\O{}", "\u0142": r"\l{}",
         "\u0141": r"\L{}", "\u0131": r"\i{}", "\u00a1": "!`", "\u00bf": "?`", "\u00a7": r"\S{}",
         "\u00b6": r"\P{}", "\u2020": r"\dag{}", "\u2021": r"\ddag{}", "\u00a9": r"\copyright{}",
         "\u00a3": r"\pounds{}", "\u2022": r"\textbullet{}"}
_MATH = {"\u00d7": r"\times", "\u00b1": r"\pm", "\u00b7": r"\cdot", "\u2192": r"\to",
         "\u2190": r"\leftarrow", "\u2264": r"\leq", "\u2265": r"\geq", "\u2260": r"\neq",
         "\u2248": r"\approx", "\u221e": r"\infty", "\u2202": r"\partial", "\u2207": r"\nabla",
         "\u2211": r"\sum", "\u220f": r"\prod", "\u222b": r"\int", "\u221a": r"\surd",
         "\u2208": r"\in", "\u2299": r"\odot", "\u00b0": r"{}^\circ", "\u00b5": r"\mu",
         "\u00f7": r"\div", "\u00ac": r"\neg", "\u2200": r"\forall", "\u2203": r"\exists",
         "\u2227": r"\wedge", "\u2228": r"\vee", "\u2032": r"\prime",
         **{char: "\\" + name for name, char in GREEK.items()}}
_ACCENTS = {"\u0300": "`", "\u0301": "'", "\u0302": "^", "\u0303": "~", "\u0308": '"',
            "\u0304": "=", "\u0307": ".", "\u0306": "u", "\u030c": "v", "\u030b": "H",
            "\u030a": "r", "\u0327": "c", "\u0323": "d", "\u0331": "b"}


def _tex_char(c: str) -> str:
    if c in _SPECIAL:
        return _SPECIAL[c]
    if c.isascii():
        return c
    if c in _TEXT:
        return _TEXT[c]
    if c in _MATH:
        return f"${_MATH[c]}$"
    base, *marks = unicodedata.normalize("NFD", c)
    if base.isascii() and base.isalpha() and marks and all(m in _ACCENTS for m in marks):
        out = {"i": r"\i", "j": r"\j"}.get(base, base)
        for m in marks:
            out = rf"\{_ACCENTS[m]}{{{out}}}"
        return out
    return rf"\texttt{{U+{ord(c):04X}}}"


def tex_escape(text: object) -> str:
    r"""Plain text that pdflatex prints as it is (names and titles from a spec included): LaTeX's
    special characters escaped, every other character one that a plain TeX Live can set.

    >>> print(tex_escape("Zellé – ∑ 🚀 50% #1"))
    Zell\'{e} \textendash{} $\sum$ \texttt{U+1F680} 50\% \#1
    """
    return "".join(_tex_char(c) for c in str(text))


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
                              [r["train"], r["test"], r["reached"], r["seconds"], r["decay"]]))
                  for r in report.learning_rows], figures=names)
    tex = env.get_template("report.tex.j2").render(learning=learning,
        title=tex_escape(report.title), version=derive_cells.__version__, cells=cells,
        decay_setup=tex_escape(report.decay_setup), comparison_figure=comparison)
    return tex, figures
