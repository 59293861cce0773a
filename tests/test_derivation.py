"""The derivation stage: the step Jacobian stays small (named tangents) and correct on long
chains of gates, where carrying whole total derivatives forward would grow exponentially."""

from __future__ import annotations

import tomllib

import numpy as np
import pytest
from conftest import BUILTINS, TARGETS, random_params, reference_jacobian, rel_error

from derive_cells.derivation import derive
from derive_cells.emit import emit
from derive_cells.spec import cell_from_dict, load_cell
from derive_cells.verify.modules import Runner, import_file


def chain(n: int) -> str:
    """n equations, each gate reading the previous one three times."""
    eqs = ['a1 = "sigmoid(W1 @ x + U1 @ h_prev + b1)"']
    eqs += [f'a{k} = "sigmoid(W{k} @ x + b{k}) * a{k - 1} + (1 - a{k - 1}) * '
            f'tanh(a{k - 1} * h_prev)"' for k in range(2, n)]
    eqs.append(f'h = "a{n - 1} * h_prev + (1 - a{n - 1}) * tanh(U @ a{n - 1})"')
    return _spec("chain", '["h"]', eqs)


def two_state(n: int) -> str:
    """The chain with two states, both read by every gate, and a product inside the step."""
    eqs = ['a1 = "sigmoid(W1 @ x + U1 @ h_prev + p1 * c_prev + b1)"']
    eqs += [f'a{k} = "sigmoid(W{k} @ x + p{k} * c_prev + b{k}) * a{k - 1} + (1 - a{k - 1}) * '
            f'tanh(a{k - 1} * h_prev)"' for k in range(2, n - 1)]
    eqs.append(f'c = "a{n - 2} * c_prev + (1 - a{n - 2}) * tanh(U @ a{n - 2})"')
    eqs.append(f'h = "a{n - 2} * tanh(c)"')
    return _spec("two_state", '["h", "c"]', eqs)


def dense(n: int) -> str:
    """Each gate reads the sum of all earlier gates."""
    eqs = ['g1 = "sigmoid(W1 @ x + U1 @ h_prev + b1)"']
    for k in range(2, n):
        earlier = " + ".join(f"g{j}" for j in range(1, k))
        eqs.append(f'g{k} = "sigmoid(W{k} @ x + b{k} + ({earlier}) * h_prev)"')
    eqs.append(f'h = "g{n - 1} * h_prev + (1 - g{n - 1}) * tanh(U @ (g1 * g{n - 1}))"')
    return _spec("dense", '["h"]', eqs)


def _spec(name: str, state: str, eqs: list[str]) -> str:
    return "\n".join([f'name = "{name}"', 'input = "x"', f"state = {state}", 'output = "h"',
                      "[equations]", *eqs]) + "\n"


@pytest.fixture(scope="module")
def long_specs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("long")
    out = {}
    for name, text in (("chain20", chain(20)), ("two_state12", two_state(12)),
                       ("dense10", dense(10))):
        path = folder / f"{name}.toml"
        path.write_text(text)
        out[name] = path
    return out


@pytest.mark.parametrize("spec", ["chain20", "two_state12", "dense10"])
@pytest.mark.parametrize("target", TARGETS)
def test_long_chain_jacobian_is_small_and_matches_autograd(long_specs, tmp_path, target, spec):
    path = long_specs[spec]
    cell = load_cell(str(path))
    deriv = derive(cell)
    source = emit(deriv, target)
    # named tangents keep it about linear: carried as whole expressions, the 20-equation chain's
    # step_jacobian alone took megabytes
    assert len(source.encode()) < 100_000
    if spec != "dense10":  # lines as long as the spec's own (dense's grow with the gate count)
        jac_source = source[source.index("def step_jacobian"):]
        assert max(len(line) for line in jac_source.splitlines()) < 250
    assert deriv.jacobian_tangents, "a long chain names its shared tangents"
    module_path = tmp_path / f"{spec}_{target}.py"
    module_path.write_text(source)
    mod = Runner(import_file(module_path, f"{spec}_{target}_bptt"), target)

    B, I, H = 2, 3, 4
    rng = np.random.default_rng(3)
    params = random_params(mod, I, H, rng)
    x_t = rng.standard_normal((B, I))
    state = {n: rng.standard_normal((B, H)) * 0.5 for n in mod.STATE}
    jac = mod.step_jacobian(x_t, state, params)
    largest = 0.0
    for key, ref in reference_jacobian(cell, mod, x_t, state, params).items():
        assert rel_error(jac[key], ref) < 1e-12, key
        largest = max(largest, float(np.abs(ref).max()))
    assert largest > 1e-2  # not vacuous


def test_tangents_grow_linearly_with_the_chain():
    sizes = {}
    for n in (10, 20):
        deriv = derive(cell_from_dict(tomllib.loads(chain(n)), "<generated>"))
        names = [t.name for t in deriv.jacobian_tangents]
        assert len(set(names)) == len(names)
        assert all(name.startswith("_D_") for name in names)  # "_" is reserved for internals
        sizes[n] = sum(len(str(t.expr)) for t in deriv.jacobian_tangents)
    assert sizes[20] < 2.5 * sizes[10]


@pytest.mark.parametrize("cell", BUILTINS)
def test_builtin_jacobians_stay_inline(cell):
    """Small cells need no named tangents: each block term reads as one product."""
    assert derive(load_cell(cell)).jacobian_tangents == []
