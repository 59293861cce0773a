"""The cost of `lengths`: forward+backward of the emitted modules on a padded batch, without and
with per-row lengths, beside torch.nn on the same batch padded and as a PackedSequence.

    python bench/bench_lengths.py                           # lstm, gru, rnn; float32, float64
    python bench/bench_lengths.py --cells lstm --dtypes float64 --repeats 9

Size: T=100 B=32 I=64 H=128 (the `mid` size of bench_cells.py). Lengths are drawn uniformly in
[T/2, T] (seeded), so the masking runs on every step. Columns, milliseconds of one
forward+backward over the whole batch (median over interleaved rounds):
  np / np+len      emitted NumPy module, (a) without lengths, (b) with lengths
  t / t+len        emitted Torch module (loss.backward() through its autograd.Function), same
  nn / nn packed   torch.nn.LSTM/GRU/RNN, (c) the padded batch and the same batch packed with
                   pack_padded_sequence(enforce_sorted=False) (packing and unpacking included)
Ratios: np+len/np, t+len/t (target <= 1.15) and nn packed/nn.

Each column runs in its own worker process (this script with --worker), started once and kept
waiting on its stdin; the driver asks the workers in turn for one timing per round, so rounds
interleave (np, np+len, t, t+len, nn, nn packed, np, ...) and a column never shares its process,
its allocator or its thread pools with another.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIZE = (100, 32, 64, 128)  # T, B, I, H
COLUMNS = ("np", "np+len", "t", "t+len", "nn", "nn packed")


# ---------------------------------------------------------------- worker: one column, timed


def _problem(cell: str, dtype: str):
    """The same padded batch, weights and lengths in every worker (seeded)."""
    import numpy as np
    import torch

    T, B, I, H = SIZE
    tdtype = torch.float64 if dtype == "float64" else torch.float32
    torch.manual_seed(0)
    nn = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[cell](I, H)
    nn = nn.to(tdtype)
    x = torch.randn(T, B, I, dtype=tdtype)
    lengths = np.random.default_rng(0).integers(T // 2, T + 1, B)
    assert (lengths < T).any()  # the masking must run
    d_out = torch.randn(T, B, H, dtype=tdtype)
    return nn, x, lengths, d_out


def _run(column: str, cell: str, dtype: str, folder: Path):
    """The function a user would call once per batch for this column."""
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    nn, x, lengths, d_out = _problem(cell, dtype)
    T = x.shape[0]
    if column.startswith("nn"):
        x_req = x.clone().requires_grad_()
        lengths_t = torch.from_numpy(lengths)

        def nn_padded():
            nn.zero_grad(set_to_none=True)
            out, _ = nn(x_req)
            out.backward(d_out)

        def nn_packed():
            nn.zero_grad(set_to_none=True)
            packed = pack_padded_sequence(x_req, lengths_t, enforce_sorted=False)
            out, _ = nn(packed)
            out, _ = pad_packed_sequence(out, total_length=T)
            out.backward(d_out)

        return nn_packed if column == "nn packed" else nn_padded

    sys.path.insert(0, str(folder))
    target = "numpy" if column.startswith("np") else "torch"
    mod = __import__(f"{cell}_{target}_bptt")
    params = {n.removesuffix("_l0"): v.detach().clone() for n, v in nn.named_parameters()}
    with_lengths = column.endswith("+len")
    if target == "numpy":
        x_np, d_np = x.numpy(), d_out.numpy()
        p_np = {n: v.numpy() for n, v in params.items()}
        n_np = lengths if with_lengths else None

        def numpy_run():
            _, _, cache = mod.forward(x_np, None, p_np, lengths=n_np)
            mod.backward(d_np, None, cache)

        return numpy_run
    x_req = x.clone().requires_grad_()
    leaves = {n: v.requires_grad_() for n, v in params.items()}
    n_t = torch.from_numpy(lengths) if with_lengths else None

    def torch_run():
        for v in leaves.values():
            v.grad = None
        out, _, _ = mod.forward(x_req, None, leaves, lengths=n_t)
        out.backward(d_out)

    return torch_run


def worker(column: str, cell: str, dtype: str, folder: Path, settle: float) -> None:
    """Wait on stdin; for each line, time the column once and answer its milliseconds."""
    fn = _run(column, cell, dtype, folder)
    fn()
    print("ready", flush=True)
    for _ in sys.stdin:
        # the previous column's thread pools may still spin for ~0.1-0.2 s: run untimed first
        start = time.perf_counter()
        while time.perf_counter() - start < settle:
            fn()
        n, start = 0, time.perf_counter()
        while n == 0 or time.perf_counter() - start < settle:
            fn()
            n += 1
        print(f"{(time.perf_counter() - start) / n * 1e3:.6f}", flush=True)


# ---------------------------------------------------------------- driver


def emit_modules(cells: list[str], folder: Path) -> None:
    sys.path.insert(0, str(ROOT))
    from derive_cells.derivation import derive
    from derive_cells.emit import emit
    from derive_cells.spec import load_cell

    for cell in cells:
        deriv = derive(load_cell(cell))
        for target in ("numpy", "torch"):
            (folder / f"{cell}_{target}_bptt.py").write_text(emit(deriv, target))


def measure(cell: str, dtype: str, folder: Path, repeats: int, settle: float):
    procs = {c: subprocess.Popen(
        [sys.executable, __file__, "--worker", c, "--cells", cell, "--dtypes", dtype,
         "--folder", str(folder), "--settle", str(settle)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT) for c in COLUMNS}
    try:
        for c, p in procs.items():
            if p.stdout.readline().strip() != "ready":
                raise SystemExit(f"worker {c} ({cell} {dtype}) failed to start")
        times = {c: [] for c in COLUMNS}
        for _ in range(repeats):
            for c, p in procs.items():
                p.stdin.write("run\n")
                p.stdin.flush()
                times[c].append(float(p.stdout.readline()))
        return {c: statistics.median(v) for c, v in times.items()}
    finally:
        for p in procs.values():
            p.stdin.close()
            p.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cells", default="lstm,gru,rnn")
    ap.add_argument("--dtypes", default="float32,float64")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--settle", type=float, default=0.3)
    ap.add_argument("--worker", choices=COLUMNS, help=argparse.SUPPRESS)
    ap.add_argument("--folder", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.cells, args.dtypes, Path(args.folder), args.settle)
        return
    import numpy as np
    import torch

    T, B, I, H = SIZE
    print(f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch "
          f"threads, torch {torch.__version__}, numpy {np.__version__}; T={T} B={B} I={I} H={H},"
          f" lengths uniform in [{T // 2}, {T}]")
    header = ("cell", "dtype", *COLUMNS, "np+len/np", "t+len/t", "packed/padded")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    cells = args.cells.split(",")
    with tempfile.TemporaryDirectory(prefix="bench-lengths-") as tmp:
        emit_modules(cells, Path(tmp))
        for cell in cells:
            for dtype in args.dtypes.split(","):
                print(f"timing {cell} {dtype}...", file=sys.stderr, flush=True)
                ms = measure(cell, dtype, Path(tmp), args.repeats, args.settle)
                ratios = (ms["np+len"] / ms["np"], ms["t+len"] / ms["t"],
                          ms["nn packed"] / ms["nn"])
                cols = [cell, dtype, *(f"{ms[c]:.1f}" for c in COLUMNS),
                        *(f"{r:.2f}" for r in ratios)]
                print("| " + " | ".join(cols) + " |", flush=True)


if __name__ == "__main__":
    main()
