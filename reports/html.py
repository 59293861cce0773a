"""The HTML report: one self-contained file, MathML for the mathematics (LaTeX kept as its
annotation), plots as inline SVG, no script and nothing fetched from anywhere."""

from __future__ import annotations

import re
from html import escape
from pathlib import Path
from types import SimpleNamespace

import derive_cells
import jinja2
from derive_cells.reports.build import Report
from derive_cells.reports.notation import math_block
from derive_cells.reports.plots import decay_figure, learning_figures, render

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


def _equation_html(e, slug: str) -> str:
    block = math_block(e.latex, e.mathml, e.number, f"{slug}-{e.anchor}" if e.anchor else "")
    if e.note:
        block = block.replace("</div>", f'<span class="note">{escape(e.note)}</span></div>', 1)
    for latex, mathml in e.more:  # a long sum, one term a line
        block += math_block(latex, mathml).replace('class="eq"', 'class="eq cont"', 1)
    return block


def render_html(report: Report) -> str:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES),
                             autoescape=True, trim_blocks=False, keep_trailing_newline=True,
                             undefined=jinja2.StrictUndefined)
    cells = []
    for c in report.cells:
        slug = _slug(c.name)
        view = dict(vars(c))
        view["slug"] = slug
        for part in ("forward", "backward", "gradients", "jacobian", "jacobian_where"):
            view[part] = [{"html": _equation_html(e, slug)} for e in getattr(c, part)]
        view["decay_svg"] = inline_svg(render(decay_figure([c.decay], f"{c.name}: gradient "
                                                           "norm across timesteps"), "svg"),
                                       f"{slug}-decay-")
        view["checks"] = len(c.verification)
        view["passed"] = sum(1 for r in c.verification if r["passed"])
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
    return template.render(report=view, version=derive_cells.__version__, comparison_svg=comparison)
