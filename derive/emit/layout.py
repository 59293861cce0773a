"""Line layout of emitted modules: every line within the width, as a careful hand would break
it — comments and docstrings wrapped as text, code broken after the commas of its outermost
brackets, or before the + and - of a long sum (inside parentheses). The result must parse to
the same program (checked: the AST is compared, docstrings up to their whitespace).

>>> print(wrap("x = f(aaaa, bbbb, cccc)", width=16))
x = f(
    aaaa, bbbb,
    cccc)
"""

from __future__ import annotations

import ast
import re
import textwrap

WIDTH = 100
_OPEN, _CLOSE = "([{", ")]}"


class LayoutError(AssertionError):
    """Breaking the lines changed the program (a bug of this module)."""


def _indent(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


def _top_level(text: str, start: int) -> list[tuple[int, str]]:
    """Positions in text (from start) at bracket depth 0 outside strings: (index, char)."""
    out, depth, quote, k = [], 0, "", start
    while k < len(text):
        ch = text[k]
        if quote:
            if ch == "\\":
                k += 2
                continue
            if text.startswith(quote, k):
                k += len(quote)
                quote = ""
                continue
        elif ch in "'\"":
            quote = text[k: k + 3] if text[k: k + 3] in ('"""', "'''") else ch
            k += len(quote)
            continue
        elif ch in _OPEN:
            depth += 1
        elif ch in _CLOSE:
            depth -= 1
            if depth < 0:
                return out
        elif depth == 0:
            out.append((k, ch))
        k += 1
    return out


def _in_strings(text: str) -> set[int]:
    """Indices of text that lie inside string literals (quotes included)."""
    inside, quote, k = set(), "", 0
    while k < len(text):
        ch = text[k]
        if quote:
            inside.add(k)
            if ch == "\\":
                inside.add(k + 1)
                k += 2
                continue
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
            inside.add(k)
        k += 1
    return inside


def _matching(text: str, opening: int) -> int | None:
    """Index of the bracket that closes the one at opening (strings skipped)."""
    depth, quote, k = 0, "", opening
    while k < len(text):
        ch = text[k]
        if quote:
            if ch == "\\":
                k += 2
                continue
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch in _OPEN:
            depth += 1
        elif ch in _CLOSE:
            depth -= 1
            if depth == 0:
                return k
        k += 1
    return None


def _fill(prefix: str, items: list[str], indent: str, width: int) -> list[str]:
    """items joined by ', ' on lines of at most width, the first after prefix."""
    lines, current = [], prefix
    for j, item in enumerate(items):
        piece = item + ("," if j < len(items) - 1 else "")
        if current.strip() and len(current) + 1 + len(piece) > width and current != prefix:
            lines.append(current.rstrip())
            current = indent + piece
        else:
            current = (current + " " + piece) if current != prefix and current.strip() \
                else current + piece
    lines.append(current)
    return lines


def _by_terms(code: str, indent: str, width: int, inside: bool) -> list[str] | None:
    """An assignment's right-hand side (or, inside brackets, any piece) broken before its
    top-level + and - (else * and /); an assignment's gets parentheses."""
    match = re.match(r"^(\s*[\w\[\]'.,\s]+ = )(.+)$", code)
    if not (match or inside):
        return None
    lhs, rhs = match.groups() if match else (indent, code.strip())
    top = _top_level(rhs, 0)
    cuts: list[int] = []
    for ops in ("+-", "*/"):  # a sum's terms, else a product's factors
        cuts = [j for j, c in top if c in ops and j > 0 and rhs[j - 1] == " "
                and rhs[j + 1: j + 2] == " "]
        if cuts:
            break
    if not cuts:
        return None
    terms, last = [], 0
    for j in cuts:
        terms.append(rhs[last:j].strip())
        last = j
    terms.append(rhs[last:].strip())
    inner_indent = indent + " " * 4
    opening, closing = ("(", ")") if match else ("", "")
    out, current = [], lhs + opening + terms[0]
    for term in terms[1:]:
        if len(current) + 1 + len(term) > width:
            out.append(current)
            current = inner_indent + term
        else:
            current += " " + term
    return out + [current + closing]


def _sum_inside(code: str, indent: str, width: int) -> list[str] | None:
    """A line broken inside its first parenthesized sum whose opening fits: the sum's terms on
    lines of their own (a line may break anywhere inside brackets)."""
    strings = _in_strings(code)
    for k, ch in enumerate(code):
        if ch != "(" or k in strings or k + 1 > width:
            continue
        close = _matching(code, k)
        if close is None:
            continue
        pieces = _by_terms(code[k + 1: close], indent + " " * 4, width, inside=True)
        if pieces and len(pieces) > 1:
            pieces[0] = pieces[0].strip()
            return [code[: k + 1] + pieces[0], *pieces[1:-1], pieces[-1] + code[close:]]
    return None


def _by_commas(code: str, indent: str, width: int) -> list[str] | None:
    """A line broken after the commas of its first bracket group that holds them and whose
    opening fits on the first line."""
    strings = _in_strings(code)
    for k, ch in enumerate(code):
        if ch not in _OPEN or k in strings or k + 1 > width:
            continue
        close = _matching(code, k)
        if close is None:
            continue
        inner = code[k + 1: close]
        commas = [j for j, c in _top_level(inner, 0) if c == ","]
        if not commas or not inner[commas[-1] + 1:].strip():  # none, or a 1-tuple's (B,)
            continue
        items, last = [], 0
        for j in commas + [len(inner)]:
            items.append(inner[last:j].strip())
            last = j + 1
        inner_indent = indent + " " * 4
        body = _fill(inner_indent, [it for it in items if it], inner_indent, width)
        body[-1] = body[-1] + code[close:]
        return [code[: k + 1], *body]
    return None


def _break_code(line: str, width: int, inside: bool = False) -> list[str] | None:
    """A code line broken before the + and - of a long sum, else after the commas of a
    bracket group; pieces still too long break again; None if nothing applies."""
    indent = _indent(line)
    code, comment = line, ""
    hashes = [k for k, ch in _top_level(line, 0) if ch == "#"]
    if hashes:
        code, comment = line[: hashes[0]].rstrip(), line[hashes[0]:]
    above = [indent + comment.strip()] if comment else []  # a comment goes on its own line
    if len(code) <= width:
        return above + [code]
    pieces = (_by_terms(code, indent, width, inside) or _by_commas(code, indent, width)
              or _sum_inside(code, indent, width))
    if pieces is None:
        return None
    out = []
    for piece in pieces:
        again = _break_code(piece, width, inside=True) if len(piece) > width else None
        out += again or [piece]
    return above + out


_STRING = re.compile(r"'[^']*'|\"[^\"]*\"")


def _code_only(lines: list[str]) -> str:
    """The lines without comments and string literals: where a name read is a real read."""
    return "\n".join(_STRING.sub("''", line.split("#")[0]) for line in lines)


_ASSIGN = re.compile(r"^(\s+)(\w+(?:, \w+)*) = (.+)$")


def prune_assignments(lines: list[str]) -> list[str]:
    """A function's lines without the names that parallel assignments make and no later line
    reads (``x, p, step = a, b, c`` -> ``x, step = a, c`` when p is never read). Only for
    bodies whose assignments have no side effects (lookups, views, list() of values).

    >>> prune_assignments(["    a, b = f(1, 2), g", "    return a"])
    ['    a = f(1, 2)', '    return a']
    """
    out = list(lines)
    for k in range(len(out) - 1, -1, -1):
        m = _ASSIGN.match(out[k].split("  #")[0])
        if not m:
            continue
        indent, names, rhs = m.group(1), m.group(2).split(", "), m.group(3)
        cuts = [j for j, c in _top_level(rhs, 0) if c == ","]
        values, last = [], 0
        for j in cuts + [len(rhs)]:
            values.append(rhs[last:j].strip())
            last = j + 1
        if len(values) != len(names):
            continue
        later = _code_only(out[k + 1:])
        keep = [(n, v) for n, v in zip(names, values, strict=True)
                if re.search(rf"(?<![.\w]){n}\b", later)]  # a read, not an attribute
        if len(keep) == len(names):
            continue
        out[k] = (f"{indent}{', '.join(n for n, _ in keep)} = {', '.join(v for _, v in keep)}"
                  if keep else "")
    return [line for line in out if line]


def _normalized(tree: ast.AST) -> str:
    """The AST with every string's whitespace collapsed (wrapped docstrings compare equal)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            node.value = " ".join(node.value.split())
    return ast.dump(tree)


def wrap(text: str, width: int = WIDTH) -> str:
    """text with every line within width (see the module's docstring)."""
    out: list[str] = []
    in_doc = False
    for line in text.split("\n"):
        quotes = line.count('"""')
        starts_doc = not in_doc and quotes == 1
        if len(line) <= width:
            out.append(line)
        elif in_doc or quotes == 2 and line.strip().startswith('"""'):
            indent = _indent(line)
            out += textwrap.wrap(line.strip(), width, initial_indent=indent,
                                 subsequent_indent=indent, break_long_words=False,
                                 break_on_hyphens=False) or [line]
        elif starts_doc:
            indent = _indent(line)
            out += textwrap.wrap(line.strip(), width, initial_indent=indent,
                                 subsequent_indent=indent, break_long_words=False,
                                 break_on_hyphens=False) or [line]
        elif line.lstrip().startswith("#"):
            indent = _indent(line)
            out += textwrap.wrap(line.strip()[1:].strip(), width, initial_indent=indent + "# ",
                                 subsequent_indent=indent + "#   ", break_long_words=False,
                                 break_on_hyphens=False)
        else:
            out += _break_code(line, width) or [line]
        if quotes == 1:
            in_doc = not in_doc
    result = "\n".join(out)
    if _normalized(ast.parse(text)) != _normalized(ast.parse(result)):
        raise LayoutError("line breaking changed the emitted program")
    return result
