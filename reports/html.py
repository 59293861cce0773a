"""The HTML report: one self-contained file, MathML for the mathematics (LaTeX kept as its
annotation), plots as inline SVG, no script and nothing fetched from anywhere."""

from __future__ import annotations

import re
from html import escape
from pathlib import Path
from types import SimpleNamespace

import jinja2

from derive_cells.plots import render
from derive_cells.reports.build import Report
from derive_cells.reports.content import prediction_label, source_runs
from derive_cells.reports.notation import aligned_equations, inline_math, math_block
from derive_cells.train.plots import learning_figures
from derive_cells.verify.decay.plots import decay_figure
from derive_cells.version import __version__

TEMPLATES = Path(__file__).parent / "templates"


def inline_svg(svg: bytes, prefix: str) -> str:
    """matplotlib's SVG made fit to sit inside HTML: no prolog, no metadata, no namespace
    URLs, and every id prefixed so that several figures in one page never share one."""
    text = svg.decode("utf-8")
    text = text[text.index("<svg"):]
    text = re.sub(r"<metadata>.*?</metadata>\s*", "", text, flags=re.S)
    text = re.sub(r'\s+xmlns(:\w+)?="[^"]*"', "", text)
    text = re.sub(r'\bid="([^"]+)"', rf'id="{prefix}\1"', text)
    text = re.sub(r"url\(#([^)]+)\)", rf"url(#{prefix}\1)", text)
    text = re.sub(r'href="#([^"]+)"', rf'href="#{prefix}\1"', text)
    return text


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "-", name)


def _note_html(e, slug: str) -> str:
    """from (k) with links to the forward equations, where the adjoint goes, and the
    derivative rules as MathML."""
    parts = []
    if e.sources:
        cites = ", ".join(
            f'(<a href="#{slug}-eq-{a}">{a}</a>)' if a == b else
            f'(<a href="#{slug}-eq-{a}">{a}</a>)\u2013(<a href="#{slug}-eq-{b}">{b}</a>)'
            for a, b in source_runs(e.sources))
        parts.append(f"from {cites}")
    if e.goes:
        parts.append(escape(e.goes))
    parts += [inline_math(latex, mathml) for latex, mathml in e.rules]
    if not parts and e.note:
        parts.append(escape(e.note))
    return "; ".join(parts)


def _equation_html(e, slug: str) -> str:
    anchor = f"{slug}-{e.anchor}" if e.anchor else ""
    return math_block(e.latex, e.mathml, e.number, anchor, _note_html(e, slug))


def render_html(report: Report) -> str:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES),
                             autoescape=True, trim_blocks=False, keep_trailing_newline=True,
                             undefined=jinja2.StrictUndefined)
    cells = []
    for c in report.cells:
        slug = _slug(c.name)
        view = dict(vars(c))
        view["slug"] = slug
        view["regenerate"] = c.regenerate
        for part in ("forward", "backward", "gradients"):
            view[part] = [{"html": _equation_html(e, slug)} for e in getattr(c, part)]
        for part in ("jacobian", "jacobian_where"):
            view[part] = aligned_equations(getattr(c, part))
        view["decay_svg"] = inline_svg(render(decay_figure(c.decay_measurements,
                                                           f"{c.name}: gradient norm across "
                                                           "timesteps"), "svg"),
                                       f"{slug}-decay-")
        view["checks"] = len(c.verification)
        view["passed"] = sum(1 for r in c.verification if r["passed"])
        view["grid"] = c.verification_grid
        view["families"] = c.verification_families
        view["decay_rows"] = [{**r, "kind_html": prediction_label(r["kind"])[0]}
                              for r in c.decay_rows]
        view["gate_states"] = c.gate_states
        view["forget_summary"] = c.forget_summary
        view["bounded"], view["pascanu"] = c.bounded, c.pascanu
        view["below_bound"], view["theoryless"] = c.below_bound, c.theoryless
        view["direct_paths"] = {s: inline_math(*shown) for s, shown in c.direct_paths.items()}
        view["preactivations"] = [(inline_math(latex, mathml), k)
                                  for latex, mathml, k in c.preactivations]
        cells.append(SimpleNamespace(**view))
    comparison = ""
    if len(report.cells) > 1:
        comparison = inline_svg(render(decay_figure([c.decay for c in report.cells],
                                                    "Gradient norm across timesteps"), "svg"),
                                "comparison-")
    learning = None
    if report.learning:
        learning = SimpleNamespace(
            description=report.learning["description"], budget=report.learning_budget,
            rows=report.learning_rows, key=report.learning.get("sweep"),
            metric=report.learning["runs"][0]["metric"],
            chance=report.learning["runs"][0]["chance"],
            target=report.learning["runs"][0]["target"],
            figures=[inline_svg(render(fig, "svg"), f"learning-{name}-")
                     for name, fig in learning_figures(report.learning).items()])
    template = env.get_template("report.html.j2")
    view = SimpleNamespace(title=report.title, cells=cells, decay_setup=report.decay_setup,
                           learning=learning)
    return template.render(report=view, version=__version__, comparison_svg=comparison)
