"""Central finite differences of L = <d_out, outputs> + <d_T, state_T> (float64) against a
module's gradients, each with the error estimate of verify.tolerances (step, the size of L's
terms, their measured rounding).

Every element of every array on a small case, when the case has at most ELEMENT_BUDGET of them;
past that (a cell with hundreds of parameter matrices), every element of x and the initial
states, and the parameters by random directions through groups of arrays (a direction checks
every element of the arrays it moves), then through each array of a group that fails. Then
random directions through all arrays at once on a longer case.
"""

from __future__ import annotations

import numpy as np

from derive_cells.verify.inputs import Problem, compare
from derive_cells.verify.modules import Runner
from derive_cells.verify.tolerances import FD_STEP, fd_tolerance, loss_noise

ELEMENT_BUDGET = 400
GROUPS = 16


def loss(runner: Runner, problem: Problem) -> float:
    out, s_T, _ = runner.forward(problem.x, problem.state0, problem.params)
    total = float((out * problem.d_outputs).sum())
    return total + sum(float((s_T[n] * problem.d_state_T[n]).sum()) for n in s_T)


def leaves(problem: Problem):
    """(gradient array name, container, key) of every input a gradient is taken for."""
    yield "d_x", problem.x, None
    for n in problem.state0:
        yield f"d_state0[{n}]", problem.state0, n
    for n in problem.params:
        yield f"d_params[{n}]", problem.params, n


def _array(holder, key) -> np.ndarray:
    return holder if key is None else holder[key]


def shift(problem: Problem, direction: dict[str, np.ndarray], step: float) -> None:
    for array, holder, key in leaves(problem):
        _array(holder, key)[...] += step * direction[array]


def noise(problem: Problem, ref64: dict, ref32: dict) -> float:
    """eta of verify.tolerances for this problem's loss, from the reference's outputs and final
    states in float64 and float32."""
    terms = [(np.asarray(problem.d_outputs, np.float64), ref64["outputs"], ref32["outputs"])]
    terms += [(np.asarray(problem.d_state_T[n], np.float64), ref64[f"state_T[{n}]"],
               ref32[f"state_T[{n}]"]) for n in problem.d_state_T]
    return loss_noise(terms)


def element_differences(runner: Runner, problem: Problem, target: np.ndarray) -> np.ndarray:
    """dL/d target[idx] for every idx, the step being the one the float64 values really take."""
    numeric = np.zeros_like(target)
    for idx in np.ndindex(target.shape):
        keep = target[idx]
        target[idx] = keep + FD_STEP
        up, up_at = loss(runner, problem), target[idx]
        target[idx] = keep - FD_STEP
        down, down_at = loss(runner, problem), target[idx]
        target[idx] = keep
        numeric[idx] = (up - down) / (up_at - down_at)
    return numeric


def _directional(runner: Runner, problem: Problem, direction: dict[str, np.ndarray]) -> float:
    shift(problem, direction, FD_STEP)
    up = loss(runner, problem)
    shift(problem, direction, -2 * FD_STEP)
    down = loss(runner, problem)
    shift(problem, direction, FD_STEP)
    return (up - down) / (2 * FD_STEP)


def every_element(runner: Runner, problem: Problem, grads: dict, eta: float):
    """{array: [(case, Comparison, tolerance)]}: each array's central differences against
    grads: every element; past ELEMENT_BUDGET, the parameters by one random direction per
    group of arrays (at most GROUPS groups), and each array of a group that fails on its own,
    so that a failure still names its array."""
    total = sum(_array(h, k).size for _, h, k in leaves(problem))
    found = {}
    params = []
    for array, holder, key in leaves(problem):
        target = _array(holder, key)
        if total > ELEMENT_BUDGET and array.startswith("d_params["):
            params.append(array)
            continue
        numeric = element_differences(runner, problem, target)
        found[array] = [(problem.label, compare(grads[array], numeric),
                         fd_tolerance(eta, FD_STEP, numeric))]
    size = -(-len(params) // GROUPS) if params else 1
    rng = np.random.default_rng(1)
    for start in range(0, len(params), size):
        group = params[start:start + size]
        case, comparison, tol = _along(runner, problem, grads, eta, group, rng)
        if comparison.max_rel_error <= tol or len(group) == 1:
            name = group[0] if len(group) == 1 else f"{group[0]} .. {group[-1]}"
            found[name] = [(case, comparison, tol)]
            continue
        for array in group:
            found[array] = [_along(runner, problem, grads, eta, [array], rng)]
    return found


def _along(runner: Runner, problem: Problem, grads: dict, eta: float, arrays: list[str], rng):
    """(case, Comparison, tolerance) of the directional derivative along a random direction in
    the given arrays (zero in all others)."""
    direction = {a: np.zeros_like(_array(h, k)) for a, h, k in leaves(problem)}
    for array in arrays:
        direction[array] = rng.standard_normal(direction[array].shape)
    numeric = np.array([_directional(runner, problem, direction)])
    analytic = np.array([sum(float((grads[a] * direction[a]).sum()) for a in arrays)])
    where = arrays[0] if len(arrays) == 1 else f"{len(arrays)} arrays"
    return (f"{problem.label}, a random direction in {where}", compare(analytic, numeric),
            fd_tolerance(eta, FD_STEP, numeric))


def random_directions(runner: Runner, problem: Problem, grads: dict, eta: float, count: int = 3):
    """{'directional derivative': [(case, Comparison, tolerance)]} over count directions
    through every array at once."""
    rng = np.random.default_rng(0)
    cases = []
    for k in range(count):
        direction = {array: rng.standard_normal(np.shape(grads[array]))
                     for array, _, _ in leaves(problem)}
        analytic = sum(float((grads[a] * v).sum()) for a, v in direction.items())
        numeric = _directional(runner, problem, direction)
        cases.append((f"{problem.label}, direction {k}", compare(analytic, numeric),
                       fd_tolerance(eta, FD_STEP, np.array([numeric]))))
    return {"directional derivative": cases}
