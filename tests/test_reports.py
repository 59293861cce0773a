"""HTML and LaTeX reports: structure, self-containment, escaping, determinism, and real renders
(headless Chromium, pdflatex, pdftotext) where those programs are installed; CI installs them."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import unicodedata
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from derive_cells.cli import main

IN_CI = bool(os.environ.get("CI"))


def need(program: str):
    """The program's path; in CI a missing program is a failure, elsewhere a skip."""
    path = shutil.which(program)
    if path is None:
        if IN_CI:
            pytest.fail(f"{program} is not installed (.ci/run installs it)")
        pytest.skip(f"{program} is not installed")
    return path


def _report(*args, env=None):
    result = CliRunner().invoke(main, ["report", *args], env=env)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    folder = tmp_path_factory.mktemp("reports")
    out = {}
    for name, cells in (("lstm", ["lstm"]), ("cells", ["rnn", "gru"])):
        for ext in ("html", "tex"):
            path = folder / f"{name}.{ext}"
            code, _, err = _report(*cells, "-o", str(path))
            assert code == 0, err
            out[name, ext] = path
    return out


class Collector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.ids, self.hrefs, self.attrs = [], [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        a = dict(attrs)
        self.attrs.append((tag, a))
        if "id" in a:
            self.ids.append(a["id"])
        for key in ("href", "src", "xlink:href"):
            if key in a:
                self.hrefs.append(a[key])


def test_html_has_mathml_for_every_equation_and_an_svg_plot(built):
    text = built["lstm", "html"].read_text()
    c = Collector()
    c.feed(text)
    maths = re.findall(r"<math display=\"block\">.*?</math>", text, flags=re.S)
    for m in maths:  # each one well-formed, MathML Core only, with its LaTeX
        root = ET.fromstring(m)
        assert root.find(".//annotation[@encoding='application/x-tex']") is not None
    assert "mfenced" not in text
    assert not re.search(r'mathvariant="(?!normal")', text)
    # 6 forward equations, 11 adjoint lines (see the derivation), all numbered
    numbers = re.findall(r'<span class="eqno">\((\d+)\)</span>', text)
    assert numbers == [str(k) for k in range(1, 18)]
    assert len(maths) >= 17
    tex_sources = [ET.fromstring(m).find(".//annotation").text for m in maths]
    assert any(r"\delta z_{o} = \delta o \odot o \odot \left(1 - o\right)" in t
               for t in tex_sources)
    assert c.tags.count("svg") == 1 and "path" in c.tags
    assert "script" not in c.tags


def test_html_is_self_contained_and_its_links_resolve(built):
    for key in (("lstm", "html"), ("cells", "html")):
        text = built[key].read_text()
        c = Collector()
        c.feed(text)
        assert not re.search(r"https?:|//[a-z]", text.replace("</", "")), "an external URL"
        assert len(c.ids) == len(set(c.ids)), "duplicate ids"
        for href in c.hrefs:
            assert href.startswith("#") and href[1:] in c.ids, href
        code_links = [h for h in c.hrefs if "-eq-" in h]
        assert code_links  # the code listing points at its equations


def test_several_cells_add_a_comparison(built):
    text = built["cells", "html"].read_text()
    assert '<section id="comparison">' in text
    comparison = text[text.index('<section id="comparison">'):text.index("</section>")]
    assert comparison.count("<tr>") == 3  # header + rnn + gru
    assert "measured-rnn-h" in comparison and "measured-gru-h" in comparison
    assert text.count("<svg") == 3  # the comparison and one per cell


def test_titles_and_names_from_a_spec_are_escaped(tmp_path):
    spec = tmp_path / "hostile.toml"
    spec.write_text(
        'name = "odd"\ntitle = "<script>alert(1)</script> & $\\\\input{/etc/passwd}$ 100% #1"\n'
        'input = "x"\nstate = ["h"]\noutput = "h"\n[equations]\n'
        'h = "tanh(W @ x + U @ h_prev + b)"\n')
    html = tmp_path / "odd.html"
    code, _, err = _report(str(spec), "-o", str(html))
    assert code == 0, err
    text = html.read_text()
    assert "<script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    tex = tmp_path / "odd.tex"
    code, _, err = _report(str(spec), "-o", str(tex))
    assert code == 0, err
    source = tex.read_text()
    assert r"\input{/etc/passwd}" not in source and r"\textbackslash{}input" in source
    if shutil.which("pdflatex") or IN_CI:
        need("pdflatex")
        pdf = tmp_path / "odd.pdf"
        code, _, err = _report(str(spec), "-o", str(pdf))
        assert code == 0, err
        words = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True,
                               text=True).stdout
        assert "<script>alert(1)</script> & $\\input{/etc/passwd}$ 100% #1" in words


def test_same_inputs_same_bytes_and_failures_leave_no_file(tmp_path, built):
    again = tmp_path / "lstm.html"
    assert _report("lstm", "-o", str(again))[0] == 0
    assert again.read_bytes() == built["lstm", "html"].read_bytes()
    bad = tmp_path / "never.html"
    code, _, err = _report("lstm", "nope", "-o", str(bad))
    assert code == 2 and "unknown cell" in err and not bad.exists()
    code, _, err = _report("lstm", "-o", str(tmp_path / "x.docx"))
    assert code == 2 and "cannot tell the format" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lstm.html"]  # no temporaries left


def test_pdf_without_pdflatex_exits_2_saying_what_to_install(tmp_path):
    code, _, err = _report("rnn", "-o", str(tmp_path / "r.pdf"), env={"PATH": "/nonexistent"})
    assert code == 2 and "texlive-latex-base" in err
    assert not (tmp_path / "r.pdf").exists()


def test_tex_compiles_and_the_pdf_says_what_it_should(built, tmp_path):
    need("pdflatex")
    need("pdftotext")
    tex = built["lstm", "tex"]
    figures = sorted(p.name for p in tex.parent.glob("lstm-*.pdf"))
    assert figures == ["lstm-lstm-decay.pdf"]  # the plot, as a PDF beside the .tex
    for _ in range(2):
        run = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error",
                              tex.name], cwd=tex.parent, capture_output=True, text=True)
        assert run.returncode == 0, run.stdout[-2000:]
    words = subprocess.run(["pdftotext", str(tex.with_suffix(".pdf")), "-"],
                           capture_output=True, text=True).stdout
    assert "lstm: Long short-term memory" in words
    assert "δzo = δo ⊙ o ⊙ (1 − o)" in words  # an adjoint equation, as text
    assert "Verification" in words and "Gradient decay" in words


def test_html_renders_in_headless_chromium(built, tmp_path):
    chromium = need("chromium")
    shot = tmp_path / "page.png"
    run = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1000,2400",
         f"--screenshot={shot}", built["cells", "html"].as_uri()],
        capture_output=True, text=True, timeout=120)
    assert shot.exists(), run.stderr[-2000:]
    from matplotlib.image import imread

    img = imread(shot)[..., :3]
    assert img.shape[:2] == (2400, 1000)
    dark = (img.mean(axis=2) < 0.35).mean()
    assert 0.005 < dark < 0.5  # text is there, and the page is not a black box
    colored = (np.abs(img[..., 0] - img[..., 2]) > 0.3).sum()
    assert colored > 300  # the plot's coloured curves


def test_report_help_explains():
    result = CliRunner().invoke(main, ["report", "--help"])
    assert result.exit_code == 0 and "--format" in result.output and "pdflatex" in result.output


def test_written_figures_are_pdf(built):
    pdf = Path(built["cells", "tex"]).parent / "cells-comparison-decay.pdf"
    assert pdf.read_bytes().startswith(b"%PDF")


UNICODE_TITLE = "Zellé – ∑ 🚀 中文"


def test_a_unicode_title_gives_a_pdf_that_shows_it(tmp_path):
    """Every character a spec's title may hold is set by a plain TeX Live: accented letters
    through LaTeX's accents, symbols through math, the rest as a visible code point."""
    from derive_cells.reports.tex import tex_escape

    assert tex_escape(UNICODE_TITLE) == (r"Zell\'{e} \textendash{} $\sum$ \texttt{U+1F680} "
                                         r"\texttt{U+4E2D}\texttt{U+6587}")
    assert tex_escape("naïve Ångström ệ Ω ß") == \
        r'na\"{\i}ve \r{A}ngstr\"{o}m \^{\d{e}} $\Omega$ \ss{}'
    need("pdflatex")
    need("pdftotext")
    spec = tmp_path / "zelle.toml"
    spec.write_text(f'name = "zelle"\ntitle = "{UNICODE_TITLE}"\ninput = "x"\nstate = ["h"]\n'
                    'output = "h"\n[equations]\nh = "tanh(W @ x + U @ h_prev + b)"\n',
                    encoding="utf-8")
    pdf = tmp_path / "zelle.pdf"
    code, _, err = _report(str(spec), "-o", str(pdf))
    assert code == 0, err
    assert "pdflatex failed" not in err
    words = unicodedata.normalize("NFC", subprocess.run(
        ["pdftotext", str(pdf), "-"], capture_output=True, text=True).stdout)
    assert "zelle: Zellé –" in words
    assert "U+1F680 U+4E2DU+6587" in words


def test_a_distance_sweep_draws_small_panels_with_one_short_legend(tmp_path):
    """The Learning section of the README's sweep (50 runs: 10 configurations x 5 distances): one
    panel per distance, one legend of the configurations, no matplotlib warning."""
    import json
    import warnings

    from derive_cells.reports.build import Report
    from derive_cells.reports.html import render_html
    from derive_cells.reports.latex import render_latex
    from derive_cells.train.plots import learning_figures

    result = json.loads((Path(__file__).parent.parent / "docs" / "learning" /
                         "distance.json").read_text())
    cells = list(dict.fromkeys(r["cell"] for r in result["runs"]))
    distances = sorted({r["info"]["distance"] for r in result["runs"]})
    assert (len(result["runs"]), len(cells), len(distances)) == (50, 10, 5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        figures = learning_figures(result)
        assert list(figures) == ["curves", "sweep"]
        panels = [ax for ax in figures["curves"].axes if ax.get_visible()]
        assert [ax.get_title() for ax in panels] == [f"distance = {d}" for d in distances]
        for ax in panels:
            assert ax.get_legend() is None
            assert len([ln for ln in ax.get_lines() if ln.get_gid()]) == len(cells)
        (legend,) = figures["curves"].legends
        assert [t.get_text() for t in legend.get_texts()] == [*cells, "chance"]
        assert len(figures["sweep"].axes[0].get_legend().get_texts()) == len(cells) + 1
        page = render_html(Report([], "", result))
        tex, pdfs = render_latex(Report([], "", result), "r")
    assert page.count('id="learning-curves-test_metric-') == 50
    assert 'id="learning-curves-test_metric-gru-distance_80"' in page
    assert sorted(pdfs) == ["r-learning-curves.pdf", "r-learning-sweep.pdf"]
    assert r"\includegraphics[width=\linewidth]{r-learning-curves.pdf}" in tex
    saved = Path(__file__).parent.parent / "docs" / "learning" / "distance.json"
    done = subprocess.run([sys.executable, "-m", "derive_cells.cli", "report", "rnn", "--train",
                           str(saved), "-o", str(tmp_path / "r.html")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "Warning" not in done.stderr and "warn" not in done.stderr.lower()


def test_a_sweep_over_many_values_shows_the_sweep_plot_alone():
    import json

    from derive_cells.train.plots import MAX_PANELS, learning_figures

    result = json.loads((Path(__file__).parent.parent / "docs" / "learning" /
                         "distance.json").read_text())
    cells = len({r["cell"] for r in result["runs"]})
    for k, run in enumerate(result["runs"]):
        run["info"] = {**run["info"], "distance": 1 + k // 2}  # 25 distances
    assert len({r["info"]["distance"] for r in result["runs"]}) == 25 > MAX_PANELS
    figures = learning_figures(result)
    assert list(figures) == ["sweep"]
    assert len(figures["sweep"].axes[0].get_legend().get_texts()) == cells + 1
