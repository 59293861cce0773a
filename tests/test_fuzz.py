"""Property-based differential test of the whole pipeline.

Random specs (tests/specgen.py) are written as TOML files and go through the parser, the
derivation and both emitters. Each is either refused with a SpecError (a one-line message naming
the file, and exit status 2 from ``derive-cells SPEC --emit numpy``) or both emitted modules,
written to files and imported, agree with autograd over verify/reference.py on random float64
inputs: outputs, final states, d_x, d_state0 and d_params, to a relative error of 1e-9. A
quarter of the draws each run with variable lengths, with lengths and reverse, and with reverse
alone, against each row run on its own.

The number of examples comes from the Hypothesis profile (tests/conftest.py): a bounded,
deterministic run by default, ``HYPOTHESIS_PROFILE=fuzz`` (``make fuzz``) for a long random one.
A failure prints the spec's TOML text.
"""

from __future__ import annotations

import hashlib
import re
import sys
import tomllib
import traceback
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from hypothesis import assume, event, given, note
from hypothesis import strategies as st
from specgen import DOMAINS, cell_specs, to_toml

from derive_cells.cli import main as cli
from derive_cells.derivation import derive
from derive_cells.emit import emit
from derive_cells.functions import FUNCTIONS
from derive_cells.spec import SpecError, load_cell
from derive_cells.verify import reference
from derive_cells.verify.inputs import dims
from derive_cells.verify.modules import import_file

pytestmark = pytest.mark.fuzz

T, B, I, H = 3, 2, 3, 4
TOLERANCE = 1e-9
TARGETS = ("numpy", "torch")


class PipelineFailure(AssertionError):
    """A spec the pipeline accepted and got wrong; one subclass per kind of failure, so that
    Hypothesis shrinks each kind on its own and reports them as distinct failures."""

    kind = "failure"


_KINDS: dict[str, type[PipelineFailure]] = {}


def failure(kind: str, detail: str) -> PipelineFailure:
    """A PipelineFailure of the class named by kind (e.g. "numpy run: NameError")."""
    if kind not in _KINDS:
        name = "".join(w.capitalize() for w in re.findall(r"[A-Za-z0-9]+", kind))
        _KINDS[kind] = type(name, (PipelineFailure,), {"kind": kind})
    return _KINDS[kind](f"{kind}: {detail}")


def attempt(stage: str, fn, *args):
    """fn(*args); an exception (other than a refusal) becomes the failure "<stage>: <type>",
    its traceback (with the emitted lines) in the message. Raised outside the handler, so the
    failure's origin for Hypothesis is its kind, not the line of emitted code."""
    try:
        return fn(*args)
    except SpecError:
        raise
    except Exception as exc:
        tb = "".join(traceback.format_exception(exc)[-12:])
        err = failure(f"{stage}: {type(exc).__name__}", f"{exc}\n{tb}")
    raise err


def rel_error(a: np.ndarray, b: np.ndarray) -> float:
    """||a - b|| / ||b|| (denominator 1 when ||b|| == 0), computed without overflow for values
    near 1e300; inf for a shape mismatch or a value that is not finite."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or not np.all(np.isfinite(a)):
        return float("inf")
    diff = a - b
    worst, scale = float(np.max(np.abs(diff), initial=0)), float(np.max(np.abs(b), initial=0))
    if worst == 0:
        return 0.0
    if not np.isfinite(worst):
        return float("inf")
    if scale == 0:
        return worst * float(np.linalg.norm(diff / worst))
    return worst / scale * float(np.linalg.norm(diff / worst) / np.linalg.norm(b / scale))


def _inputs(params_spec: dict, states: tuple[str, ...], seed: int) -> dict:
    """x (T, B, I), state0, params (normal, scaled 0.5), the adjoints d_outputs, d_state_T, and
    the layout by seed % 4: every row all T steps, lengths, lengths and reverse, reverse."""
    rng = np.random.default_rng(seed)
    variant = seed % 4
    return {
        "lengths": rng.integers(1, T + 1, B) if variant in (1, 2) else None,
        "reverse": variant in (2, 3),
        "x": rng.standard_normal((T, B, I)),
        "state0": {s: rng.standard_normal((B, H)) * 0.5 for s in states},
        "params": {n: rng.standard_normal(dims(shape, I, H)) * 0.5
                   for n, shape in params_spec.items()},
        "d_outputs": rng.standard_normal((T, B, H)),
        "d_state_T": {s: rng.standard_normal((B, H)) for s in states},
    }


def _reference(cell, problem: dict) -> dict[str, np.ndarray] | None:
    """Every checked array from autograd over verify.reference; None if any is not finite.

    The steps are those of ``reference.run``, with each value broadcast to (B, H): a value that
    reads parameters only has shape (H,) there, and the emitted modules return (B, H) arrays."""
    tx = torch.tensor(problem["x"], requires_grad=True)
    ts0 = {s: torch.tensor(v, requires_grad=True) for s, v in problem["state0"].items()}
    tp = {n: torch.tensor(v, requires_grad=True) for n, v in problem["params"].items()}
    blocks = reference.unpack(cell, tp)
    lengths = problem["lengths"] if problem["lengths"] is not None else [T] * B
    zero = torch.zeros(H, dtype=torch.float64)
    outputs = [[zero] * B for _ in range(T)]
    finals: dict[str, list] = {s: [] for s in cell.state}
    for b, length in enumerate(lengths):  # each row on its own, its valid steps only
        state = {s: v[b:b + 1] for s, v in ts0.items()}
        steps = range(length - 1, -1, -1) if problem["reverse"] else range(length)
        for t in steps:
            values = reference.step(cell, tx[t, b:b + 1], state, blocks)
            state = {s: torch.broadcast_to(values[s], (1, H)) for s in cell.state}
            outputs[t][b] = torch.broadcast_to(values[cell.output], (1, H))[0]
        for s in cell.state:
            finals[s].append(state[s][0])
    out = torch.stack([torch.stack(row) for row in outputs])
    state = {s: torch.stack(v) for s, v in finals.items()}
    loss = (out * torch.tensor(problem["d_outputs"])).sum()
    for s in cell.state:
        loss = loss + (state[s] * torch.tensor(problem["d_state_T"][s])).sum()
    leaves = {"d_x": tx, **{f"d_state0[{s}]": v for s, v in ts0.items()},
              **{f"d_params[{n}]": v for n, v in tp.items()}}
    grads = (torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
             if loss.requires_grad else [None] * len(leaves))
    result = {"outputs": out.detach().numpy(),
              **{f"state_T[{s}]": state[s].detach().numpy() for s in cell.state}}
    for (name, leaf), grad in zip(leaves.items(), grads, strict=True):
        result[name] = (grad if grad is not None else torch.zeros_like(leaf)).numpy()
    if not all(np.all(np.isfinite(v)) for v in result.values()):
        return None
    return result


def _as_numpy(a) -> np.ndarray:
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


def _aliased(arrays: dict[str, object]) -> list[str]:
    """Pairs of returned gradients that are the same object or share memory."""
    items, out = list(arrays.items()), []
    for k, (name_a, a) in enumerate(items):
        for name_b, b in items[k + 1:]:
            if a is b or np.shares_memory(_as_numpy(a), _as_numpy(b)):
                out.append(f"{name_a} and {name_b}")
    return out


def _run_module(target: str, module, problem: dict) -> dict[str, object]:
    """forward + backward of an emitted module: every checked array, as returned."""
    conv = (lambda a: torch.tensor(a)) if target == "torch" else (lambda a: a.copy())
    x = conv(problem["x"])
    state0 = {s: conv(v) for s, v in problem["state0"].items()}
    params = {n: conv(v) for n, v in problem["params"].items()}
    with np.errstate(all="ignore"):  # a dead value may overflow; the arrays checked may not
        lengths = problem["lengths"]
        out, state_T, cache = module.forward(
            x, state0, params, lengths=None if lengths is None else conv(lengths),
            reverse=problem["reverse"])
        d_x, d_state0, d_params = module.backward(
            conv(problem["d_outputs"]), {s: conv(v) for s, v in problem["d_state_T"].items()},
            cache)
    return {"outputs": out, **{f"state_T[{s}]": v for s, v in state_T.items()},
            "d_x": d_x, **{f"d_state0[{s}]": v for s, v in d_state0.items()},
            **{f"d_params[{n}]": v for n, v in d_params.items()}}


def _check_refusal(path: Path, exc: SpecError) -> None:
    message = str(exc)
    if "\n" in message or not message.startswith(str(path)):
        raise failure("refusal message", f"not one line naming the spec: {message!r}")
    result = CliRunner().invoke(cli, [str(path), "--emit", "numpy"])
    lines = result.stderr.strip().splitlines()
    if result.exit_code != 2 or len(lines) != 1 or str(path) not in lines[0]:
        raise failure("refusal by the CLI", f"derive-cells SPEC --emit numpy: exit "
                      f"{result.exit_code}, stderr {result.stderr!r}, {result.exception!r}")


def _import(folder: Path, target: str, source: str):
    file = folder / f"fuzz_cell_{target}_bptt.py"
    file.write_text(source, encoding="utf-8")
    name = f"fuzz_cell_{target}_{folder.name}"
    try:
        return import_file(file, name)
    finally:
        sys.modules.pop(name, None)


def _compare(target: str, actual: dict[str, object], expected: dict[str, np.ndarray]) -> None:
    if set(actual) != set(expected):
        raise failure(f"{target} returned names", f"{sorted(actual)}, expected "
                      f"{sorted(expected)}")
    grads = {k: v for k, v in actual.items() if k.startswith("d_")}
    aliased = _aliased(grads)
    if aliased:
        raise failure(f"{target} aliased gradients", "; ".join(aliased))
    errors = {k: rel_error(_as_numpy(actual[k]), expected[k]) for k in expected}
    bad = {k: e for k, e in errors.items() if not e <= TOLERANCE}
    if bad:  # named by the first wrong array of the forward pass, then of the backward pass
        first = next(k for k in ("outputs", "state_T", "d_state0", "d_x", "d_params")
                     if any(b.partition("[")[0] == k for b in bad))
        raise failure(f"{target} wrong {first}",
                      ", ".join(f"{k}: relative error {e:.3g}" for k, e in bad.items()))


def check_spec(spec: dict, folder: Path, seed: int = 0) -> str:
    """The property for one spec: returns "refused", "accepted" or "nonfinite" (the reference
    is not finite for these inputs); raises a PipelineFailure otherwise."""
    path = folder / "fuzz_cell.toml"
    path.write_text(to_toml(spec), encoding="utf-8")
    try:
        cell = attempt("parse", load_cell, str(path))
        deriv = attempt("derive", derive, cell)
        sources = {target: attempt(f"{target} emit", emit, deriv, target) for target in TARGETS}
    except SpecError as exc:
        _check_refusal(path, exc)
        return "refused"
    modules = {t: attempt(f"{t} import", _import, folder, t, s) for t, s in sources.items()}
    numpy_mod, torch_mod = modules["numpy"], modules["torch"]
    if (numpy_mod.PARAMS, numpy_mod.STATE) != (torch_mod.PARAMS, torch_mod.STATE):
        raise failure("targets disagree", f"PARAMS {numpy_mod.PARAMS} and {torch_mod.PARAMS}, "
                      f"STATE {numpy_mod.STATE} and {torch_mod.STATE}")
    problem = _inputs(numpy_mod.PARAMS, numpy_mod.STATE, seed)
    expected = attempt("reference", _reference, cell, problem)
    if expected is None:
        return "nonfinite"
    for target, module in modules.items():
        _compare(target, attempt(f"{target} run", _run_module, target, module, problem),
                 expected)
    return "accepted"


@pytest.fixture(scope="module")
def fuzz_folder(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@given(spec=cell_specs(), seed=st.integers(0, 2**16))
def test_pipeline_matches_autograd(fuzz_folder, spec, seed):
    text = to_toml(spec)
    note(f"spec ({len(spec['equations'])} equations), seed={seed}:\n{text}")
    # one folder per spec, kept: a replayed example finds its emitted files at the same paths,
    # and tracebacks show the emitted lines
    folder = fuzz_folder / hashlib.sha1(text.encode()).hexdigest()[:16]
    folder.mkdir(exist_ok=True)
    outcome = check_spec(spec, folder, seed)
    event(outcome)
    assume(outcome != "nonfinite")


@given(st.dictionaries(st.text(), st.one_of(st.text(), st.lists(st.text(), max_size=3),
                                            st.dictionaries(st.text(), st.text(), max_size=3)),
                       max_size=4))
def test_toml_writer_round_trips(data):
    assert tomllib.loads(to_toml(data)) == data


def test_generator_knows_every_function():
    """A function added to the table needs a domain that keeps the generated values finite."""
    assert set(DOMAINS) == set(FUNCTIONS)
