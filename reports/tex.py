"""Text set in LaTeX: any string made safe for pdflatex with texlive-latex-base only (special
characters escaped, accents and symbols mapped, anything else shown as its code point)."""

from __future__ import annotations

import unicodedata

from derive_cells.display import GREEK

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
