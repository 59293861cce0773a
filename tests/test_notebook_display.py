"""The notebook display of a derivation (`_repr_latex_`, `_repr_markdown_`, `_repr_html_`) shows
every term of the per-step Jacobian that the text view (`derive-cells CELL`) shows, for every
built-in cell and every spec cell of the tests, and defines the pre-activation names it uses."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import derive_cells as dc
from derive_cells.derivation import derive
from derive_cells.emit.text import derivation_text
from derive_cells.reports.content import MAX_EXPANDED_TERMS
from derive_cells.spec import load_cell

SPECS = sorted(str(p) for p in (Path(__file__).parent / "specs").glob("*.toml"))
CELLS = [*dc.list_cells(), *SPECS]


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DERIVE_CELLS_CACHE", str(tmp_path / "cache"))


def text_jacobian(text: str):
    """The text view's Jacobian: state blocks {(s, sp): [operand or None per term]}, operand
    blocks {(operand, sp): [...]} and the number of named tangents."""
    section = text.split("## Per-step Jacobian", 1)[1].splitlines()[1:]
    states, operands, tangents = {}, {}, 0
    blocks, current = states, None
    for line in section:
        if line.startswith("where ("):
            blocks = operands
        elif line.startswith("_D_"):
            tangents += 1
        elif m := re.match(r"d(\w+)/d(\w+)_prev = (.*)$", line):
            current = blocks.setdefault((m[1], m[2]), [])
            if m[3] != "0":
                current.append(m[3])
        elif line.startswith("    + "):
            current.append(line[6:])
    def operand(term: str) -> str | None:
        m = re.search(r" d(\w+)/d\w+_prev$", term)
        return m[1] if m else None
    return ({k: [operand(t) for t in v] for k, v in states.items()},
            {k: [operand(t) for t in v] for k, v in operands.items()}, tangents)


def expanded(terms, sp, operands, depth=0) -> int:
    """Terms of a block with every operand block multiplied out."""
    if depth > 4:
        return MAX_EXPANDED_TERMS + 1
    return sum(1 if op is None else expanded(operands[(op, sp)], sp, operands, depth + 1)
               for op in terms)


def expected_rows(text: str) -> tuple[list[int], list[int]]:
    """Rows per equation the display must show: (Jacobian blocks, "where" equations)."""
    states, operands, tangents = text_jacobian(text)
    full = [expanded(terms, sp, operands) for (_, sp), terms in states.items()]
    if all(n <= MAX_EXPANDED_TERMS for n in full):
        return [max(n, 1) for n in full], [1] * tangents
    return ([max(len(t), 1) for t in states.values()],
            [max(len(t), 1) for t in operands.values()] + [1] * tangents)


def latex_rows(shown: str) -> tuple[list[int], list[int]]:
    out = {"Per-step Jacobian": [], "where": []}
    rows = None
    for line in shown.splitlines():
        if m := re.fullmatch(r"&\\text\{(.*)\} \\\\", line):
            rows = out.get(m[1])
        elif rows is not None and line.startswith(r"&\qquad + "):
            rows[-1] += 1
        elif rows is not None and line.startswith("&"):
            rows.append(1)
    return out["Per-step Jacobian"], out["where"]


def markdown_rows(shown: str) -> tuple[list[int], list[int]]:
    out = {"Per-step Jacobian": [], "where": []}
    rows = None
    for part in shown.split("\n\n"):
        if m := re.fullmatch(r"\*\*(.*)\*\*", part):
            rows = out.get(m[1])
        elif rows is not None and part.startswith("$$"):
            rows.append(part.count("\\\\\n") + 1)
    return out["Per-step Jacobian"], out["where"]


def html_rows(shown: str) -> tuple[list[int], list[int]]:
    out = []
    for title in ("Per-step Jacobian", "where"):
        rows: list[int] = []
        block = shown.split(f"<h4>{title}</h4>", 1)[1].split("<h4>", 1)[0] \
            if f"<h4>{title}</h4>" in shown else ""
        for row in block.split("<mtr>")[1:]:
            if '<mo form="infix">=</mo>' in row:
                rows.append(1)
            else:
                assert '<mo form="infix">+</mo>' in row
                rows[-1] += 1
        out.append(rows)
    return out[0], out[1]


@pytest.mark.parametrize("cell", CELLS, ids=lambda c: Path(c).stem)
def test_display_shows_every_jacobian_term_of_the_text_view(cell):
    text = derivation_text(derive(load_cell(cell)))
    shown = dc.load(cell).derivation
    want = expected_rows(text)
    assert latex_rows(shown._repr_latex_()) == want
    assert markdown_rows(shown._repr_markdown_()) == want
    assert html_rows(shown._repr_html_()) == want


@pytest.mark.parametrize("cell, blocks, terms", [
    ("gru", 1, 4), ("lstm", 4, 4 + 1 + 3 + 1), ("simplified_gru", 1, 3), ("rnn", 1, 1)])
def test_builtin_jacobians_in_full(cell, blocks, terms):
    rows, _ = latex_rows(dc.load(cell).derivation._repr_latex_())
    assert (len(rows), sum(rows)) == (blocks, terms)


def test_gru_display_names_and_defines_its_preactivations():
    d = dc.load("gru").derivation
    latex, markdown, html = d._repr_latex_(), d._repr_markdown_(), d._repr_html_()
    for matrix in ("W_{hn}", "W_{hr}", "W_{hz}"):
        jacobian = latex.split(r"\text{Per-step Jacobian}", 1)[1]
        assert matrix in jacobian
    sentence = "are the pre-activations: the argument of the function in (1), (2), (3)"
    assert r"z_{r}, z_{z}, z_{\tilde{h}} \text{ " + sentence in latex
    assert r"$z_{r}$, $z_{z}$, $z_{\tilde{h}}$ " + sentence + "." in markdown
    assert sentence in html
    # the definition comes before the first adjoint that uses z_z
    assert latex.index(sentence) < latex.index(r"\delta z_{z} =")
    assert "pre" not in re.sub(r"pre-activation", "", latex)  # no internal z_pre name
