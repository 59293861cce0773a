"""Bad cell specs are refused with SpecError (file, equation, reason) and CLI exit status 2.

A spec is data: nothing in it may run, whatever it holds. Each case writes its spec into
pytest's tmp_path. Cases marked xfail(strict=True) are known bugs (see their reasons).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from derive_cells.cli import main
from derive_cells.spec import (
    MAX_EQUATION_CHARS,
    MAX_EQUATIONS,
    MAX_SPEC_BYTES,
    SpecError,
    load_cell,
)

BUILTIN_NAMES = ["gru", "lstm", "rnn", "rnn_relu", "simplified_gru"]
DERIVE_CELLS = Path(sys.executable).with_name("derive-cells")
PWN = "__import__('os').system('touch PWNED')"


def eq(target: str, text: str) -> str:
    """One TOML line `target = "text"` (JSON string escapes are valid TOML basic strings)."""
    return f"{target} = {json.dumps(text)}"


def make_spec(*equations: str, state: str = '["h"]', output: str = '"h"', top: str = "",
              tail: str = "", name: str = '"user_cell"', inp: str = '"x"') -> str:
    """A spec whose top-level keys can be replaced; equations are TOML lines (see eq)."""
    return (f"name = {name}\ninput = {inp}\nstate = {state}\noutput = {output}\n{top}\n"
            "[equations]\n" + "\n".join(equations) + f"\n{tail}")


def write(tmp_path: Path, content: str | bytes, filename: str = "bad.toml") -> Path:
    path = tmp_path / filename
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def assert_refused(path: Path | str, reason: str | tuple[str, ...] | None,
                   equation: str | None = None) -> SpecError:
    """load_cell(path) raises SpecError naming the file, the equation and the reason."""
    with pytest.raises(SpecError) as info:
        load_cell(str(path))
    err, msg = info.value, str(info.value)
    assert str(path) in msg, msg
    if equation is not None:
        assert f"equation '{equation}'" in msg, msg
        assert err.equation == equation
    if reason is not None:
        reasons = (reason,) if isinstance(reason, str) else reason
        assert any(r in msg for r in reasons), msg
    return err


VALID = make_spec(eq("h", "tanh(W @ x + U @ h_prev + b)"))

# --------------------------------------------------------------------------- file-level errors

FILE_CASES = [
    pytest.param('name = "x"\nstate = [\n', "not valid TOML", id="toml-syntax-error"),
    pytest.param('name = "t\n"\n', "not valid TOML", id="toml-newline-in-string"),
    pytest.param(b'name = "caf\xe9"\n' + VALID.encode()[len('name = "user_cell"\n'):],
                 "not UTF-8", id="not-utf8"),
    pytest.param(b"\xff\xfe" + VALID.encode("utf-16-le"), "not UTF-8", id="utf16"),
    pytest.param("weights = 1\n" + VALID, "unknown key(s) weights", id="unknown-top-key"),
    pytest.param("Name = 'x'\n" + VALID, "unknown key(s) Name", id="unknown-top-key-case"),
    pytest.param(make_spec(eq("h", "tanh(h_prev)"), state='["h", "c"]'),
                 "state 'c' is never assigned", id="state-never-assigned"),
    pytest.param(make_spec(eq("h", "tanh(h_prev)"), output='"y"'),
                 "output 'y' is never assigned", id="output-never-assigned"),
    pytest.param(make_spec(eq("h", "tanh(h_prev)"), state="[]"),
                 "at least one name", id="state-empty"),
    pytest.param(make_spec(eq("h", "tanh(h_prev)"), state='["h", "h"]'),
                 "lists a name twice", id="state-twice"),
    pytest.param(make_spec(eq("h", "tanh(h_prev)"), state='"h"'),
                 "'state' must be a list", id="state-not-list"),
    pytest.param(make_spec(eq("h", "tanh(h_prev)"), state='["h", 3]'),
                 "not a valid name", id="state-not-string"),
    pytest.param(make_spec(eq("h", "tanh(d_h_prev)"), state='["d_h"]'),
                 "reserved prefix", id="state-reserved-prefix"),
    pytest.param(make_spec(eq("h", "tanh(h_prev)"), inp="3"),
                 "'input' must be a str", id="input-not-string"),
    pytest.param(make_spec(eq("h", "tanh(h_prev)"), inp='"sigmoid"'),
                 "is the name of a function", id="input-function-name"),
    pytest.param(make_spec(eq("h", "tanh(h_prev)"), inp='"class"'),
                 "not a valid name", id="input-keyword"),
    pytest.param(make_spec(eq("h", "tanh(h_prev)"), inp='"x y"'),
                 "not a valid name", id="input-space"),
    pytest.param(make_spec(eq("h", "tanh(h_prev)"), name='"../../etc"'),
                 "cell name", id="cell-name-path"),
    pytest.param(make_spec(eq("h", "tanh(h_prev)"), name='""'), "cell name", id="cell-name-empty"),
    pytest.param(make_spec(eq("h", "tanh(h_prev)"), top="title = 3"),
                 "'title' must be a string", id="title-not-string"),
    pytest.param(make_spec(), "'equations' is empty", id="equations-empty"),
    pytest.param('name = "t"\ninput = "x"\nstate = ["h"]\noutput = "h"\nequations = "h"\n',
                 "'equations' must be a dict", id="equations-not-table"),
    pytest.param(make_spec(*(eq(f"a{i}", "tanh(h_prev)") for i in range(MAX_EQUATIONS)),
                           eq("h", "tanh(h_prev)")),
                 f"more than {MAX_EQUATIONS} equations", id="too-many-equations"),
    pytest.param(make_spec(eq("h", "tanh(h_prev)"), top="pack = 3"),
                 "[pack] must be a table", id="pack-not-table"),
    pytest.param(make_spec(eq("h", "tanh(h_prev)"), tail="[latex]\nh = 3\n"),
                 "[latex] must be a table of strings", id="latex-not-strings"),
]


@pytest.mark.parametrize(("content", "reason"), FILE_CASES)
def test_bad_file_is_refused(tmp_path, content, reason):
    err = assert_refused(write(tmp_path, content), reason)
    assert err.equation is None


@pytest.mark.parametrize("key", ["name", "input", "state", "output", "equations"])
def test_missing_required_key(tmp_path, key):
    data = {"name": '"t"', "input": '"x"', "state": '["h"]', "output": '"h"'}
    lines = [f"{k} = {v}" for k, v in data.items() if k != key]
    if key != "equations":
        lines += ["[equations]", eq("h", "tanh(W @ x + h_prev)")]
    assert_refused(write(tmp_path, "\n".join(lines) + "\n"), f"missing key '{key}'")


def test_missing_path_ending_in_toml(tmp_path):
    assert_refused(tmp_path / "no_such_cell.toml", "cannot read the spec file")


def test_directory_ending_in_toml(tmp_path):
    (tmp_path / "dir.toml").mkdir()
    assert_refused(tmp_path / "dir.toml", "not a regular file")


def test_file_over_size_limit(tmp_path):
    text = VALID + "#" * (MAX_SPEC_BYTES + 1 - len(VALID.encode())) + "\n"
    assert len(text.encode()) > MAX_SPEC_BYTES
    assert_refused(write(tmp_path, text), "larger than")
    just_fits = VALID + "#" * (MAX_SPEC_BYTES - len(VALID.encode()) - 1) + "\n"
    assert len(just_fits.encode()) == MAX_SPEC_BYTES
    assert load_cell(str(write(tmp_path, just_fits, "ok.toml"))).output == "h"


@pytest.mark.skipif(sys.platform != "linux" or not os.path.exists("/dev/zero"),
                    reason="needs Linux /dev/zero and RLIMIT_AS")
def test_endless_file_is_refused_without_reading_it_all(tmp_path):
    (tmp_path / "zero.toml").symlink_to("/dev/zero")
    code = ("import resource, sys\n"
            "resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n"
            "from derive_cells.spec import SpecError, load_cell\n"
            "try:\n    load_cell('zero.toml')\n"
            "except SpecError as exc:\n    print(exc)\n    sys.exit(2)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "zero.toml" in proc.stdout and "not a regular file" in proc.stdout


def test_deeply_nested_toml_is_refused(tmp_path):
    assert_refused(write(tmp_path, VALID + "[latex]\ndeep = " + "[" * 3000 + "]" * 3000 + "\n"),
                   None)


@pytest.mark.parametrize(("field", "spec"), [
    pytest.param("equation target", make_spec(eq("h", "tanh(h_prev)"), '"a\\n" = "tanh(h_prev)"'),
                 id="target"),
    pytest.param("input", make_spec(eq("h", "tanh(W @ x + h_prev)"), inp='"x\\n"'), id="input"),
    pytest.param("cell name", make_spec(eq("h", "tanh(h_prev)"), name='"t\\n"'), id="cell-name"),
])
def test_name_with_trailing_newline_is_refused(tmp_path, field, spec):
    assert_refused(write(tmp_path, spec), ("not a valid name", "cell name"))


# ------------------------------------------------------------------- equation-level errors

# (equations as TOML lines, the equation the error must name, the reason the message must hold)
EQUATION_CASES = [
    pytest.param([eq("h", "h = 3")], "h", "syntax error", id="py-syntax-error"),
    pytest.param([eq("h", "tanh(W @ h_prev")], "h", "syntax error", id="py-unclosed-paren"),
    pytest.param([eq("h", "")], "h", "syntax error", id="empty-equation"),
    pytest.param([eq("h", "tanh(h_prev)\0")], "h", ("syntax error", "cannot parse"),
                 id="null-byte"),
    pytest.param(["h = 3"], "h", "must be a string", id="equation-not-string"),
    pytest.param(["h = ['tanh(h_prev)']"], "h", "must be a string", id="equation-list"),
    pytest.param(["[equations.h]", "a = 1"], "h", "must be a string", id="equation-table"),
    pytest.param([eq("h", "foo(h_prev)")], "h", "unknown function 'foo'", id="unknown-function"),
    pytest.param([eq("h", "print(h_prev)")], "h", "unknown function 'print'", id="builtin-print"),
    pytest.param([eq("h", "np.tanh(h_prev)")], "h", "attribute access", id="np-attribute-call"),
    pytest.param([eq("h", "sigmoid(h_prev, h_prev)")], "h", "exactly one argument",
                 id="two-arguments"),
    pytest.param([eq("h", "sigmoid()")], "h", "exactly one argument", id="no-arguments"),
    pytest.param([eq("h", "sigmoid(x=1)")], "h", "exactly one argument", id="keyword-argument"),
    pytest.param([eq("h", "tanh(*h_prev)")], "h", "exactly one argument", id="starred-call"),
    pytest.param([eq("h", "tanh(**h_prev)")], "h", "exactly one argument", id="double-starred"),
    pytest.param([eq("h", "(lambda q: q)(h_prev)")], "h", "lambda", id="lambda-called"),
    pytest.param([eq("h", "h_prev + (lambda: 1)")], "h", "lambda", id="lambda"),
    pytest.param([eq("h", "tanh(h_prev.real)")], "h", "attribute access", id="attribute"),
    pytest.param([eq("h", "tanh(W @ x[0] + h_prev)")], "h", "indexing", id="subscript"),
    pytest.param([eq("h", "h_prev * (h_prev > 0)")], "h", "comparison", id="comparison"),
    pytest.param([eq("h", "h_prev and W @ x")], "h", "and/or", id="boolop"),
    pytest.param([eq("h", "h_prev if h_prev else b")], "h", "if-expression", id="ifexp"),
    pytest.param([eq("h", "h_prev + f'{h_prev}'")], "h", "f-string", id="fstring"),
    pytest.param([eq("h", "(q := tanh(h_prev))")], "h", ":=", id="walrus"),
    pytest.param([eq("h", "h_prev + 'abc'")], "h", "constant 'abc' is not a number",
                 id="string-constant"),
    pytest.param([eq("h", "h_prev + b'abc'")], "h", "is not a number", id="bytes-constant"),
    pytest.param([eq("h", "h_prev * True")], "h", "constant True is not a number", id="true"),
    pytest.param([eq("h", "h_prev + None")], "h", "constant None is not a number", id="none"),
    pytest.param([eq("h", "h_prev + ...")], "h", "is not a number", id="ellipsis"),
    pytest.param([eq("h", "h_prev * 1j")], "h", "is not a number", id="complex"),
    pytest.param([eq("h", "h_prev + [1]")], "h", "a list", id="list"),
    pytest.param([eq("h", "h_prev + (1, 2)")], "h", "a tuple", id="tuple"),
    pytest.param([eq("h", "h_prev + {1: 2}")], "h", "a dict", id="dict"),
    pytest.param([eq("h", "[q for q in h_prev]")], "h", "not allowed", id="comprehension"),
    pytest.param([eq("h", "h_prev // 2")], "h", "FloorDiv", id="floordiv"),
    pytest.param([eq("h", "h_prev % 2")], "h", "Mod", id="mod"),
    pytest.param([eq("h", "h_prev ^ b")], "h", "BitXor", id="bitxor"),
    pytest.param([eq("h", "~h_prev")], "h", "Invert", id="invert"),
    pytest.param([eq("h", "not h_prev")], "h", "Not", id="not"),
    # names
    pytest.param([eq("r", "sigmoid(W_r @ h)"), eq("h", "r * tanh(W @ h_prev)")], "r",
                 ("'h' is used before its equation", "'h_prev'"), id="state-before-equation"),
    pytest.param([eq("h", "tanh(W @ h)")], "h", "'h' is used before its equation",
                 id="state-in-own-equation"),
    pytest.param([eq("a", "tanh(z + h_prev)"), eq("z", "tanh(W @ x)"), eq("h", "a * z")], "a",
                 "'z' is used before its equation", id="target-before-equation"),
    pytest.param([eq("h", "tanh(foo_prev + h_prev)")], "h",
                 "'foo_prev' refers to the previous value of 'foo', which is not a state",
                 id="foo-prev-not-state"),
    pytest.param([eq("h", "tanh(x_prev + h_prev)")], "h", "which is not a state",
                 id="input-prev"),
    pytest.param([eq("h", "tanh(h_prev + _secret)")], "h",
                 ("'_secret' uses a reserved prefix", "'_secret' is not a valid name"),
                 id="reserved-underscore-name"),
    pytest.param([eq("h", "tanh(h_prev + __builtins__)")], "h",
                 ("reserved prefix", "not a valid name"), id="dunder-name"),
    pytest.param([eq("h", "tanh(h_prev + d_foo)")], "h", "'d_foo' uses a reserved prefix",
                 id="reserved-d-name"),
    pytest.param([eq("h", "tanh(d_W @ h_prev)")], "h", "'d_W' uses a reserved prefix",
                 id="reserved-d-matrix"),
    pytest.param([eq("d_foo", "tanh(h_prev)"), eq("h", "d_foo")], "d_foo",
                 "'d_foo' uses a reserved prefix", id="reserved-d-target"),
    pytest.param([eq("_secret", "tanh(h_prev)"), eq("h", "tanh(h_prev)")], "_secret",
                 ("reserved prefix", "not a valid name"), id="reserved-underscore-target"),
    pytest.param([eq("h", "tanh(h_prev + é)")], "h", "not a valid name", id="non-ascii-name"),
    pytest.param([eq("h", "tanh + h_prev")], "h", "'tanh' is the name of a function",
                 id="function-as-variable"),
    pytest.param([eq("h", "relu(sigmoid @ h_prev)")], "h", "'sigmoid' is the name of a function",
                 id="function-as-matrix"),
    pytest.param([eq("tanh", "sigmoid(h_prev)"), eq("h", "tanh")], "tanh",
                 "'tanh' is the name of a function", id="function-as-target"),
    pytest.param([eq("x", "tanh(h_prev)"), eq("h", "x")], "x", "is an input of the step",
                 id="assign-input"),
    pytest.param([eq("h_prev", "tanh(h_prev)"), eq("h", "h_prev")], "h_prev",
                 "is an input of the step", id="assign-prev"),
    # @
    pytest.param([eq("h", "tanh((W + V) @ h_prev)")], "h",
                 "left side of @ must be the name of a learned matrix", id="matmul-left-expr"),
    pytest.param([eq("h", "tanh(tanh(W) @ h_prev)")], "h",
                 "left side of @ must be the name of a learned matrix", id="matmul-left-call"),
    pytest.param([eq("h", "tanh(2 @ h_prev)")], "h",
                 "left side of @ must be the name of a learned matrix", id="matmul-left-number"),
    pytest.param([eq("r", "sigmoid(W @ h_prev)"), eq("h", "tanh(r @ h_prev)")], "h",
                 "'r' is computed by the cell", id="matmul-left-computed"),
    pytest.param([eq("h", "tanh(h_prev @ h_prev)")], "h", "must be a learned matrix",
                 id="matmul-left-prev"),
    pytest.param([eq("h", "tanh(x @ h_prev)")], "h", "must be a learned matrix",
                 id="matmul-left-input"),
    pytest.param([eq("h", "h_prev + W @ 2")], "h", "@ needs a vector", id="matmul-number"),
    pytest.param([eq("h", "tanh(W @ x + W @ h_prev)")], "h",
                 "matrix 'W' multiplies both the input and hidden-size vectors",
                 id="matrix-input-and-hidden"),
    pytest.param([eq("a", "tanh(W @ h_prev)"), eq("h", "a * tanh(W @ x)")], "h",
                 "matrix 'W' multiplies both", id="matrix-input-and-hidden-across"),
    pytest.param([eq("h", "tanh(W @ h_prev + W)")], "h",
                 "'W' is used both as a matrix and as a vector", id="matrix-then-vector"),
    pytest.param([eq("h", "tanh(W + W @ h_prev)")], "h",
                 "'W' is used both as a matrix and as a vector", id="vector-then-matrix"),
    pytest.param([eq("a", "tanh(W @ h_prev)"), eq("h", "a * W")], "h",
                 "'W' is used both as a matrix and as a vector", id="matrix-vector-across"),
    # sizes
    pytest.param([eq("h", "tanh(x * h_prev)")], "h", "mixes the input (size I)",
                 id="input-times-hidden"),
    pytest.param([eq("h", "tanh(W @ h_prev + x)")], "h", "mixes the input", id="input-plus-hidden"),
    pytest.param([eq("h", "tanh(x + b)")], "h", "mixes the input", id="input-plus-vector"),
    pytest.param([eq("h", "tanh(W @ (x + h_prev))")], "h", "mixes the input",
                 id="mixed-matmul-operand"),
    pytest.param([eq("h", "tanh(x)")], "h", "must be a hidden-size vector", id="input-size-result"),
    pytest.param([eq("h", "2 + 3")], "h", "must be a hidden-size vector", id="number-result"),
    pytest.param([eq("a", "tanh(x)"), eq("h", "W @ a")], "a", "must be a hidden-size vector",
                 id="input-size-intermediate"),
    # numbers
    pytest.param([eq("h", "h_prev ** h_prev")], "h", "exponent of ** must be a number",
                 id="non-numeric-exponent"),
    pytest.param([eq("h", "h_prev ** (1 + 1)")], "h", "exponent of ** must be a number",
                 id="expression-exponent"),
    pytest.param([eq("h", "h_prev ** 1000")], "h", "exponent 1000 is larger than 16",
                 id="huge-exponent"),
    pytest.param([eq("h", "h_prev ** -1000")], "h", "is larger than 16",
                 id="huge-negative-exponent"),
    pytest.param([eq("h", "h_prev ** 1e999")], "h", "is larger than 16", id="infinite-exponent"),
    pytest.param([eq("h", "h_prev ** 2 ** 100")], "h", "must be a number",
                 id="tower-exponent"),
    pytest.param([eq("h", "h_prev * 1e999")], "h", "constant inf is not finite",
                 id="non-finite-constant"),
    pytest.param([eq("h", "h_prev * -1e999")], "h", "not finite", id="negative-infinite"),
    pytest.param([eq("h", "h_prev * 123456789012345678901234567890")], "h", "too large",
                 id="huge-integer"),
    # size of the text and of the tree
    pytest.param([eq("h", "h_prev" + " + 0" * (MAX_EQUATION_CHARS // 4))], "h",
                 f"longer than {MAX_EQUATION_CHARS} characters", id="equation-too-long"),
    pytest.param([eq("h", "tanh(" * 50 + "h_prev" + ")" * 50)], "h", "nested deeper than",
                 id="nesting-too-deep-calls"),
    pytest.param([eq("h", "-" * 100 + "h_prev")], "h", "nested deeper than",
                 id="nesting-too-deep-unary"),
    pytest.param([eq("h", "(" * 300 + "h_prev" + ")" * 300)], "h",
                 ("nested", "syntax error", "cannot parse"), id="nesting-too-deep-parens"),
    pytest.param([eq("h", "h_prev + (" * 50 + "h_prev" + ")" * 50)], "h", "nested deeper than",
                 id="nesting-too-deep-parenthesised-sum"),
    pytest.param([eq("h", "c + " + "tanh(" * 45 + "h_prev + b" + ")" * 45 + " + c")], "h",
                 "nested deeper than 40 levels", id="nesting-too-deep-calls-in-a-sum"),
    pytest.param([eq("h", "*".join(["h_prev"] * 41))], "h", "a product of more than 40 factors",
                 id="product-of-41-factors"),
    # a misspelled name, read as a learned vector: the message names it and the nearest known
    pytest.param([eq("h", "tanh(W @ x + U @ h_prv + b)")], "h",
                 "unknown name 'h_prv', nearest known name 'h_prev'", id="misspelled-state-matmul"),
    pytest.param([eq("h", "h_prv * 0.5 + b")], "h",
                 "unknown name 'h_prv', nearest known name 'h_prev'", id="misspelled-state"),
    pytest.param([eq("h", "tanh(W @ xx + U @ h_prev)")], "h",
                 "unknown name 'xx', nearest known name 'x'", id="misspelled-input"),
    pytest.param([eq("h", "tanh(W @ x + U @ hh_prev)")], "h",
                 "'hh_prev' refers to the previous value of 'hh', which is not a state (did you "
                 "mean 'h_prev'?)", id="misspelled-state-prev"),
]


@pytest.mark.parametrize(("equations", "equation", "reason"), EQUATION_CASES)
def test_bad_equation_is_refused(tmp_path, monkeypatch, equations, equation, reason):
    monkeypatch.chdir(tmp_path)
    assert_refused(write(tmp_path, make_spec(*equations)), reason, equation)
    assert not (tmp_path / "PWNED").exists()


HOSTILE = [
    PWN,
    f"h_prev + {PWN}",
    "__import__('os')",
    "exec(\"__import__('os').system('touch PWNED')\")",
    "eval(\"__import__('os').system('touch PWNED')\")",
    f"(lambda: {PWN})()",
    f"tanh(h_prev) + (lambda: {PWN})",
    f"h_prev + f'{{{PWN}}}'",
    f"(q := {PWN})",
    f"sigmoid(x={PWN})",
    f"tanh(*[{PWN}])",
    f"tanh(**{{'z': {PWN}}})",
    f"h_prev * (h_prev < {PWN})",
    f"x[{PWN}]",
    f"h_prev.real if {PWN} else h_prev",
    f"h_prev + [{PWN} for _ in 'a']",
    "().__class__.__base__.__subclasses__()",
    "h_prev.__class__",
    f"{PWN} and h_prev",
    "open('PWNED', 'w')",
    f"W @ {PWN}",
    f"({PWN}) @ h_prev",
    f"h_prev ** {PWN}",
]


@pytest.mark.parametrize("text", HOSTILE, ids=[f"hostile{i}" for i in range(len(HOSTILE))])
def test_hostile_equation_runs_nothing(tmp_path, monkeypatch, text):
    monkeypatch.chdir(tmp_path)
    assert_refused(write(tmp_path, make_spec(eq("h", text))), None, "h")
    assert not (tmp_path / "PWNED").exists()
    assert not Path("PWNED").exists()


@pytest.mark.parametrize("text", [
    pytest.param("h_prev + 1/0", id="divide-by-zero"),
    pytest.param("h_prev + 0 ** -1", id="zero-to-negative-power"),
    pytest.param("h_prev * 1e300 * 1e300", id="product-overflows-float"),
    pytest.param("h_prev * (((2 ** 16) ** 16) ** 16) ** 16", id="power-tower"),
])
def test_folded_constant_out_of_range_is_refused(tmp_path, text):
    assert_refused(write(tmp_path, make_spec(eq("h", text))), None, "h")


def test_long_sign_chain_in_exponent_is_refused(tmp_path):
    text = "h_prev ** " + "-" * 1500 + "2"
    assert len(text) < MAX_EQUATION_CHARS
    assert_refused(write(tmp_path, make_spec(eq("h", text))), None, "h")


# ------------------------------------------------------------------------------------- [pack]

PACK_EQS = [eq("h", "tanh(W_ih @ x + b_ih + W_hh @ h_prev + b_hh)")]

PACK_CASES = [
    pytest.param("weight = ['W_ih', 'Nope']", "lists 'Nope', which is not a parameter",
                 id="unknown-parameter"),
    pytest.param("weight = ['h']", "lists 'h', which is not a parameter", id="computed-name"),
    pytest.param("weight = [3]", "must be a non-empty list of parameter names",
                 id="non-string-member"),
    pytest.param("bias = ['b_ih', 'b_ih']", "lists parameter 'b_ih' twice", id="twice"),
    pytest.param("bias = ['b_ih']\nbias2 = ['b_hh', 'b_ih']", "lists parameter 'b_ih' twice",
                 id="twice-across"),
    pytest.param("mixed = ['W_hh', 'b_hh']", "mixes parameters of different shapes",
                 id="matrix-and-vector"),
    pytest.param("weight = ['W_ih', 'W_hh']", "mixes parameters of different shapes",
                 id="input-and-hidden-matrix"),
    pytest.param("weight = []", "non-empty list", id="empty"),
    pytest.param("weight = 'W_ih'", "non-empty list", id="string"),
    pytest.param("h = ['W_hh']", "already used by the cell", id="key-is-state"),
    pytest.param("x = ['W_ih']", "already used by the cell", id="key-is-input"),
    pytest.param("W_ih = ['W_hh']", "already used by the cell", id="key-is-other-parameter"),
    pytest.param("d_weight = ['W_hh']", "reserved prefix", id="key-reserved"),
    pytest.param("tanh = ['W_hh']", "is the name of a function", id="key-function"),
    pytest.param("W_ih = 5", ("non-empty list", "already used"), id="key-is-parameter-int"),
    pytest.param("weight = [['W_ih']]", "must be a non-empty list of parameter names",
                 id="nested-list-member"),
]


@pytest.mark.parametrize(("pack", "reason"), PACK_CASES)
def test_bad_pack_is_refused(tmp_path, pack, reason):
    assert_refused(write(tmp_path, make_spec(*PACK_EQS, tail=f"[pack]\n{pack}\n")), reason)


def test_good_pack_is_accepted(tmp_path):
    tail = "[pack]\nweight = ['W_ih']\nW_hh = ['W_hh']\nbias = ['b_ih', 'b_hh']\n"
    cell = load_cell(str(write(tmp_path, make_spec(*PACK_EQS, tail=tail), "ok.toml")))
    assert cell.pack == {"weight": ("W_ih",), "W_hh": ("W_hh",), "bias": ("b_ih", "b_hh")}


# ------------------------------------------------------------------------------------- the CLI

def run_cli(*args: str):
    result = CliRunner().invoke(main, list(args))
    return result


def assert_cli_refused(result, *needles: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    assert result.stdout == ""
    assert result.stderr.startswith("derive-cells: error: "), result.stderr
    for needle in needles:
        assert needle in result.stderr, (needle, result.stderr)


@pytest.mark.parametrize("emit", [["--emit", "numpy"], []], ids=["emit-numpy", "text"])
def test_cli_unknown_cell(emit):
    result = run_cli("no_such_cell", *emit)
    assert_cli_refused(result, "no_such_cell", "unknown cell", *BUILTIN_NAMES)


CLI_BAD = [
    pytest.param(make_spec(eq("h", "tanh(W @ h_prev")), "h", "syntax error", id="syntax"),
    pytest.param(make_spec(eq("h", "foo(h_prev)")), "h", "unknown function 'foo'", id="unknown-fn"),
    pytest.param(make_spec(eq("h", PWN)), "h", "cannot be called", id="hostile"),
    pytest.param(make_spec(eq("r", "sigmoid(W_r @ h)"), eq("h", "r * tanh(W @ h_prev)")), "r",
                 "'h_prev'", id="used-before"),
    pytest.param(make_spec(eq("h", "tanh(x * h_prev)")), "h", "mixes the input", id="sizes"),
    pytest.param(make_spec(eq("h", "h_prev ** 1000")), "h", "larger than", id="exponent"),
    pytest.param(make_spec("h = 3"), "h", "must be a string", id="not-a-string"),
    pytest.param(make_spec(eq("h", "tanh(h_prev)"), output='"y"'), None, "output 'y'",
                 id="no-output"),
    pytest.param("name = [", None, "not valid TOML", id="toml"),
]


@pytest.mark.parametrize(("content", "equation", "reason"), CLI_BAD)
@pytest.mark.parametrize("emit", [["--emit", "numpy"], []], ids=["emit-numpy", "text"])
def test_cli_bad_spec(tmp_path, monkeypatch, content, equation, reason, emit):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, content)
    needles = [str(path), reason] + ([f"equation '{equation}'"] if equation else [])
    assert_cli_refused(run_cli(str(path), *emit), *needles)
    assert not (tmp_path / "PWNED").exists()


def test_cli_bad_spec_writes_no_output_file(tmp_path):
    path = write(tmp_path, make_spec(eq("h", "foo(h_prev)")))
    out = tmp_path / "out.py"
    assert_cli_refused(run_cli(str(path), "--emit", "numpy", "-o", str(out)), "unknown function")
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["bad.toml"]


def test_cli_missing_spec_file(tmp_path):
    path = tmp_path / "missing.toml"
    assert_cli_refused(run_cli(str(path), "--emit", "numpy"), str(path), "cannot read")


def run_real(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    if not DERIVE_CELLS.exists():
        pytest.skip(f"{DERIVE_CELLS} is not installed")
    return subprocess.run([str(DERIVE_CELLS), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def test_real_cli_unknown_cell(tmp_path):
    proc = run_real("no_such_cell", "--emit", "numpy", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    assert "unknown cell" in proc.stderr and "no_such_cell" in proc.stderr
    for name in BUILTIN_NAMES:
        assert name in proc.stderr


@pytest.mark.parametrize(("content", "equation", "reason"), [
    pytest.param(make_spec(eq("h", PWN)), "h", "cannot be called", id="hostile"),
    pytest.param(make_spec(eq("r", "sigmoid(W_r @ h)"), eq("h", "r * tanh(W @ h_prev)")), "r",
                 "'h_prev'", id="used-before"),
    pytest.param(make_spec(eq("h", "tanh(W @ x + W @ h_prev)")), "h", "multiplies both",
                 id="matrix-shapes"),
])
def test_real_cli_bad_spec(tmp_path, content, equation, reason):
    write(tmp_path, content)
    proc = run_real("bad.toml", "--emit", "numpy", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("derive-cells: error: bad.toml: ")
    assert f"equation '{equation}'" in proc.stderr and reason in proc.stderr
    assert not (tmp_path / "PWNED").exists()


def test_real_cli_missing_spec_file(tmp_path):
    proc = run_real("missing.toml", "--emit", "numpy", cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "missing.toml" in proc.stderr and "cannot read" in proc.stderr


# ------------------------------------------------------------------------------- valid user specs

INDRNN = make_spec(eq("h", "relu(W @ x + u * h_prev + b)"), name='"indrnn"')
MINIMAL_RNN = make_spec(
    eq("z", "tanh(W_x @ x)"),
    eq("u", "sigmoid(U_h @ h_prev + U_z @ z + b_u)"),
    eq("h", "u * h_prev + (1 - u) * z"),
    name='"minimal_rnn"', tail="[pack]\nU = ['U_h', 'U_z']\n[latex]\nu = '\\mathbf{u}'\n")


@pytest.mark.parametrize(("content", "matrices", "vectors"), [
    pytest.param(INDRNN, {"W": "input"}, ["u", "b"], id="indrnn"),
    pytest.param(MINIMAL_RNN, {"W_x": "input", "U_h": "hidden", "U_z": "hidden"}, ["b_u"],
                 id="minimal-rnn"),
])
def test_valid_user_spec_loads_and_emits(tmp_path, content, matrices, vectors):
    path = write(tmp_path, content, "spec.toml")
    cell = load_cell(str(path))
    assert cell.matrices == matrices
    assert cell.vectors == vectors
    assert cell.state == ("h",) and cell.output == "h"
    result = run_cli(str(path), "--emit", "numpy")
    assert result.exit_code == 0, (result.output, result.exception)
    compile(result.stdout, "emitted.py", "exec")
    text = run_cli(str(path))
    assert text.exit_code == 0, (text.output, text.exception)


def test_misspelled_state_message(tmp_path):
    """The whole message: the unknown symbol, the nearest known one and why it matters."""
    path = write(tmp_path, make_spec(eq("h", "tanh(W @ x + U @ h_prv + b)")))
    with pytest.raises(SpecError) as info:
        load_cell(str(path))
    assert str(info.value) == (
        f"{path}: equation 'h': unknown name 'h_prv', nearest known name 'h_prev' (a name that is "
        "not the input, a previous state or an earlier equation is a learned vector): 'U @ ...' "
        "multiplies learned vectors and constants only; the operand of @ must depend on the "
        "input or a state (a product of parameters alone is one more learned vector: write it as "
        "one)")
    path = write(tmp_path, make_spec(eq("h", "tanh(U @ (b * W))")))  # nothing close: no guess
    with pytest.raises(SpecError, match=r"^[^:]+: equation 'h': 'U @ \.\.\.' multiplies"):
        load_cell(str(path))


def flat_sum_spec(tmp_path: Path, terms: int) -> Path:
    biases = " + ".join(f"b{k}" for k in range(terms - 2))
    return write(tmp_path, make_spec(eq("h", f"tanh(W @ x + U @ h_prev + {biases})")),
                 f"sum{terms}.toml")


def test_flat_sum_of_200_terms_is_accepted_and_derives(tmp_path):
    """Depth means nesting: a sum written without parentheses is one level however long."""
    import numpy as np

    from derive_cells.derivation import derive
    from derive_cells.emit import emit
    from derive_cells.verify.modules import import_file

    path = flat_sum_spec(tmp_path, 200)
    cell = load_cell(str(path))
    assert cell.vectors == [f"b{k}" for k in range(198)]
    assert cell.equations[0][2] == load_cell(str(path)).equations[0][2]
    assert cell.equations[0][2].count(" + ") == 199
    (tmp_path / "sum200_bptt.py").write_text(emit(derive(cell), "numpy"))
    mod = import_file(tmp_path / "sum200_bptt.py", "sum200_bptt")
    rng = np.random.default_rng(0)
    T, B, I, H = 3, 2, 4, 5
    params = {n: rng.standard_normal((H, I) if n == "W" else (H, H) if n == "U" else (H,)) * 0.1
              for n in mod.PARAMS}
    x = rng.standard_normal((T, B, I))
    out, state_T, cache = mod.forward(x, {}, params)
    h, bias = np.zeros((B, H)), sum(params[f"b{k}"] for k in range(198))
    for t in range(T):
        h = np.tanh(x[t] @ params["W"].T + h @ params["U"].T + bias)
        assert np.allclose(out[t], h, rtol=1e-12, atol=1e-14)
    _, _, grads = mod.backward(np.ones_like(out), None, cache)
    assert all(np.array_equal(grads["b0"], grads[f"b{k}"]) for k in range(198))


@pytest.mark.parametrize("text", [
    "+".join(["h_prev"] * 285),  # as long as the text limit allows
    "-".join(["h_prev"] * 285),
    "+".join(["h_prev*0.5"] * 180),
    "tanh(" * 35 + "+".join(["h_prev"] * 60) + ")" * 35,  # nesting, and a long sum inside it
])
def test_long_flat_runs_are_one_level(tmp_path, text):
    cell = load_cell(str(write(tmp_path, make_spec(eq("h", text)))))
    canonical = text.replace("+", " + ").replace("-", " - ").replace("*", " * ")
    assert cell.equations[0][2] == canonical


def test_real_cli_valid_user_spec(tmp_path):
    write(tmp_path, INDRNN, "spec.toml")
    proc = run_real("spec.toml", "--emit", "numpy", "-o", "indrnn_bptt.py", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    compile((tmp_path / "indrnn_bptt.py").read_text(), "indrnn_bptt.py", "exec")


# ------------------------------------------------- emitted code must not run what a spec smuggles

def assert_emitted_module_is_inert(tmp_path: Path, result) -> None:
    """Either the CLI refused the spec cleanly, or its module imports and runs nothing."""
    if result.exit_code == 2:
        assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output
        return
    assert result.exit_code == 0, (result.output, result.exception)
    (tmp_path / "emitted_mod.py").write_text(result.stdout)
    proc = subprocess.run([sys.executable, "-c", "import emitted_mod"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert not (tmp_path / "PWNED").exists(), "importing the emitted module ran spec text"
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.parametrize("text", [
    pytest.param("tanh(W @ h_prev) # \"\"\";import os;os.system('touch PWNED');\"\"\"",
                 id="triple-quote-in-comment"),
    pytest.param("tanh(W @ h_prev) # \\N", id="backslash-in-comment"),
])
def test_equation_comment_cannot_inject_code(tmp_path, monkeypatch, text):
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path, make_spec(eq("h", text)), "spec.toml")
    assert_emitted_module_is_inert(tmp_path, run_cli(str(path), "--emit", "numpy"))


def test_spec_file_name_cannot_inject_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    name = "x\"\"\";import os;os.system('touch PWNED');\"\"\".toml"
    write(tmp_path, VALID, name)
    assert_emitted_module_is_inert(tmp_path, run_cli(name, "--emit", "numpy"))


@pytest.mark.parametrize("value", [r"\input{/etc/passwd}", r"\write18{touch PWNED}",
                                   r"x}\input{y", r"\tilde{c}}\def", r"\foo", "a b", ""])
def test_latex_display_names_outside_the_grammar_are_refused(tmp_path, value):
    spec = tmp_path / "latex.toml"
    escaped = value.replace("\\", "\\\\")
    spec.write_text('name = "t"\ninput = "x"\nstate = ["h"]\noutput = "h"\n[equations]\n'
                    f'h = "tanh(W @ x + U @ h_prev)"\n[latex]\nh = "{escaped}"\n')
    with pytest.raises(SpecError, match=r"\[latex\] h = .*write a letter or Greek letter"):
        load_cell(str(spec))


def test_latex_display_name_for_an_unknown_name_is_refused(tmp_path):
    spec = tmp_path / "latex.toml"
    spec.write_text('name = "t"\ninput = "x"\nstate = ["h"]\noutput = "h"\n[equations]\n'
                    'h = "tanh(W @ x + U @ h_prev)"\n[latex]\nq = "q"\n')
    with pytest.raises(SpecError, match=r"\[latex\] names 'q'"):
        load_cell(str(spec))
