"""Cell specs: a TOML file read as data, its equations checked against a whitelist of syntax.

Nothing in a spec is ever executed: each equation is parsed with ``ast.parse(mode="eval")``, every
node is checked against the allowed types, and the SymPy expression is built from the checked tree.
"""

from __future__ import annotations

import ast
import difflib
import keyword
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import sympy

from derive_cells.display import parse_latex_name
from derive_cells.equation import MAX_DEPTH, EquationError, chain, parse
from derive_cells.equation import MAX_EQUATION_CHARS as MAX_EQUATION_CHARS
from derive_cells.equation import text as equation_text
from derive_cells.functions import FUNCTIONS

CELLS_DIR = Path(__file__).parent / "cells"
MAX_SPEC_BYTES = 256 * 1024
MAX_EQUATIONS = 200
MAX_EXPONENT = 16
RESERVED_PREFIXES = ("_", "d_")  # internals of the derivation and of emitted code
# module-level names of an emitted module that its step functions call: a spec name equal to one
# would shadow it there
RESERVED_NAMES = frozenset({"positive", "expm1", "step_forward"})
TOP_KEYS = {"name", "title", "input", "state", "output", "equations", "pack", "latex"}
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


class SpecError(ValueError):
    """A spec that cannot be used; the message names the file, the equation and the reason."""

    def __init__(self, source: str, reason: str, equation: str | None = None):
        self.source, self.reason, self.equation = source, reason, equation
        where = f"{source}: equation '{equation}'" if equation else source
        super().__init__(f"{where}: {reason}")


class MatVec(sympy.Function):
    """``M @ v``: a learned matrix times a vector expression (kept unevaluated)."""

    nargs = 2

    def _latex(self, printer):
        m, v = self.args
        inner = printer._print(v)
        if not v.is_Symbol:
            inner = rf"\left({inner}\right)"
        return rf"{printer._print(m)}\,{inner}"


@dataclass
class Cell:
    """A parsed, checked cell spec. Equations are SymPy expressions over per-element symbols."""

    name: str
    title: str
    source: str
    input: str
    state: tuple[str, ...]
    output: str
    equations: list[tuple[str, sympy.Expr, str]]  # (target, expression, source text)
    matrices: dict[str, str]  # matrix name -> "input" (shape H x I) or "hidden" (H x H)
    vectors: list[str]  # learned vectors (size H), in order of first use
    pack: dict[str, tuple[str, ...]] = field(default_factory=dict)
    latex: dict[str, str] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)  # free names in order of first use

    @property
    def written(self) -> list[str]:
        """The names the spec writes: input, states, free names in order of use, equation
        targets (a name may repeat)."""
        return [self.input, *self.state, *self.order, *(t for t, _, _ in self.equations)]

    @property
    def names(self) -> set[str]:
        """Every name the cell's code uses: the spec's, the states' _prev, packed names."""
        return {*self.written, *(prev(s) for s in self.state), *self.pack}

    @property
    def params(self) -> list[str]:
        """Unpacked parameter names in order of first use."""
        return [n for n in self.order if n in self.matrices or n in self.vectors]


def prev(name: str) -> str:
    return f"{name}_prev"


def _check_name(source: str, name: object, what: str, equation: str | None = None) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name) or keyword.iskeyword(name):
        raise SpecError(source, f"{what} {name!r} is not a valid name (letters, digits, _)",
                        equation)
    if name.startswith(RESERVED_PREFIXES):
        raise SpecError(source, f"{what} {name!r} uses a reserved prefix "
                        f"({', '.join(RESERVED_PREFIXES)})", equation)
    if name in FUNCTIONS:
        raise SpecError(source, f"{what} {name!r} is the name of a function", equation)
    if name in RESERVED_NAMES:
        raise SpecError(source, f"{what} {name!r} is a name the emitted module defines "
                        f"(reserved: {', '.join(sorted(RESERVED_NAMES))})", equation)
    return name


class _Builder:
    """Turns one checked equation tree into SymPy, recording the names it reads."""

    def __init__(self, source: str, target: str, known: set[str], cell_names: dict):
        self.source, self.target, self.known = source, target, known
        self.names = cell_names  # shared: "kind" of every free name seen so far
        self.read: list[str] = []  # the free names this equation reads, in order

    def misspelled(self, reason: str, names) -> str:
        """reason, for an error caused by names read as learned parameters; led by the first
        of names that looks like a misspelling of a name the equation can read, and that name."""
        names = set(names)
        for name in (n for n in self.read if n in names):
            close = difflib.get_close_matches(name, sorted(self.known), n=1)
            if close:
                kind = self.names["kinds"].get(name, "vector")
                return (f"unknown name '{name}', nearest known name '{close[0]}' (a name that "
                        "is not the input, a previous state or an earlier equation is a "
                        f"learned {kind}): {reason}")
        return reason

    def fail(self, reason: str):
        raise SpecError(self.source, reason, self.target)

    def build(self, node: ast.AST, depth: int = 0) -> sympy.Expr:
        if depth > MAX_DEPTH:
            self.fail(f"expression nested deeper than {MAX_DEPTH} levels")
        handler = self._HANDLERS.get(type(node))
        if handler is None:
            self.fail(f"{_describe(node)} is not allowed in an equation")
        return self._checked(handler(self, node, depth + 1))

    def _checked(self, expr: sympy.Expr) -> sympy.Expr:
        """expr, refused when it holds an infinite value or a constant out of range."""
        if expr.has(*_NOT_FINITE):
            self.fail("division by zero or an infinite value")
        numbers = [abs(n) for n in expr.atoms(sympy.Number) if n != 0]
        if any(n > MAX_CONSTANT for n in numbers):
            self.fail(f"a constant is larger than {MAX_CONSTANT:.0e}")
        if any(n < MIN_CONSTANT for n in numbers):
            self.fail(f"a nonzero constant is smaller than {float(MIN_CONSTANT):.0e} (write 0, or "
                      "rescale)")
        return expr

    def _constant(self, node: ast.Constant, depth: int) -> sympy.Expr:
        value = node.value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(f"constant {value!r} is not a number")
        if isinstance(value, int):
            if abs(value) > 2**53:
                self.fail(f"integer constant {value} is too large")
            return sympy.Integer(value)
        if value != value or value in (float("inf"), float("-inf")):
            self.fail(f"constant {value!r} is not finite")
        return sympy.Rational(repr(value))

    def _name(self, node: ast.Name, depth: int) -> sympy.Expr:
        name = node.id
        self._classify(name, "vector")
        return sympy.Symbol(name)

    def _classify(self, name: str, kind: str) -> None:
        """Record a free name's role; a name read before its equation is an error."""
        if name in self.known:
            if kind == "matrix":
                role = "the input" if name == self.names["input"] else (
                    "a previous state" if name.endswith("_prev") else "computed by the cell")
                self.fail(f"'{name}' is {role}; the left side of @ must be a learned matrix")
            return
        _check_name(self.source, name, "name", self.target)
        if name in self.names["targets"]:
            hint = " (the previous step's value is written "
            hint += f"'{prev(name)}')" if name in self.names["state"] else "later)"
            self.fail(f"'{name}' is used before its equation{hint}")
        if name.endswith("_prev"):
            close = difflib.get_close_matches(name[:-5], sorted(self.names["state"]), n=1)
            hint = f" (did you mean '{prev(close[0])}'?)" if close else ""
            self.fail(f"'{name}' refers to the previous value of '{name[:-5]}', "
                      f"which is not a state{hint}")
        if name not in self.read:
            self.read.append(name)
        seen = self.names["kinds"].get(name)
        if seen is not None and seen != kind:
            self.fail(f"'{name}' is used both as a matrix and as a vector")
        if seen is None:
            self.names["kinds"][name] = kind
            self.names["order"].append(name)

    def _binop(self, node: ast.BinOp, depth: int) -> sympy.Expr:
        op = type(node.op)
        if op is ast.MatMult:
            return self._matmul(node, depth)
        if op is ast.Pow:
            exponent = _numeric(node.right)
            if exponent is None:
                self.fail("the exponent of ** must be a number")
            if not abs(exponent) <= MAX_EXPONENT:
                self.fail(f"exponent {exponent} is larger than {MAX_EXPONENT}")
            base = self.build(node.left, depth)
            if base.is_number:
                self.fail("a number raised to a power: write its value instead")
            return base ** sympy.Rational(repr(exponent))
        if op not in _ARITH:
            self.fail(f"operator {type(node.op).__name__} is not allowed")
        links = [node]  # a + b - c + ...: one level, built in a loop, left to right
        for link in chain(node)[1:]:
            if type(link.op) not in _ARITH:
                break
            links.append(link)
        expr = self.build(links[-1].left, depth)
        for link in reversed(links):
            expr = _ARITH[type(link.op)](expr, self.build(link.right, depth))
            if link is not node:
                expr = self._checked(expr)
        return expr

    def _matmul(self, node: ast.BinOp, depth: int) -> sympy.Expr:
        if not isinstance(node.left, ast.Name):
            self.fail("the left side of @ must be the name of a learned matrix")
        matrix = node.left.id
        self._classify(matrix, "matrix")
        operand = self.build(node.right, depth)
        if operand.is_number:
            self.fail(f"'{matrix} @ ...' multiplies a number; @ needs a vector")
        if not self.dynamic(operand):
            self.fail(self.misspelled(
                f"'{matrix} @ ...' multiplies learned vectors and constants only; the operand "
                "of @ must depend on the input or a state (a product of parameters alone is "
                "one more learned vector: write it as one)",
                (s.name for s in operand.free_symbols)))
        kind = "input" if self.size(operand) == "I" else "hidden"
        shapes = self.names["matrices"]
        if shapes.setdefault(matrix, kind) != kind:
            self.fail(f"matrix '{matrix}' multiplies both the input and hidden-size vectors")
        return MatVec(sympy.Symbol(matrix), operand)

    def _unary(self, node: ast.UnaryOp, depth: int) -> sympy.Expr:
        if isinstance(node.op, ast.USub):
            return -self.build(node.operand, depth)
        if isinstance(node.op, ast.UAdd):
            return self.build(node.operand, depth)
        self.fail(f"operator {type(node.op).__name__} is not allowed")

    def _call(self, node: ast.Call, depth: int) -> sympy.Expr:
        if not isinstance(node.func, ast.Name):
            self.fail(f"{_describe(node.func)} cannot be called; functions are "
                      f"{', '.join(FUNCTIONS)}")
        info = FUNCTIONS.get(node.func.id)
        if info is None:
            self.fail(f"unknown function '{node.func.id}'; known: {', '.join(FUNCTIONS)}")
        if node.keywords or len(node.args) != 1 or isinstance(node.args[0], ast.Starred):
            self.fail(f"{info.name}() takes exactly one argument")
        arg = self.build(node.args[0], depth)
        if arg.is_number:
            return self._fold(info, arg)
        return info.cls(arg)

    def _fold(self, info, arg: sympy.Expr) -> sympy.Expr:
        """A function of a constant is a constant: its float64 value, as an exact rational."""
        value = info.cls(arg).value()
        if value is None:
            self.fail(f"{info.name}({arg}) is not a finite real number")
        return value

    def dynamic(self, expr: sympy.Expr) -> bool:
        """Whether expr depends on the step's input or a previous state (else parameters only)."""
        return any(s.name in self.names["dynamic"] for s in expr.free_symbols)

    def size(self, expr: sympy.Expr) -> str | None:
        """'I' for an input-sized vector, 'H' for hidden-sized, None for a number."""
        if expr.is_number:
            return None
        if expr.is_Symbol:
            return "I" if expr.name == self.names["input"] else "H"
        if isinstance(expr, MatVec):
            return "H"
        sizes = {self.size(a) for a in expr.args} - {None}
        if len(sizes) > 1:
            self.fail(f"'{expr}' mixes the input (size I) with hidden-size vectors; "
                      "only a matrix (M @ x) maps the input to the hidden size")
        return sizes.pop() if sizes else None

    _HANDLERS = {ast.Constant: _constant, ast.Name: _name, ast.BinOp: _binop,
                 ast.UnaryOp: _unary, ast.Call: _call}


_NOT_FINITE = (sympy.zoo, sympy.oo, -sympy.oo, sympy.nan)
MAX_CONSTANT = 10**300
MIN_CONSTANT = sympy.Rational(1, 10**300)

_ARITH = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b,
          ast.Mult: lambda a, b: a * b, ast.Div: lambda a, b: a / b}


def _numeric(node: ast.AST) -> float | None:
    """The value of a signed number literal (any number of signs), else None."""
    sign = 1
    while isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        sign = -sign if isinstance(node.op, ast.USub) else sign
        node = node.operand
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) \
            and not isinstance(node.value, bool):
        return sign * node.value
    return None


def _describe(node: ast.AST) -> str:
    kinds = {ast.Attribute: "attribute access", ast.Subscript: "indexing",
             ast.Lambda: "lambda", ast.Compare: "comparison", ast.BoolOp: "and/or",
             ast.IfExp: "if-expression", ast.List: "a list", ast.Tuple: "a tuple",
             ast.Dict: "a dict", ast.Set: "a set", ast.JoinedStr: "an f-string",
             ast.NamedExpr: "assignment (:=)", ast.Await: "await", ast.Call: "a call"}
    return kinds.get(type(node), type(node).__name__)


def _parse_equation(source: str, target: str, equation: object) -> ast.AST:
    if not isinstance(equation, str):
        raise SpecError(source, "must be a string holding an expression", target)
    try:
        return parse(equation)
    except EquationError as exc:
        raise SpecError(source, str(exc), target) from None


def _require(data: dict, key: str, kind: type, source: str):
    if key not in data:
        raise SpecError(source, f"missing key '{key}'")
    if not isinstance(data[key], kind):
        raise SpecError(source, f"'{key}' must be a {kind.__name__}")
    return data[key]


def cell_from_dict(data: dict, source: str) -> Cell:
    """Check a spec's table and build its Cell; raises SpecError naming what is wrong."""
    unknown = sorted(set(data) - TOP_KEYS)
    if unknown:
        raise SpecError(source, f"unknown key(s) {', '.join(unknown)}; "
                        f"allowed: {', '.join(sorted(TOP_KEYS))}")
    name = _require(data, "name", str, source)
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):
        raise SpecError(source, f"cell name {name!r} must be 1-64 letters, digits, '_', '-', '.'")
    title = data.get("title", name)
    if not isinstance(title, str):
        raise SpecError(source, "'title' must be a string")
    if len(title) > 200 or not title.isprintable():
        raise SpecError(source, "'title' must be one line of at most 200 printable characters "
                        "(no control characters)")
    inp = _check_name(source, _require(data, "input", str, source), "input")
    state = _require(data, "state", list, source)
    if not state:
        raise SpecError(source, "'state' must list at least one name")
    state = tuple(_check_name(source, s, "state") for s in state)
    if len(set(state)) != len(state):
        raise SpecError(source, "'state' lists a name twice")
    if inp in state or inp in (prev(s) for s in state):
        raise SpecError(source, f"input {inp!r} is also the name of a state or of a previous "
                        "state's value")
    for s in state:
        if prev(s) in state:
            raise SpecError(source, f"state {prev(s)!r} is also the name of state {s!r}'s "
                            "previous value")
    output = _check_name(source, _require(data, "output", str, source), "output")
    equations = _require(data, "equations", dict, source)
    if not equations:
        raise SpecError(source, "'equations' is empty")
    if len(equations) > MAX_EQUATIONS:
        raise SpecError(source, f"more than {MAX_EQUATIONS} equations")

    targets = list(equations)
    for t in targets:
        _check_name(source, t, "equation target", t)
        if t == inp or t in (prev(s) for s in state):
            raise SpecError(source, f"'{t}' is an input of the step and cannot be assigned", t)
    for s in state:
        if s not in equations:
            raise SpecError(source, f"state '{s}' is never assigned in [equations]")
    if output not in equations:
        raise SpecError(source, f"output '{output}' is never assigned in [equations]")

    names = {"input": inp, "state": set(state), "targets": set(targets), "kinds": {},
             "order": [], "matrices": {}, "dynamic": {inp, *(prev(s) for s in state)}}
    known = {inp, *(prev(s) for s in state)}
    built = []
    for t in targets:
        tree = _parse_equation(source, t, equations[t])
        builder = _Builder(source, t, known, names)
        expr = builder.build(tree)
        if builder.size(expr) != "H":
            raise SpecError(source, "must be a hidden-size vector (involve a state, a learned "
                            "vector or a matrix product)", t)
        if builder.dynamic(expr):
            names["dynamic"].add(t)
        elif t in state or t == output:
            role = "state" if t in state else "output"
            raise SpecError(source, builder.misspelled(
                f"the {role} depends on parameters and constants only; it must depend on the "
                "input or a previous state", builder.read), t)
        built.append((t, expr, equation_text(tree)))  # canonical text: no comments, one line
        known.add(t)
    vectors = [n for n in names["order"] if names["kinds"][n] == "vector"]
    cell = Cell(name=name, title=title, source=source, input=inp, state=state, output=output,
                equations=built, matrices=dict(names["matrices"]), vectors=vectors,
                order=list(names["order"]))
    cell.pack = _check_pack(data.get("pack", {}), cell, source)
    cell.latex = _check_latex(data.get("latex", {}), cell, source)
    return cell


def _shape_kind(cell: Cell, param: str) -> str:
    return cell.matrices.get(param, "vector")


def _check_pack(pack: object, cell: Cell, source: str) -> dict[str, tuple[str, ...]]:
    if not isinstance(pack, dict):
        raise SpecError(source, "[pack] must be a table")
    params, used, out = set(cell.params), set(), {}
    taken = {cell.input, *cell.state, *(t for t, _, _ in cell.equations)}
    for key, members in pack.items():
        _check_name(source, key, "packed parameter")
        if not isinstance(members, list) or not members \
                or not all(isinstance(m, str) for m in members):
            raise SpecError(source, f"[pack] {key} must be a non-empty list of parameter names")
        if key in taken or (key in params and members != [key]):
            raise SpecError(source, f"packed name '{key}' is already used by the cell")
        for m in members:
            if m not in params:
                raise SpecError(source, f"[pack] {key} lists {m!r}, which is not a parameter "
                                "of the equations")
            if m in used:
                raise SpecError(source, f"[pack] lists parameter '{m}' twice")
            used.add(m)
        kinds = {_shape_kind(cell, m) for m in members}
        if len(kinds) > 1:
            raise SpecError(source, f"[pack] {key} mixes parameters of different shapes")
        out[key] = tuple(members)
    return out


def _check_latex(latex: object, cell: Cell, source: str) -> dict[str, str]:
    """Display names: a letter or Greek letter, an accent, a subscript; nothing else."""
    if not isinstance(latex, dict) or not all(isinstance(v, str) for v in latex.values()):
        raise SpecError(source, "[latex] must be a table of strings")
    names = set(cell.written)
    for name, text in latex.items():
        if name not in names:
            raise SpecError(source, f"[latex] names {name!r}, which the cell does not use")
        if parse_latex_name(text) is None:
            raise SpecError(source, f"[latex] {name} = {text!r}: write a letter or Greek letter "
                            "(\\Gamma), optionally with an accent (\\tilde{c}, \\hat, \\bar, "
                            "\\vec, \\dot) and a subscript (_u, _{ij})")
    return dict(latex)


def builtin_cells() -> dict[str, Path]:
    """Built-in cell name -> spec path, sorted by name."""
    return {p.stem: p for p in sorted(CELLS_DIR.glob("*.toml"))}


def load_cell(name_or_path: str) -> Cell:
    """A built-in cell by name, or a spec file by path (anything ending .toml or naming a file)."""
    builtins = builtin_cells()
    if name_or_path in builtins:
        path, source = builtins[name_or_path], name_or_path
    else:
        path, source = Path(name_or_path), name_or_path
        if not (name_or_path.endswith(".toml") or path.is_file()):
            raise SpecError(source, f"unknown cell; built-in cells: {', '.join(builtins)} "
                            "(or give the path of a .toml spec file)")
    if path.exists() and not path.is_file():
        raise SpecError(source, "not a regular file")
    try:
        with path.open("rb") as fh:
            raw = fh.read(MAX_SPEC_BYTES + 1)
    except OSError as exc:
        raise SpecError(source, f"cannot read the spec file: {exc.strerror or exc}") from None
    if len(raw) > MAX_SPEC_BYTES:
        raise SpecError(source, f"spec file is larger than {MAX_SPEC_BYTES} bytes")
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise SpecError(source, "spec file is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(source, f"not valid TOML: {exc}") from None
    except RecursionError:
        raise SpecError(source, "not valid TOML: nested too deeply") from None
    return cell_from_dict(data, source)
