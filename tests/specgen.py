"""Random cell specs for the property-based differential test, and a TOML writer for them.

``cell_specs()`` draws spec tables (the dicts ``derive.spec.cell_from_dict`` reads) built from
every construct the grammar admits: one or two states, an output that is a state or an
intermediate, matrix products of the input, of states, of expressions and of learned vectors,
the same matrix at several ``@`` sites, every function of the table, powers, divisions, numeric
constants from 1e-320 to 1e300, dead equations, parameter-only equations, names that clash with
helpers of the emitted code or with library names, and ``[pack]`` tables. Values stay finite:
``log`` and ``sqrt`` read positive arguments, ``exp`` reads bounded ones, fractional powers have
positive bases. Some draws are meant to be refused by the parser (a matrix that multiplies both
sizes, reserved or invalid names).

>>> print(to_toml({"name": "c", "state": ["h"], "equations": {"h": 'tanh(b) "x"'}}))
name = "c"
state = ["h"]
<BLANKLINE>
[equations]
h = "tanh(b) \\"x\\""
<BLANKLINE>
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field

from hypothesis import strategies as st

# Names by role; a fresh name is drawn from the role's plain names, from CLASHES or from REFUSED.
INPUTS = ["x", "u_in", "inp"]
STATES = ["h", "c", "s", "m"]
INTERMEDIATES = ["a", "r", "z", "n", "g", "o", "f", "i", "y", "probe", "fb"]
MATRICES = ["W", "U", "V", "M", "R", "W_a", "U_a"]
VECTORS = ["b", "w", "bias", "beta", "P", "b_a", "peep"]
PACKS = ["weight_ih", "weight_hh", "bias_ih", "W_all", "b_all"]
# helpers and locals of emitted modules, Python builtins, library names, made-up internal names
CLASHES = ["np", "torch", "p", "g", "step", "values", "states", "cache", "positive", "expm1",
           "exp_z", "sum", "len", "range", "zip", "tuple", "list", "dict", "max", "min", "abs",
           "type", "id", "forward", "backward", "step_forward", "step_jacobian", "STATE",
           "PARAMS", "BLOCKS", "T", "B", "I", "H", "S", "V", "D", "x_W", "h_prev_W", "W_x",
           "b_x", "z_i", "z_z", "v_a", "tanh_c", "sigmoid_z"]
# reserved prefixes, function names, keywords, previous-value names, not names at all
REFUSED = ["_h", "d_h", "tanh", "exp", "lambda", "None", "h_prev", "x y"]

# What each function of derive/functions.py FUNCTIONS may read so that its value stays finite.
DOMAINS = {"sigmoid": "any", "tanh": "any", "relu": "any", "softplus": "any",
           "exp": "bounded", "log": "positive", "sqrt": "positive"}

SMALL = ["1", "2", "3", "0.5", "0.25", "1.5", "0.1"]
EXTREME = ["1e-320", "1e-300", "1e-08", "3e+10", "1e300"]
# numeric function calls: a constant function argument; POSITIVE_CALLS may be divided by
POSITIVE_CALLS = ["sqrt(2)", "softplus(1)", "exp(-1)", "sigmoid(0)", "tanh(1)", "log(3)"]
OTHER_CALLS = ["relu(-1)", "relu(2)", "log(0.5)", "tanh(-2)"]

TITLES = ['a "quoted" title', "ends with a backslash \\", 'triple """ quotes',
          "tab\tand newline\n", "unicode σ′ ü", "{braces} and %s"]


def paren(text: str) -> str:
    """text, parenthesized unless it is a name, a call or a number (a negative number parses
    as a unary minus, so it is parenthesized)."""
    try:
        node = ast.parse(text, mode="eval").body
    except SyntaxError:  # a refused name such as 'lambda': the parser reports it
        return text
    return text if isinstance(node, (ast.Name, ast.Call, ast.Constant)) else f"({text})"


@dataclass
class _Draft:
    """What a spec being drawn has defined so far."""

    input: str = ""
    states: list[str] = field(default_factory=list)
    used: set[str] = field(default_factory=set)
    available: list[str] = field(default_factory=list)  # targets of earlier equations
    varying: set[str] = field(default_factory=set)  # the input, previous states, what reads them
    vectors: list[str] = field(default_factory=list)
    matrices: dict[str, str] = field(default_factory=dict)  # name -> "I" or "H" (operand size)


class _Generator:
    """Draws the names and equations of one spec; ``depth`` bounds the nesting."""

    def __init__(self, draw):
        self.draw, self.spec = draw, _Draft()

    def pick(self, options: list):
        return self.draw(st.sampled_from(options))

    def choice(self, n: int) -> int:
        """An option index in 0..n-1; shrinks towards 0, the simplest option."""
        return self.draw(st.integers(0, n - 1))

    def name(self, plain: list[str]) -> str:
        """A fresh name: mostly a plain one, sometimes a clash, rarely one the parser refuses."""
        k = self.choice(100)
        pool = plain if k < 70 else CLASHES if k < 99 else REFUSED
        free = [n for n in pool if n not in self.spec.used]
        name = self.pick(free) if free else f"{plain[0]}{len(self.spec.used)}"
        self.spec.used.add(name)
        return name

    # leaves ---------------------------------------------------------------------------------

    def constant(self) -> str:
        return self.pick(EXTREME) if self.choice(8) == 7 else self.pick(SMALL)

    def vector(self, new: bool = False) -> str:
        if self.spec.vectors and not new:
            return self.pick(self.spec.vectors)
        name = self.name(VECTORS)
        self.spec.vectors.append(name)
        return name

    def matrix(self, size: str) -> str:
        """A matrix for operands of a size: often one already used (weight tying), rarely one
        used with the other size (which the parser refuses)."""
        same = [m for m, s in self.spec.matrices.items() if s == size]
        other = [m for m, s in self.spec.matrices.items() if s != size]
        k = self.choice(20)
        if k < 8 and same:
            return self.pick(same)
        if k == 19 and other:
            return self.pick(other)
        name = self.name(MATRICES)
        self.spec.matrices[name] = size
        return name

    def prev(self) -> str:
        return f"{self.pick(self.spec.states)}_prev"

    def operand(self) -> str:
        """A leaf for a matrix product: mostly a previous state or an earlier value."""
        k = self.choice(8)
        if k in (1, 2) and self.spec.available:
            return self.pick(self.spec.available)
        return self.vector() if k == 7 else self.prev()

    def leaf(self) -> str:
        k = self.choice(6)
        if k in (1, 3) and self.spec.available:
            return self.pick(self.spec.available)
        if k == 4:
            return self.vector()
        if k == 5:
            return self.vector(new=True)
        return self.prev()

    # expressions ----------------------------------------------------------------------------

    def hidden(self, depth: int) -> str:
        """A hidden-size expression."""
        if depth <= 0:
            return self.leaf() if self.choice(3) else self.matvec(0)
        k = self.choice(10)
        sub = depth - 1
        if k == 0:
            return self.leaf()
        if k == 1:
            return self.matvec(depth)
        if k in (2, 3):
            op = self.pick(["+", "-", "*"])
            return f"{paren(self.hidden(sub))} {op} {paren(self.hidden(sub))}"
        if k == 4:
            c, e = self.constant(), paren(self.hidden(sub))
            return self.pick([f"{c} * {e}", f"{e} + {c}", f"{e} - {c}", f"{c} - {e}", f"-{e}"])
        if k in (5, 6):
            return self.function(sub)
        if k == 7:
            if self.choice(2):
                return f"{paren(self.positive(sub))} ** {self.pick(['0.5', '1.5', '-0.5', '-1'])}"
            return f"{paren(self.hidden(sub))} ** {self.pick(['2', '3'])}"
        if k == 8:
            den = self.pick([self.positive(sub), self.constant(), self.pick(POSITIVE_CALLS)])
            if self.choice(3) == 2:
                return f"{self.pick(SMALL)} / {paren(self.positive(sub))}"
            return f"{paren(self.hidden(sub))} / {paren(den)}"
        return self.template(sub)

    def function(self, depth: int) -> str:
        fn = self.pick(list(DOMAINS))
        domain = DOMAINS[fn]
        arg = (self.hidden(depth) if domain == "any" else
               self.bounded(depth) if domain == "bounded" else self.positive(depth))
        return f"{fn}({arg})"

    def positive(self, depth: int) -> str:
        h = self.hidden(depth)
        e = paren(h)
        return self.pick([f"1 + sigmoid({h})", f"1 + {e} ** 2", f"softplus({h}) + 0.5",
                          f"exp(tanh({h}))", f"sqrt(1 + {e} ** 2)", f"(1 + {e} ** 2) ** 0.5",
                          f"sigmoid({h}) + 1e-12", f"exp(-softplus({h}))", f"2 + tanh({h})"])

    def bounded(self, depth: int) -> str:
        e = self.hidden(depth)
        return self.pick([f"tanh({e})", f"sigmoid({e})", f"-softplus({e})", f"2 * tanh({e})"])

    def input_sized(self, depth: int) -> str:
        """An expression of the input alone (size I): it can only be the operand of a matrix."""
        x = self.spec.input
        if depth <= 0:
            return x
        k = self.choice(6)
        inner = self.input_sized(depth - 1)
        if k == 1:
            return f"{self.pick(['sigmoid', 'tanh', 'relu', 'softplus'])}({inner})"
        if k == 2:
            return self.pick([f"{paren(inner)} * {self.constant()}",
                              f"{paren(inner)} / {self.pick(POSITIVE_CALLS)}",
                              f"{paren(inner)} * {self.pick(OTHER_CALLS)}"])
        if k == 3:
            op = self.pick(["+", "-", "*"])
            return f"{paren(inner)} {op} {paren(self.input_sized(depth - 1))}"
        if k == 4:
            return f"{paren(inner)} ** {self.pick(['2', '3'])}"
        if k == 5:
            return self.pick([f"log(1 + {paren(inner)} ** 2)", f"exp(tanh({inner}))",
                              f"sqrt(1 + {paren(inner)} ** 2)"])
        return x

    def matvec(self, depth: int) -> str:
        if self.choice(2) == 0:
            operand = self.input_sized(max(depth - 1, 0))
            return f"{self.matrix('I')} @ {paren(operand)}"
        operand = self.hidden(depth - 1) if depth > 0 else self.operand()
        if not _reads(operand) & self.spec.varying and self.choice(4) < 3:
            operand = f"{paren(operand)} * {self.prev()}"  # a product of parameters is refused
        return f"{self.matrix('H')} @ {paren(operand)}"

    def template(self, depth: int) -> str:
        """Constructs that random nesting seldom hits."""
        k = self.choice(8)
        x = self.spec.input
        if k == 0:  # one matrix, two sites, same operand size
            if self.choice(2):
                m = self.matrix("I")
                return f"{m} @ {x} + {m} @ {self.pick(['tanh', 'sigmoid', 'relu'])}({x})"
            m, p = self.matrix("H"), self.prev()
            return f"{m} @ {p} + {m} @ ({self.leaf()} * {p})"
        if k == 1:  # matrix terms that cancel
            m = self.matrix("I")
            return f"{paren(self.hidden(depth))} + {m} @ {x} - {m} @ {x}"
        if k == 2:  # a matrix times a learned vector
            return f"{self.matrix('H')} @ {self.vector()}"
        if k == 3:  # constant function arguments
            c, e = self.pick(POSITIVE_CALLS + OTHER_CALLS), paren(self.hidden(depth))
            return self.pick([f"{e} * {c}", f"{e} / {self.pick(POSITIVE_CALLS)}", f"{c} + {e}"])
        if k == 4:  # parameters only
            return self.parameters_only()
        if k == 5 and self.spec.available:  # an intermediate read twice
            a = self.pick(self.spec.available)
            return f"{a} * {paren(self.hidden(depth))} + {a}"
        if k == 6:
            return self.nested()
        return self.hidden(depth)

    def nested(self) -> str:
        """A product of a product, the inner one often read on its own too, beside a bias."""
        inner = self.matvec(0)
        outer = f"{self.matrix('H')} @ ({inner})"
        return self.pick([outer, f"{outer} + {inner}", f"{outer} + {self.vector()} + {inner}"])

    def parameters_only(self) -> str:
        b = self.vector()
        return self.pick([f"softplus({b})", f"sigmoid(3 + {b})", f"exp(tanh({b}))",
                          f"{b} * {self.vector()}"])

    def equation(self, target: str) -> str:
        x, k = self.spec.input, self.choice(9)
        if k == 1:  # a gate
            fn = self.pick(["sigmoid", "tanh", "relu"])
            return (f"{fn}({self.matrix('I')} @ {x} + {self.matrix('H')} @ {self.prev()}"
                    f" + {self.vector()})")
        if k == 2 and self.spec.available:  # a gated mix of a previous state and a value
            g, p = self.pick(self.spec.available), self.prev()
            return f"{g} * {p} + (1 - {g}) * {paren(self.hidden(1))}"
        if k == 3:  # a probe: reads a state through a matrix, often read by nothing
            return f"{self.pick(['sigmoid', 'tanh'])}({self.matrix('H')} @ {self.prev()})"
        if k == 4 and (target not in self.spec.states or self.choice(4) == 3):
            return self.parameters_only()
        if k == 5 and self.spec.states[0] != target:  # reads the new value of a state
            done = [s for s in self.spec.states if s in self.spec.available]
            if done:
                return f"{self.matrix('H')} @ {self.pick(done)} + {self.hidden(1)}"
        if k == 6:
            nested = self.nested()
            return f"tanh({nested})" if self.choice(2) else nested
        return self.hidden(self.pick([2, 1, 3]))


@st.composite
def cell_specs(draw) -> dict:
    """A spec table: 1-2 states, 0-4 intermediates, sometimes a [pack] table."""
    gen = _Generator(draw)
    spec = gen.spec
    spec.input = gen.name(INPUTS)
    spec.states = [gen.name(STATES) for _ in range(draw(st.integers(1, 2)))]
    spec.varying = {spec.input, *(f"{s}_prev" for s in spec.states)}
    inter = [gen.name(INTERMEDIATES) for _ in range(draw(st.integers(0, 6 - len(spec.states))))]
    if len(inter) > 4:
        inter = inter[:4]
    order = list(inter)
    for s in spec.states:
        order.insert(draw(st.integers(0, len(order))), s)
    equations = {}
    for target in order:
        text = gen.equation(target)
        if not _reads(text) & spec.varying and target in spec.states and gen.choice(4) < 3:
            text = f"{paren(text)} * {gen.prev()}"  # a state of parameters only is refused
        if _reads(text) & spec.varying:
            spec.varying.add(target)
        equations[target] = text
        spec.available.append(target)
    outputs = [t for t in order if t in spec.varying] if gen.choice(4) < 3 else []
    data = {"name": "fuzz", "input": spec.input, "state": list(spec.states),
            "output": gen.pick(outputs or spec.states + inter)}
    if gen.choice(6) == 5:
        data["title"] = gen.pick(TITLES)
    data["equations"] = equations
    if gen.choice(4) == 3:
        pack = _pack(gen)
        if pack:
            data["pack"] = pack
    return data


def _reads(text: str) -> set[str]:
    """The names an equation's text reads (none if it does not parse)."""
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        return set()
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}


def _pack(gen: _Generator) -> dict[str, list[str]]:
    """One or two packed parameters, each grouping same-shaped parameters."""
    groups = {"vector": gen.spec.vectors,
              **{size: [m for m, s in gen.spec.matrices.items() if s == size]
                 for size in ("I", "H")}}
    pack = {}
    for _ in range(gen.draw(st.integers(1, 2))):
        kinds = [k for k, members in groups.items() if members]
        if not kinds:
            break
        free = groups[gen.pick(kinds)]
        members = gen.draw(st.lists(st.sampled_from(free), min_size=1, max_size=len(free),
                                    unique=True))
        for m in members:
            free.remove(m)
        pack[gen.name(PACKS)] = members
    return pack


# TOML ---------------------------------------------------------------------------------------

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f",
            "\r": "\\r"}


def toml_string(text: str) -> str:
    """A TOML basic string holding text: quotes, backslashes and control characters escaped."""
    out = []
    for ch in text:
        code = ord(ch)
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\u{code:04X}")
        elif 0xD800 <= code <= 0xDFFF:
            raise ValueError(f"a lone surrogate (U+{code:04X}) cannot be written as TOML")
        else:
            out.append(ch)
    return f'"{"".join(out)}"'


def _key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else toml_string(key)


def _value(value) -> str:
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return f"[{', '.join(toml_string(v) for v in value)}]"
    raise TypeError(f"cannot write {type(value).__name__} {value!r} as a spec value")


def to_toml(data: dict) -> str:
    """TOML text of a spec table: strings and lists of strings at the top, then one [table] per
    dict of them (equations, pack, latex), in the dict's order."""
    lines = [f"{_key(k)} = {_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for name, table in data.items():
        if isinstance(table, dict):
            lines += ["", f"[{_key(name)}]"]
            lines += [f"{_key(k)} = {_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"
