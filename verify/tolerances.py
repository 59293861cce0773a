"""How close is close enough: tolerances that scale with the dtype, the magnitudes compared and
the conditioning of the computation.

Every check compares arrays by their relative error ||a - b|| / ||b|| and passes an array when

    error <= tolerance = max(FLOOR[dtype][check], SAFETY * estimate)

where estimate is the error that rounding alone gives a correct implementation on this very
problem:

* Against the float64 reference: estimate = k * (u_d / u_32) * e_32, where u is the dtype's
  unit roundoff (2**-53, 2**-24) and e_32 = ||r_32 - r_64|| / ||r_64|| the measured error of
  the independent reference (verify.reference, a different implementation) run in float32 on
  the same inputs. To first order rounding errors are u * kappa, with kappa the condition of
  the computation, whatever makes it large: cancellation in 1 - tanh(z)**2 near saturation, a
  power h**48, denormals, a long chain of gates, sums over thousands of rows. e_32 measures
  u_32 * kappa on exactly this problem, and the factor u_d / u_32 carries it to dtype d.
  k counts the sides that round in d: 2 in float64 (the module and the reference), 1 in
  float32 (the float64 reference's own error is negligible there). A float32 run that lost
  every digit (e_32 >= 1, or overflow) is taken as e_32 = 1 for float64 and gives no bound
  in float32 (tolerance infinite: that array cannot be resolved in float32).
* NumPy against Torch: two correct implementations in the same dtype, k = 2.
* Central finite differences D = (L(p + h) - L(p - h)) / 2h (float64, h = 1e-6): each
  evaluation of L = <d_out, outputs> + <d_T, state_T> is off by at most
  eta = u * (1 + log2 n) * sum|terms of L| + (u / u_32) * sum|d * (y_32 - y_64)|
  (its pairwise sum, and its outputs' own measured rounding), so each element of D by eta / h,
  and an array of n elements by sqrt(n) * eta / h: estimate = sqrt(n) * eta / (h * ||D||). The
  truncation error h**2 |L'''| / 6 is below the floor 1e-6 wherever |L'''| < 6e6 |L'|.
  Gradients far below eta / h (a 60-gate chain's 1e-21) are not resolvable by differences; the
  autograd references check them.

SAFETY = 10 covers the spread between two implementations' rounding (a different order of
sums, different but correct formulas): over the built-in cells and tests/specs, wherever the
estimate sets the tolerance, the measured error stays under 2x the estimate. FLOOR is the
resolution below which no check goes (the fixed tolerances of earlier versions).
"""

from __future__ import annotations

import math

import numpy as np

UNIT_ROUNDOFF = {"float64": 2.0 ** -53, "float32": 2.0 ** -24}
SAFETY = 10.0
FLOOR = {  # relative error ||a - b|| / ||b|| per array
    "float64": {"default": 1e-10, "numpy-vs-torch": 1e-12, "finite-differences": 1e-6},
    "float32": {"default": 1e-4, "numpy-vs-torch": 1e-5},
}
FD_STEP = 1e-6


def floor(dtype: str, check: str = "default") -> float:
    table = FLOOR[dtype]
    return table.get(check, table["default"])


def rounding_estimate(dtype: str, error_32: float, copies: int = 1) -> float:
    """The relative error rounding gives copies independent correct evaluations in dtype, from
    the measured relative error error_32 of a float32 evaluation of the same problem."""
    if dtype == "float32":
        return copies * error_32 if math.isfinite(error_32) and error_32 < 1 else math.inf
    return copies * UNIT_ROUNDOFF[dtype] / UNIT_ROUNDOFF["float32"] * min(error_32, 1.0)


def tolerance(dtype: str, error_32: float, check: str = "default", copies: int = 1) -> float:
    """max(FLOOR, SAFETY * estimate): see the module docstring."""
    if math.isnan(error_32):
        error_32 = math.inf
    return max(floor(dtype, check), SAFETY * rounding_estimate(dtype, error_32, copies))


def loss_noise(terms: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
               dtype: str = "float64") -> float:
    """eta, the rounding error of one evaluation of L = sum <d, y> in dtype: terms are
    (d, y_64, y_32) per output array (d the adjoint, y_64 and y_32 the reference's value in
    float64 and float32, same shape)."""
    u, n = UNIT_ROUNDOFF[dtype], sum(d.size for d, _, _ in terms)
    size = sum(float(np.abs(d * y).sum()) for d, y, _ in terms)
    measured = sum(float(np.abs(d * np.nan_to_num(y32 - y, nan=0.0, posinf=0.0,
                                                  neginf=0.0)).sum())
                   for d, y, y32 in terms)
    return u * (1 + math.log2(max(n, 1))) * size + u / UNIT_ROUNDOFF["float32"] * measured


def fd_tolerance(eta: float, step: float, numeric: np.ndarray) -> float:
    """The tolerance of an array of central differences D (n elements) taken with this step:
    max(FLOOR, SAFETY * sqrt(n) * eta / (step * ||D||)); where D is all zeros, the absolute
    SAFETY * sqrt(n) * eta / step (what verify.inputs.compare measures then)."""
    norm = float(np.linalg.norm(np.asarray(numeric, np.float64)))
    noise = math.sqrt(max(np.size(numeric), 1)) * eta / step
    return max(floor("float64", "finite-differences"), SAFETY * noise / (norm if norm > 0 else 1))
