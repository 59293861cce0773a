"""Derivation and emission time and emitted size as a cell's equation list grows.

    python bench/bench_derive.py [--sizes 5 10 15 20] [--shapes chain dense two_state]
                                 [--repeats 3] [--timeout 300]

Generated specs, written to a temporary folder:

- chain: n equations, each gate reading the previous one three times
  (a_k = sigmoid(W_k @ x + b_k) * a_{k-1} + (1 - a_{k-1}) * tanh(a_{k-1} * h_prev));
- dense: each gate reads the sum of all earlier gates (the spec itself grows as n^2);
- two_state: the chain with an LSTM-like pair of states (h, c), both read by every gate.

For each, `derive-cells SPEC --emit numpy` runs as its own process, as a user runs it (median
of --repeats; start-up included), then derive + emit runs in this process. Prints seconds,
emitted bytes (all of it, and step_jacobian alone) and the growth ratios between successive n:
derivation and emission must stay polynomial (about linear in bytes for chain and two_state).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def chain(n: int) -> str:
    eqs = ['a1 = "sigmoid(W1 @ x + U1 @ h_prev + b1)"']
    eqs += [f'a{k} = "sigmoid(W{k} @ x + b{k}) * a{k - 1} + (1 - a{k - 1}) * '
            f'tanh(a{k - 1} * h_prev)"' for k in range(2, n)]
    eqs.append(f'h = "a{n - 1} * h_prev + (1 - a{n - 1}) * tanh(U @ a{n - 1})"')
    return _spec("chain", ["h"], eqs)


def dense(n: int) -> str:
    eqs = ['g1 = "sigmoid(W1 @ x + U1 @ h_prev + b1)"']
    for k in range(2, n):
        earlier = " + ".join(f"g{j}" for j in range(1, k))
        eqs.append(f'g{k} = "sigmoid(W{k} @ x + b{k} + ({earlier}) * h_prev)"')
    eqs.append(f'h = "g{n - 1} * h_prev + (1 - g{n - 1}) * tanh(U @ (g1 * g{n - 1}))"')
    return _spec("dense", ["h"], eqs)


def two_state(n: int) -> str:
    eqs = ['a1 = "sigmoid(W1 @ x + U1 @ h_prev + p1 * c_prev + b1)"']
    eqs += [f'a{k} = "sigmoid(W{k} @ x + p{k} * c_prev + b{k}) * a{k - 1} + (1 - a{k - 1}) * '
            f'tanh(a{k - 1} * h_prev)"' for k in range(2, n - 1)]
    m = n - 2
    eqs.append(f'c = "a{m} * c_prev + (1 - a{m}) * tanh(U @ a{m})"')
    eqs.append(f'h = "a{m} * tanh(c)"')
    return _spec("two_state", ["h", "c"], eqs)


SHAPES = {"chain": chain, "dense": dense, "two_state": two_state}


def _spec(name: str, state: list[str], equations: list[str]) -> str:
    head = [f'name = "{name}"', 'input = "x"', f"state = {state!r}".replace("'", '"'),
            'output = "h"', "", "[equations]"]
    return "\n".join(head + equations) + "\n"


def _cli() -> str:
    beside = Path(sys.executable).parent / "derive-cells"  # the interpreter's own environment
    return str(beside) if beside.exists() else shutil.which("derive-cells") or "derive-cells"


def _jacobian_bytes(source: str) -> int:
    start = source.find("def step_jacobian")
    return 0 if start < 0 else len(source[start:].split("\n\n\n")[0].encode())


def _in_process(path: Path) -> float:
    from derive_cells.derivation import derive
    from derive_cells.emit import emit
    from derive_cells.spec import load_cell

    start = time.perf_counter()
    emit(derive(load_cell(str(path))), "numpy")
    return time.perf_counter() - start


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:6.2f}x" if a and b else "     -"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[5, 10, 15, 20])
    ap.add_argument("--shapes", nargs="+", choices=sorted(SHAPES), default=list(SHAPES))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=300, help="seconds per process")
    args = ap.parse_args()
    cli = _cli()
    print(f"{'shape':<10} {'n':>3} {'process s':>10} {'in-proc s':>10} {'bytes':>9} "
          f"{'jacobian B':>11} {'bytes x':>8} {'time x':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for shape in args.shapes:
            last_bytes = last_time = None
            for n in args.sizes:
                path = Path(tmp) / f"{shape}{n}.toml"
                path.write_text(SHAPES[shape](n))
                times, out = [], b""
                try:
                    for _ in range(args.repeats):
                        start = time.perf_counter()
                        out = subprocess.run([cli, str(path), "--emit", "numpy"], check=True,
                                             capture_output=True, timeout=args.timeout).stdout
                        times.append(time.perf_counter() - start)
                except subprocess.TimeoutExpired:
                    print(f"{shape:<10} {n:>3} {'> ' + str(int(args.timeout)):>10}  (timed out;"
                          " larger n skipped)")
                    break
                proc = statistics.median(times)
                inproc = _in_process(path)
                size = len(out)
                print(f"{shape:<10} {n:>3} {proc:>10.2f} {inproc:>10.2f} {size:>9} "
                      f"{_jacobian_bytes(out.decode()):>11} {_ratio(size, last_bytes):>8} "
                      f"{_ratio(inproc, last_time):>8}")
                last_bytes, last_time = size, inproc


if __name__ == "__main__":
    main()
