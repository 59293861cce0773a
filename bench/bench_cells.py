"""Forward+backward time of the emitted modules beside PyTorch, side by side in one process.

    python bench/bench_cells.py                       # every cell, size and dtype
    python bench/bench_cells.py --cells lstm --sizes mid --repeats 9

Columns (milliseconds of one forward+backward over the whole sequence: the median over
interleaved rounds, each column settling its thread pools before it is timed; see time_runs):
  numpy    emitted NumPy module           torch    emitted Torch module (explicit backward)
  nn       torch.nn.RNN / LSTM / GRU      loop     Torch autograd through a Python loop
  floor_np / floor_t  the same matrix products alone (NumPy / Torch), the floor of any loop
Ratios: numpy/nn, torch/nn, loop/torch, numpy/floor_np, torch/floor_t.
"""

from __future__ import annotations

import argparse
import importlib.util
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from derive_cells.derivation import derive  # noqa: E402
from derive_cells.emit import emit  # noqa: E402
from derive_cells.spec import load_cell  # noqa: E402

SIZES = {"small": (50, 16, 32, 64), "mid": (100, 32, 64, 128), "large": (200, 64, 128, 256)}
GATES = {"rnn": 1, "lstm": 4, "gru": 3}
NN = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}


def load_emitted(cell: str, target: str, folder: Path):
    path = folder / f"{cell}_{target}.py"
    path.write_text(emit(derive(load_cell(cell)), target))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def loop_step(cell, x_t, state, p):
    """One step written plainly in Torch, for autograd through a Python loop."""
    gates = x_t @ p["weight_ih"].T + p["bias_ih"] + state[0] @ p["weight_hh"].T + p["bias_hh"]
    if cell == "rnn":
        return (torch.tanh(gates),)
    if cell == "lstm":
        i, f, g, o = gates.chunk(4, 1)
        c = torch.sigmoid(f) * state[1] + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c
    gi = x_t @ p["weight_ih"].T + p["bias_ih"]
    gh = state[0] @ p["weight_hh"].T + p["bias_hh"]
    ir, iz, in_ = gi.chunk(3, 1)
    hr, hz, hn = gh.chunk(3, 1)
    r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
    n = torch.tanh(in_ + r * hn)
    return ((1 - z) * n + z * state[0],)


def make_runs(cell, size, dtype, mods):
    T, B, I, H = size
    k = GATES[cell]
    tdtype = torch.float64 if dtype == "float64" else torch.float32
    torch.manual_seed(0)
    nn = NN[cell](I, H).to(tdtype)
    params_t = {n.removesuffix("_l0"): v.detach().clone() for n, v in nn.named_parameters()}
    params_np = {n: v.numpy() for n, v in params_t.items()}
    x_t = torch.randn(T, B, I, dtype=tdtype)
    x_np = x_t.numpy()
    d_out_np = np.ones((T, B, H), dtype=x_np.dtype)
    d_out_t = torch.ones(T, B, H, dtype=tdtype)
    n_state = 2 if cell == "lstm" else 1

    def numpy_run():
        out, _, cache = mods["numpy"].forward(x_np, None, params_np)
        mods["numpy"].backward(d_out_np, None, cache)

    def torch_run():
        with torch.no_grad():
            out, _, cache = mods["torch"].forward(x_t, None, params_t)
            mods["torch"].backward(d_out_t, None, cache)

    x_req = x_t.clone().requires_grad_()

    def nn_run():
        nn.zero_grad(set_to_none=True)
        out, _ = nn(x_req)
        out.backward(d_out_t)

    leaf = {n: v.clone().requires_grad_() for n, v in params_t.items()}

    def loop_run():
        state = tuple(torch.zeros(B, H, dtype=tdtype) for _ in range(n_state))
        outs = []
        for t in range(T):
            state = loop_step(cell, x_req[t], state, leaf)
            outs.append(state[0])
        torch.stack(outs).backward(d_out_t)

    w_ih, w_hh = params_np["weight_ih"], params_np["weight_hh"]
    h_np = np.ones((B, H), dtype=x_np.dtype)
    dz_np = np.ones((T, B, k * H), dtype=x_np.dtype)

    def floor_np():
        (x_np.reshape(T * B, I) @ w_ih.T)
        for _ in range(T):
            h_np @ w_hh.T
        for _ in range(T):
            dz_np[0] @ w_hh
        dz2 = dz_np.reshape(T * B, k * H)
        dz2.T @ x_np.reshape(T * B, I), dz2.T @ dz_np[:, :, :H].reshape(T * B, H), dz2 @ w_ih

    wt_ih, wt_hh = params_t["weight_ih"], params_t["weight_hh"]
    h_t, dz_t = torch.from_numpy(h_np), torch.from_numpy(dz_np)

    def floor_t():
        x_t.reshape(T * B, I) @ wt_ih.T
        for _ in range(T):
            h_t @ wt_hh.T
        for _ in range(T):
            dz_t[0] @ wt_hh
        dz2 = dz_t.reshape(T * B, k * H)
        dz2.T @ x_t.reshape(T * B, I), dz2.T @ dz_t[:, :, :H].reshape(T * B, H), dz2 @ wt_ih

    return {"numpy": numpy_run, "torch": torch_run, "nn": nn_run, "loop": loop_run,
            "floor_np": floor_np, "floor_t": floor_t}


def time_runs(runs: dict, repeats: int, settle: float = 0.3) -> dict[str, float]:
    """Median over `repeats` interleaved rounds of each column's mean time per run.

    In each round a column first runs untimed for `settle` seconds: on a machine with few
    cores the previous column's thread pools (OpenBLAS and OpenMP threads spin-wait for up to
    ~0.1-0.2 s after their last call) would otherwise steal the cores it needs. Then it runs
    for about as long again, timed.
    """
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, fn in runs.items():
            start = time.perf_counter()
            while time.perf_counter() - start < settle:
                fn()
            n, start = 0, time.perf_counter()
            while n == 0 or time.perf_counter() - start < settle:
                fn()
                n += 1
            times[name].append((time.perf_counter() - start) / n)
    return {name: statistics.median(v) * 1e3 for name, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cells", default="rnn,lstm,gru")
    ap.add_argument("--sizes", default="small,mid,large")
    ap.add_argument("--dtypes", default="float32,float64")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    print(f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch "
          f"threads, torch {torch.__version__}, numpy {np.__version__}")
    header = ("cell", "size", "dtype", "numpy", "torch", "nn", "loop", "floor_np", "floor_t",
              "np/nn", "t/nn", "loop/t", "np/floor", "t/floor")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    with tempfile.TemporaryDirectory() as tmp:
        for cell in args.cells.split(","):
            mods = {t: load_emitted(cell, t, Path(tmp)) for t in ("numpy", "torch")}
            for size in args.sizes.split(","):
                for dtype in args.dtypes.split(","):
                    print(f"timing {cell} {size} {dtype}...", file=sys.stderr, flush=True)
                    ms = time_runs(make_runs(cell, SIZES[size], dtype, mods), args.repeats)
                    ratios = (ms["numpy"] / ms["nn"], ms["torch"] / ms["nn"],
                              ms["loop"] / ms["torch"], ms["numpy"] / ms["floor_np"],
                              ms["torch"] / ms["floor_t"])
                    cols = [cell, size, dtype] + [f"{ms[k]:.1f}" for k in header[3:9]]
                    cols += [f"{r:.2f}" for r in ratios]
                    print("| " + " | ".join(cols) + " |", flush=True)


if __name__ == "__main__":
    main()
