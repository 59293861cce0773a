"""Display names for the mathematics of a cell: a spec's `[latex]` names, parsed against a short
grammar (a letter or Greek letter, an optional accent, an optional subscript) and written out
again as LaTeX or MathML, so no LaTeX from a spec file ever reaches a document as it was written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from html import escape

GREEK = {name: chr(code) for name, code in (
    ("alpha", 0x3B1), ("beta", 0x3B2), ("gamma", 0x3B3), ("delta", 0x3B4), ("epsilon", 0x3B5),
    ("zeta", 0x3B6), ("eta", 0x3B7), ("theta", 0x3B8), ("iota", 0x3B9), ("kappa", 0x3BA),
    ("lambda", 0x3BB), ("mu", 0x3BC), ("nu", 0x3BD), ("xi", 0x3BE), ("pi", 0x3C0),
    ("rho", 0x3C1), ("sigma", 0x3C3), ("tau", 0x3C4), ("upsilon", 0x3C5), ("phi", 0x3C6),
    ("chi", 0x3C7), ("psi", 0x3C8), ("omega", 0x3C9), ("Gamma", 0x393), ("Delta", 0x394),
    ("Theta", 0x398), ("Lambda", 0x39B), ("Xi", 0x39E), ("Pi", 0x3A0), ("Sigma", 0x3A3),
    ("Upsilon", 0x3A5), ("Phi", 0x3A6), ("Psi", 0x3A8), ("Omega", 0x3A9))}
ACCENTS = {"tilde": "\u02dc", "hat": "^", "bar": "\u00af", "vec": "\u2192", "dot": "\u02d9"}
_LATEX_NAME = re.compile(
    r"(?:\\(?P<accent>tilde|hat|bar|vec|dot|mathbf)\{(?P<inner>[A-Za-z]|\\[A-Za-z]+)\}"
    r"|(?P<plain>[A-Za-z]|\\[A-Za-z]+))"
    r"(?:_(?:\{(?P<sub1>[A-Za-z0-9,]{1,12})\}|(?P<sub2>[A-Za-z0-9])))?")


@dataclass(frozen=True)
class Display:
    """How one name is written: base letter (or word), accent, subscript."""

    base: str  # a letter, a word, or a Greek command name ("Gamma")
    accent: str | None = None
    sub: str | Display | None = None

    def latex(self) -> str:
        base = f"\\{self.base}" if self.base in GREEK else (
            self.base if len(self.base) == 1 else rf"\mathrm{{{self.base}}}")
        if self.accent:
            base = rf"\{self.accent}{{{base}}}"
        if self.sub is None:
            return base
        sub = self.sub.latex() if isinstance(self.sub, Display) else _latex_text(self.sub)
        return f"{base}_{{{sub}}}"

    def mathml(self) -> str:
        base = f"<mi>{escape(GREEK.get(self.base, self.base))}</mi>"
        if self.accent == "mathbf":  # MathML Core has no bold variant: bold code points
            base = f"<mi>{''.join(_bold(c) for c in GREEK.get(self.base, self.base))}</mi>"
        elif self.accent:
            base = f'<mover accent="true">{base}<mo>{ACCENTS[self.accent]}</mo></mover>'
        if self.sub is None:
            return base
        sub = self.sub.mathml() if isinstance(self.sub, Display) else _mathml_text(self.sub)
        return f"<msub>{base}{sub}</msub>"


def _bold(c: str) -> str:
    if "A" <= c <= "Z":
        return chr(0x1D400 + ord(c) - ord("A"))
    if "a" <= c <= "z":
        return chr(0x1D41A + ord(c) - ord("a"))
    return c


def _latex_text(text: str) -> str:
    return text.replace("\u2212", "-") if re.fullmatch(r"[A-Za-z0-9,\u2212+ ]*", text) else \
        r"\mathrm{?}"


def _mathml_text(text: str) -> str:
    if re.fullmatch(r"[0-9]+", text):
        return f"<mn>{text}</mn>"
    if "\u2212" in text:  # t-1
        left, right = text.split("\u2212", 1)
        return f"<mrow><mi>{escape(left)}</mi><mo>\u2212</mo><mn>{escape(right)}</mn></mrow>"
    return f"<mi>{escape(text)}</mi>"


def parse_latex_name(text: str) -> Display | None:
    """A [latex] display name, or None when it is outside the grammar."""
    m = _LATEX_NAME.fullmatch(text.strip())
    if not m:
        return None
    core = m.group("inner") or m.group("plain")
    if core.startswith("\\"):
        core = core[1:]
        if core not in GREEK:
            return None
    return Display(core, m.group("accent"), m.group("sub1") or m.group("sub2"))


def default_display(name: str) -> Display:
    """W_ii -> W with subscript ii; Gamma_u -> Greek Gamma, subscript u; h -> h."""
    base, _, sub = name.partition("_")
    return Display(base, None, sub or None)
