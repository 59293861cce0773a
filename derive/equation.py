"""One equation's text: parsed with ``ast.parse(mode="eval")``, its depth checked before anything
walks the tree, and printed back as one canonical line.

Depth means nesting. A run of one precedence level written without parentheses
(``a + b - c + ...``, ``a * b / c``) reads as one level however long it is, so it counts as one,
and the spec's builder and the printer below walk it in a loop rather than by recursion; a
parenthesised operand, a function's argument, a sign or an exponent is one level deeper.

>>> text(parse("a+b  -c*(d+e)  # a comment"))
'a + b - c * (d + e)'
>>> text(parse(" + ".join(f"b{k}" for k in range(200)))).count("+")
199
>>> depth(parse("tanh(tanh(h_prev)) + b")), depth(parse("h_prev" + " + b" * 199))
(4, 2)
"""

from __future__ import annotations

import ast

MAX_EQUATION_CHARS = 2000
MAX_DEPTH = 40
MAX_FACTORS = 40  # a product's gradient has a term per factor, each a product of the others

# ast.unparse's precedence levels for what an equation may hold; a binary operator's left
# operand at its own level needs no parentheses (left-associative), its right operand does
ARITH, TERM, UNARY, POWER, POWER_BASE, ATOM = range(1, 7)
PRECEDENCE = {ast.Add: ARITH, ast.Sub: ARITH, ast.Mult: TERM, ast.Div: TERM, ast.MatMult: TERM,
              ast.Pow: POWER}
SYMBOLS = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.MatMult: "@",
           ast.Pow: "**", ast.USub: "-", ast.UAdd: "+"}


class EquationError(ValueError):
    """Text that is not an equation of the allowed size and depth."""


def parse(source: str) -> ast.expr:
    """The expression tree of source, refused (EquationError) when too long, not Python
    syntax, nested deeper than MAX_DEPTH or holding a product of more than MAX_FACTORS
    factors (a sum may be as long as the text)."""
    if len(source) > MAX_EQUATION_CHARS:
        raise EquationError(f"longer than {MAX_EQUATION_CHARS} characters")
    try:
        tree = ast.parse(source.strip(), mode="eval").body
    except SyntaxError as exc:
        raise EquationError(f"syntax error: {exc.msg} in {source!r}") from None
    except (ValueError, RecursionError, MemoryError) as exc:
        raise EquationError(f"cannot parse {source!r}: {exc}") from None
    if depth(tree, MAX_DEPTH) > MAX_DEPTH:
        raise EquationError(f"expression nested deeper than {MAX_DEPTH} levels")
    for node in ast.walk(tree):
        if (isinstance(node, ast.BinOp) and PRECEDENCE.get(type(node.op)) == TERM
                and len(chain(node)) >= MAX_FACTORS):
            raise EquationError(f"a product of more than {MAX_FACTORS} factors")
    return tree


def chain(node: ast.BinOp) -> list[ast.BinOp]:
    """A left-associative run of one precedence level, from node down its left operands:
    a + b - c -> [(a + b) - c, a + b]. Its first operand is chain[-1].left."""
    links = [node]
    level = PRECEDENCE.get(type(node.op))
    if level == POWER:
        return links
    while (isinstance(links[-1].left, ast.BinOp)
           and PRECEDENCE.get(type(links[-1].left.op)) == level):
        links.append(links[-1].left)
    return links


def depth(tree: ast.AST, stop: int | None = None) -> int:
    """How deeply tree nests (a run of one precedence level is one level); without recursion,
    and stopping as soon as it passes stop."""
    deepest, stack = 0, [(tree, 1)]
    while stack:
        node, level = stack.pop()
        deepest = max(deepest, level)
        if stop is not None and deepest > stop:
            break
        if isinstance(node, ast.BinOp):
            links = chain(node)
            stack += [(link.right, level + 1) for link in links]
            stack.append((links[-1].left, level + 1))
            continue
        stack += [(child, level + 1) for child in ast.iter_child_nodes(node)
                  if not isinstance(child, (ast.operator, ast.unaryop, ast.expr_context))]
    return deepest


def text(node: ast.AST, need: int = 0) -> str:
    """The canonical one-line text of a checked equation tree (as ast.unparse prints it: no
    comments, spaces around binary operators, only the parentheses precedence needs); need is
    the precedence its place asks for."""
    if isinstance(node, ast.Constant):
        return repr(node.value)
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Call):
        return f"{text(node.func, ATOM)}({', '.join(text(a) for a in node.args)})"
    if isinstance(node, ast.UnaryOp) and type(node.op) in SYMBOLS:
        own, out = UNARY, SYMBOLS[type(node.op)] + text(node.operand, UNARY)
    elif isinstance(node, ast.BinOp) and type(node.op) in SYMBOLS:
        own = PRECEDENCE[type(node.op)]
        if own == POWER:  # right-associative
            out = f"{text(node.left, POWER_BASE)} ** {text(node.right, POWER)}"
        else:
            links = chain(node)
            out = text(links[-1].left, own)
            for link in reversed(links):
                out += f" {SYMBOLS[type(link.op)]} {text(link.right, own + 1)}"
    else:
        return ast.unparse(node)
    return f"({out})" if own < need else out
