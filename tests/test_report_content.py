"""What the reports say: every factor of the step Jacobian defined (Cho GRU, MGU), "from (k)"
citing the equation each adjoint line differentiates, the spec's term order in the forward
equations, derivative rules as mathematics, the verification as a summary with the full table
folded away, the LSTM's decay at forget bias 1, and the equation numbers in one column.

Checked on the gathered content and on real renders: pdflatex and pdftotext for the PDF, headless
Chromium for the HTML (a missing program fails in CI, see need())."""

from __future__ import annotations

import html
import json
import re
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import sympy
from test_reports import need

from derive_cells.derivation import derive
from derive_cells.emit import emit
from derive_cells.reports import content as content_module
from derive_cells.reports.content import CellContent, cell_content, check_family
from derive_cells.reports.notation import RULES, spec_order
from derive_cells.spec import load_cell

SPECS = Path(__file__).parent / "specs"
CHO, MGU = str(SPECS / "gru_cho.toml"), str(SPECS / "mgu.toml")

# the LSTM's adjoint lines (by their left side) and the forward equations each differentiates:
# (1)-(4) the gates i, f, c~, o; (5) c_t = f c_{t-1} + i c~; (6) h_t = o tanh(c_t)
LSTM_SOURCES = {
    r"\delta c_{t}": [6], r"\delta o": [6], r"\delta z_{o}": [4], r"\delta \tilde{c}": [5],
    r"\delta z_{\tilde{c}}": [3], r"\delta f": [5], r"\delta z_{f}": [2], r"\delta i": [5],
    r"\delta z_{i}": [1], r"\delta h_{t-1}": [1, 2, 3, 4], r"\delta c_{t-1}": [5]}
GRU_SOURCES = {  # (1) r, (2) z, (3) h~ = tanh(W_in x + b_in + r (W_hn h + b_hn)), (4) h_t
    r"\delta \tilde{h}": [4], r"\delta z_{\tilde{h}}": [3],
    r"\delta\left(W_{hn}\,h_{t-1}\right)": [3], r"\delta z": [4], r"\delta z_{z}": [2],
    r"\delta r": [3], r"\delta z_{r}": [1], r"\delta h_{t-1}": [1, 2, 3, 4]}
RNN_SOURCES = {r"\delta z_{h}": [1], r"\delta h_{t-1}": [1]}


def content(name: str) -> CellContent:
    deriv = derive(load_cell(name))
    return cell_content(deriv, emit(deriv, "numpy"))


def lhs(e) -> str:
    return re.split(r" (?:=|\\mathrel\{\+\}=) ", e.latex, maxsplit=1)[0]


def all_latex(c: CellContent, *parts: str) -> str:
    return "\n".join(text for part in parts for e in getattr(c, part)
                     for text in [e.latex, *(m for m, _ in e.more)])


# --- the gathered content -----------------------------------------------------------------------

@pytest.mark.parametrize("name, expected", [("lstm", LSTM_SOURCES), ("gru", GRU_SOURCES),
                                             ("rnn", RNN_SOURCES)])
def test_each_adjoint_line_cites_the_equation_it_differentiates(name, expected):
    c = content(name)
    assert {lhs(e): e.sources for e in c.backward} == expected
    for e in c.backward:
        assert e.note.startswith("from (")
    # the state adjoints that leave the step say so
    leaving = [e for e in c.backward if re.fullmatch(r"\\delta [a-z]_\{t-1\}", lhs(e))]
    assert leaving and all(e.goes == "passed to step t\u22121" for e in leaving)


def test_lstm_notes_read_as_cited():
    notes = {lhs(e): e.note for e in content("lstm").backward}
    assert notes[r"\delta o"] == "from (6)"
    assert notes[r"\delta c_{t}"] == "from (6); tanh\u2032(z) = 1 \u2212 tanh\u00b2"
    assert notes[r"\delta h_{t-1}"] == "from (1)\u2013(4); passed to step t\u22121"


def test_forward_equations_keep_the_spec_term_order():
    lstm = [e.latex for e in content("lstm").forward]
    assert lstm[0] == r"i = \sigma\left(W_{ii}\,x + b_{ii} + W_{hi}\,h_{t-1} + b_{hi}\right)"
    assert lstm[4] == r"c_{t} = f \odot c_{t-1} + i \odot \tilde{c}"
    assert lstm[5] == r"h_{t} = o \odot \tanh\left(c_{t}\right)"
    gru = [e.latex for e in content("gru").forward]
    assert gru[2] == (r"\tilde{h} = \tanh\left(W_{in}\,x + b_{in} + r \odot \left(W_{hn}\,h_{t-1}"
                      r" + b_{hn}\right)\right)")
    assert gru[3] == r"h_{t} = \left(1 - z\right) \odot \tilde{h} + z \odot h_{t-1}"
    cho = [e.latex for e in content(CHO).forward]
    assert cho[3] == r"h_{t} = z \odot h_{t-1} + \left(1 - z\right) \odot n"
    assert "<mi>W</mi>" in content("lstm").forward[0].mathml.split("<mi>b</mi>")[0]


@pytest.mark.parametrize("spec", sorted(SPECS.glob("*.toml")), ids=lambda p: p.stem)
def test_spec_order_reads_every_spec_as_the_parser_does(spec):
    """The order-keeping expression is the parsed equation, unevaluated (or the parsed one)."""
    for _, expr, text in load_cell(str(spec)).equations:
        assert spec_order(text, expr).doit() == expr


def test_spec_order_keeps_subtraction_and_grouping():
    a, b, c = sympy.symbols("p q s")
    printer = content_module.Notation(derive(load_cell("lstm"))).latex_spec
    assert printer.doprint(spec_order("s - p * q", c - a * b)) == r"s - p \odot q"
    assert printer.doprint(spec_order("q * p - (s + p)", a * b - c - a)) == \
        r"q \odot p - \left(s + p\right)"
    assert printer.doprint(spec_order("-p + s", c - a)) == "- p + s"


@pytest.mark.parametrize("spec, products", [
    (CHO, [r"U_{n}\, \operatorname{diag}\left(r\right)",
           r"U_{n}\, \operatorname{diag}\left(h_{t-1} \odot r \odot \left(1 - r\right)\right)"
           r"\, U_{r}"]),
    (MGU, [r"U_{n}\, \operatorname{diag}\left(f\right)",
           r"U_{n}\, \operatorname{diag}\left(f \odot h_{t-1} \odot \left(1 - f\right)\right)"
           r"\, U_{f}"])])
def test_jacobian_through_a_gated_state_is_multiplied_out(spec, products):
    """U @ (r * h_prev): the operand's block diag(r) + diag(h_{t-1} r (1 - r)) U_r written into
    the product, so the Jacobian names no internal value (n_in) and no undefined block."""
    c = content(spec)
    text = all_latex(c, "jacobian", "jacobian_where")
    for product in products:  # through the state directly, and through the gate's product
        assert product in text
    assert not c.jacobian_where
    for bad in ("n_{in}", "J_", r"\mathrm{?}", r"\partial n", "Partial"):
        assert bad not in text, bad
    # every symbol of the Jacobian and the backward lines is defined: a forward equation's
    # symbol, a parameter, or a pre-activation z_v (defined in the backward section's text)
    defined = set(re.findall(r"\\?[A-Za-z]+(?:\{[^{}]\})?_\{[^{}]+\}", all_latex(
        c, "forward", "gradients")))
    used = set(re.findall(r"\\?[A-Za-z]+(?:\{[^{}]\})?_\{[^{}]+\}", all_latex(
        c, "jacobian", "backward")))
    assert {u for u in used if not u.startswith("z_")} <= defined


def test_a_long_expansion_keeps_the_operand_block_written_as_what_it_computes(monkeypatch):
    monkeypatch.setattr(content_module, "MAX_EXPANDED_TERMS", 1)
    c = content(CHO)
    text = all_latex(c, "jacobian", "jacobian_where")
    assert r"\frac{\partial \left(h_{t-1} \odot r\right)}{\partial h_{t-1}}" in text
    assert "n_{in}" not in text and c.jacobian_where


def test_derivative_rules_are_mathematics():
    assert RULES["sigmoid"][0] == r"\sigma'(z) = \sigma(1-\sigma)"
    assert RULES["tanh"][0] == r"\tanh'(z) = 1-\tanh^2"
    for name in ("lstm", "gru", "rnn"):
        for e in content(name).backward:
            assert "t^2" not in e.note and "s (1 - s)" not in e.note
            for latex, mathml in e.rules:
                assert latex in (RULES["sigmoid"][0], RULES["tanh"][0])
                assert "<mi>" in mathml
    rules = {lhs(e): e.rules for e in content("lstm").backward}
    assert rules[r"\delta z_{o}"] == [RULES["sigmoid"]]
    assert rules[r"\delta c_{t}"] == [RULES["tanh"]]
    assert rules[r"\delta o"] == []


def test_verification_summary_groups_checks():
    rows = [{"backend": b, "dtype": d, "check": check, "array": "d_x", "error": err,
             "tolerance": 1e-6, "passed": err <= 1e-6}
            for b, d, check, err in [
                ("numpy", "float64", "vs autograd forward", 1e-9),
                ("numpy", "float64", "vs autograd gradients", 3e-8),
                ("torch", "float64", "vs autograd gradients", 2e-7),
                ("torch", "float32", "variable lengths, reverse", 2e-5),
                ("torch", "float32", "variable lengths", 1e-7)]]
    c = content("rnn")
    c.verification = rows
    assert c.verification_grid == [
        {"backend": "numpy", "dtype": "float64", "passed": 2, "checks": 2},
        {"backend": "torch", "dtype": "float64", "passed": 1, "checks": 1},
        {"backend": "torch", "dtype": "float32", "passed": 1, "checks": 2}]
    families = {f["family"]: f for f in c.verification_families}
    assert list(families) == ["vs autograd", "variable lengths"]
    assert families["vs autograd"]["worst"]["error"] == 2e-7
    assert (families["variable lengths"]["passed"], families["variable lengths"]["checks"]) \
        == (1, 2)
    assert check_family("finite differences, random directions") == "finite differences"


# --- real renders ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """name -> (Report, HTML text, PDF text (pdftotext -layout)) for the LSTM, the GRU, the
    Cho GRU and the MGU: one build each, rendered both ways, the PDF by pdflatex."""
    need("pdflatex")
    need("pdftotext")
    from derive_cells.reports.build import build
    from derive_cells.reports.html import render_html
    from derive_cells.reports.latex import render_latex

    folder = tmp_path_factory.mktemp("content")
    out = {}
    for name, spec in (("lstm", "lstm"), ("gru", "gru"), ("cho", CHO), ("mgu", MGU)):
        report = build([load_cell(spec)])
        page = folder / f"{name}.html"
        page.write_text(render_html(report), encoding="utf-8")
        tex, figures = render_latex(report, name)
        (folder / f"{name}.tex").write_text(tex, encoding="utf-8")
        for file, pdf in figures.items():
            (folder / file).write_bytes(pdf)
        for _ in range(2):
            run = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error",
                                  f"{name}.tex"], cwd=folder, capture_output=True, text=True)
            assert run.returncode == 0, run.stdout[-2000:]
        words = subprocess.run(["pdftotext", "-layout", str(folder / f"{name}.pdf"), "-"],
                               capture_output=True, text=True, check=True).stdout
        out[name] = (report, page, words)
    return out


def section(text: str, start: str, end: str) -> str:
    return text[text.index(start):text.index(end, text.index(start))]


@pytest.mark.parametrize("name, factors", [
    ("cho", [r"Un\s+diag\s*\(r\)", r"Un\s+diag\s*\(ht−1\s*⊙\s*r\s*⊙\s*\(1\s*−\s*r\)\)\s*Ur"]),
    ("mgu", [r"Un\s+diag\s*\(f\s*\)",
             r"Un\s+diag\s*\(f\s*⊙\s*ht−1\s*⊙\s*\(1\s*−\s*f\s*\)\)\s*Uf"])])
def test_gated_product_jacobian_renders_with_every_factor_defined(rendered, name, factors):
    _, page, words = rendered[name]
    jacobian = section(words, "Per-step Jacobian\n", "Emitted code")
    for pattern in factors:
        assert re.search(pattern, jacobian), pattern
    for bad in (r"J\s*_?\s*\?", r"J\s*n\s*in", r"[∂δ]\s*nin\b", r"\bnin\b"):
        assert not re.search(bad, words), bad
    text = page.read_text()
    html_jacobian = section(text, "-jacobian\">Per-step Jacobian", "-code\">")
    assert "diag" in html_jacobian and "<mtable" in html_jacobian
    for bad in ("J_", "n_{in}", "<mi>in</mi>", r"\mathrm{?}", "J_{n"):
        assert bad not in text, bad


def test_pdf_cites_the_differentiated_equation_beside_each_lstm_line(rendered):
    words = section(rendered["lstm"][2], "Backward (BPTT) equations\nFor", "Parameter gradients")
    cited = dict((int(n), src) for src, n in
                 re.findall(r"from (\(\d+\)(?:–\(\d+\))?)[^\n]*?\((\d+)\)\s*$", words, re.M))
    assert cited == {7: "(6)", 8: "(6)", 9: "(4)", 10: "(5)", 11: "(3)", 12: "(5)", 13: "(2)",
                     14: "(5)", 15: "(1)", 16: "(1)–(4)", 17: "(5)"}
    assert re.search(r"δo = δht ⊙ tanh \(ct \)\s+from \(6\)\s+\(8\)", words)
    assert re.search(r"δct−1 = δct ⊙ f\s+from \(5\); passed to step t − 1\s+\(17\)", words)


def test_html_links_each_citation_to_its_equation(rendered):
    text = rendered["lstm"][1].read_text()
    for math in re.findall(r"<math[ >].*?</math>", text, flags=re.S):  # notes' rules too
        root = ET.fromstring(math)
        assert root.find(".//annotation[@encoding='application/x-tex']") is not None
    rows = re.findall(r'<div class="eq"[^>]*>.*?</div>', text, flags=re.S)
    cites = {}
    for row in rows:
        number = re.search(r'<span class="eqno">\((\d+)\)</span>', row)
        latex = re.search(r'<annotation encoding="application/x-tex">(.*?)</annotation>', row)
        note = re.search(r'<span class="note">(.*)</span>', row, flags=re.S)
        if number and note:
            left = re.split(r" (?:=|\\mathrel\{\+\}=) ", html.unescape(latex.group(1)))[0]
            cites[left] = [int(k) for k in re.findall(r'href="#lstm-eq-(\d+)"', note.group(1))]
    assert cites == {k: v if len(v) < 3 else [v[0], v[-1]] for k, v in LSTM_SOURCES.items()}


def test_pdf_keeps_the_spec_term_order_and_has_no_ascii_powers(rendered):
    lstm, gru = rendered["lstm"][2], rendered["gru"][2]
    assert re.search(r"ct = f ⊙ ct−1 \+ i ⊙ c̃", lstm)  # f ⊙ c_{t-1} before i ⊙ c~
    assert re.search(r"i = σ \(Wii x \+ bii \+ Whi ht−1 \+ bhi \)", lstm)
    assert re.search(r"h̃ = tanh \(Win x \+ bin \+ r ⊙ \(Whn ht−1 \+ bhn \)\)", gru)
    assert re.search(r"tanh′ \(z\) = 1 − tanh2", lstm)
    assert re.search(r"σ\s*\(z\) = σ\(1 − σ\)", lstm)
    for name, (_, _, words) in rendered.items():
        assert "^2" not in words and "t^" not in words, name
        assert "tˆ" not in words and "ˆ2" not in words, name


def test_verification_is_a_summary_with_the_full_table_folded(rendered):
    report, page, words = rendered["lstm"]
    text = page.read_text()
    part = section(text, '-verification">Verification', '-decay">')
    checks = len(report.cells[0].verification)
    assert f"{checks} of {checks} checks passed" in part
    assert part.count("<details>") == 1 and f"All {checks} checks" in part
    summary, folded = part.split("<details>")
    assert "numpy</td><td>float32" in summary and "vs autograd</td>" in summary
    assert folded.count("<tr>") == checks + 1
    assert "per-step Jacobian" in summary and "finite differences</td>" in summary
    # the PDF: the summary in the section, every check in an appendix
    assert re.search(rf"{checks} of {checks} checks passed", words)
    appendix = words[words.index("Verification, every check\n", words.index("Gradient decay\n")):]
    assert appendix.count("vs autograd gradients") == 4  # each backend and dtype
    body = section(words, "Verification\nEmitted", "Gradient decay\n")
    assert "vs autograd gradients" not in body and "vs autograd" in body


def test_lstm_decay_is_measured_again_with_forget_bias_1(rendered):
    report, page, words = rendered["lstm"]
    cell = report.cells[0]
    default, biased = cell.decay, cell.decay_forget_bias
    assert biased is not None and biased["prediction"]["c"] == "gate product"
    # the cell state carries the gradient: slower decay, near sigma(1) ~ 0.73 per step
    assert biased["rate_per_step"]["c"] > default["rate_per_step"]["c"] + 0.1
    assert 0.6 < biased["predicted_rate_per_step"]["c"] < 0.76
    text = page.read_text()
    assert 'id="lstm-decay-measured-lstm__forget_bias_1-c"' in text
    assert text.count("<td>forget bias 1</td>") == 2  # h and c
    assert "Jozefowicz" in text and "gate product</em> is the rate" in text
    decay = words[words.index("Gradient decay\n", words.index("Verification\nEmitted")):]
    assert "Forget bias 1." in decay and "forget bias 1" in decay
    assert re.search(r"forget bias 1\s+c\s+0\.8", decay)
    assert "carries the gradient" in decay
    # a cell without a forget gate measures once
    assert rendered["gru"][0].cells[0].decay_forget_bias is None
    assert "Forget bias 1." not in rendered["gru"][2]


def test_equation_numbers_sit_in_one_right_aligned_column(rendered, tmp_path):
    """Measured in headless Chromium: the right edge of every number's text, and the number
    column's box, at the same x for every equation of the page."""
    chromium = need("chromium")
    probe = """<script>
const out = [...document.querySelectorAll('.eqno')].map(e => {
  const box = e.getBoundingClientRect(), range = document.createRange();
  range.selectNodeContents(e);
  return [e.textContent, box.left, box.right, range.getBoundingClientRect().right]; });
document.body.setAttribute('data-eqno', JSON.stringify(out));
</script></body>"""
    for name in ("lstm", "cho"):
        page = tmp_path / f"{name}.html"
        page.write_text(rendered[name][1].read_text().replace("</body>", probe))
        for width in (1000, 1400):
            run = subprocess.run(
                [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
                 f"--window-size={width},2400", "--dump-dom", page.as_uri()],
                capture_output=True, text=True, timeout=120)
            found = re.search(r'data-eqno="([^"]*)"', run.stdout)
            assert found, run.stderr[-2000:]
            rows = json.loads(html.unescape(found.group(1)))
            numbers = [int(r[0].strip("()")) for r in rows]
            assert numbers == list(range(1, len(numbers) + 1)) and len(numbers) > 10
            for k in (1, 2, 3):  # box left, box right, text right
                xs = [r[k] for r in rows]
                assert max(xs) - min(xs) < 0.5, (name, width, k, xs)


def test_pdf_keeps_the_space_after_the_pre_activations(rendered):
    words = rendered["lstm"][2]
    assert re.search(r"zi , zf , zc̃ , zo are the\s+pre-activations", words)
    assert "zoare" not in words and "z_oare" not in words
    assert re.search(r"zr , zz , zh̃ are the\s+pre-activations", rendered["gru"][2])


def test_pdf_cites_a_spec_cells_path_in_its_regenerate_command(rendered):
    for name, spec in (("cho", CHO), ("mgu", MGU)):
        words = rendered[name][2]
        assert f"From derive-cells {spec} --emit numpy" in words
        assert f"derive-cells {Path(spec).stem} --emit" not in words
        assert f"derive-cells {load_cell(spec).name} --emit" not in words
    assert "From derive-cells lstm --emit numpy" in rendered["lstm"][2]
    report, page, _ = rendered["mgu"]
    cited = re.search(r"<p>From <code>(.*?)</code>", page.read_text())[1]
    assert cited == f"derive-cells {MGU} --emit numpy"
    done = subprocess.run(["derive-cells", *cited.split()[1:]], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert f"Regenerate with:  {cited}" in done.stdout
    listed = [line for line, _ in report.cells[0].code if line.strip()]
    assert all(line in done.stdout.splitlines() for line in listed)


# --- the decay theory says "bound" only where it is one -------------------------------------------

BOUND_SPECS = {"scaled": "tanh(W @ x + U @ (3 * h_prev) + b)",
               "mi_rnn": "tanh(a * (W @ x) * (U @ h_prev) + b1 * (U @ h_prev) + b2 * (W @ x) + b)"}


def decay_report(spec: str):
    """The report of one cell with its decay measured (no verification): (content, HTML, .tex
    text)."""
    import tempfile

    from derive_cells.reports.build import Report, _decay
    from derive_cells.reports.html import render_html
    from derive_cells.reports.latex import render_latex
    from derive_cells.verify.modules import emit_and_import

    deriv = derive(load_cell(spec))
    c = cell_content(deriv, emit(deriv, "numpy"))
    c.decay = _decay(deriv, emit_and_import(deriv, "numpy", Path(tempfile.mkdtemp())))
    report = Report([c], "T=100")
    return c, render_html(report), render_latex(report, "r")[0]


@pytest.fixture(scope="module")
def bound_specs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bounds")
    out = {}
    for name, equation in BOUND_SPECS.items():
        path = folder / f"{name}.toml"
        path.write_text(f'name = "{name}"\ninput = "x"\nstate = ["h"]\noutput = "h"\n'
                        f'[equations]\nh = "{equation}"\n')
        out[name] = str(path)
    return out


def plain(html_text: str) -> str:
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", "", html_text)))


def test_rnn_report_keeps_pascanus_bound_and_the_rate_below_it():
    c, page, tex = decay_report("rnn")
    (row,) = c.decay_rows
    assert row["kind"] == "Pascanu bound: gamma * sigma_max(W)"
    assert row["rate"] < row["predicted"]
    assert (c.bounded, c.pascanu, c.below_bound, c.theoryless) == (True, True, True, False)
    assert "the measured rate lies below it" in plain(page)
    assert "measured rate lies below it" in re.sub(r"\s+", " ", tex)
    assert "Pascanu, Mikolov &amp; Bengio (2013), with γ" in page


def test_a_scaled_h_prev_is_reported_with_the_bound_that_holds(bound_specs):
    c, page, tex = decay_report(bound_specs["scaled"])
    (row,) = c.decay_rows
    assert row["kind"] == "bound: 3 * sigma_max(U)" and row["rate"] <= row["predicted"]
    assert (c.bounded, c.pascanu, c.below_bound) == (True, False, True)
    text = plain(page)
    assert f"{row['predicted']:.4g} (bound 3 · σmax(U))" in text
    assert "every factor between ht−1 and ht taken at its largest" in text
    assert "the measured rate lies below it" in text
    assert r"bound 3 $\cdot$ $\sigma_{\max}$(U)" in tex


def test_no_bound_and_no_below_sentence_for_multiplicative_integration(bound_specs):
    c, page, tex = decay_report(bound_specs["mi_rnn"])
    (row,) = c.decay_rows
    assert row["kind"] is None and row["predicted"] is None and row["rate"] is not None
    assert (c.bounded, c.below_bound, c.theoryless) == (False, None, True)
    text = plain(page)
    for said in ("bound γ", "lies below", "Pascanu"):
        assert said not in text and said not in tex
    assert "A state without a theory (–) has neither a direct elementwise path nor a bound" \
        in text


def test_a_rate_above_a_bound_is_not_called_below_it():
    from derive_cells.reports.build import Report
    from derive_cells.reports.html import render_html
    from derive_cells.reports.latex import render_latex

    c = content("rnn")
    n = 50
    c.decay = {"cell": "rnn", "steps": n, "dtype": "float64", "distance": list(range(n)),
               "log10_norm": {"h": [-0.02 * d for d in range(n)]},
               "log10_spread": {"h": [0.0] * n}, "rate_per_step": {"h": 0.95},
               "predicted_rate_per_step": {"h": 0.9},
               "prediction": {"h": "Pascanu bound: gamma * sigma_max(W)"},
               "time_constant": {"h": None}, "half_life": {"h": None}, "jacobian": {},
               "notes": {}}
    assert c.below_bound is False
    page, tex = render_html(Report([c], "")), render_latex(Report([c], ""), "r")[0]
    for text in (plain(page), " ".join(tex.split())):
        assert "lies below" not in text
        assert "the measured rate lies above it here, which a bound excludes" in text
    c.decay["rate_per_step"]["h"] = 0.9 * (1 + 1e-12)  # at the bound, up to rounding
    assert c.below_bound is True
