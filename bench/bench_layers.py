"""The emitted nn.Module as a two-layer bidirectional layer beside torch.nn.LSTM / nn.GRU.

    python bench/bench_layers.py                      # lstm and gru, padded and packed
    python bench/bench_layers.py --cells lstm --repeats 5

Each column is timed as a user runs it: in its own Python process (a worker mode of this
script), the columns' rounds interleaved (ours padded, nn padded, ours packed, nn packed, then
again), the median of the rounds. One round is forward + backward of a padded batch
(T=50, B=32, I=64, H=128, float32 by default, lengths uniform in [T/2, T]) through
`layer(x, lengths=...)` (ours) or `nn.LSTM(x)` on the padded batch, and of the same batch as a
PackedSequence (enforce_sorted=False) through both. Printed: milliseconds and ratios ours/nn.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
T, B, I, H = 50, 32, 64, 128
NN = {"lstm": "LSTM", "gru": "GRU"}


def worker(args) -> None:
    """Time one column: prints the seconds of each of args.rounds forward+backward runs."""
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence

    sys.path.insert(0, args.folder)
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    if args.impl == "ours":
        module = __import__(f"{args.cell}_layer")
        layer = getattr(module, NN[args.cell])(I, H, num_layers=2, bidirectional=True,
                                               dtype=dtype)
    else:
        layer = getattr(torch.nn, NN[args.cell])(I, H, num_layers=2, bidirectional=True,
                                                 dtype=dtype)
    x = torch.randn(T, B, I, dtype=dtype)
    lengths = torch.randint(T // 2, T + 1, (B,))

    def run():
        if args.input == "packed":
            out, _ = layer(pack_padded_sequence(x, lengths, enforce_sorted=False))
            loss = out.data.square().sum()
        elif args.impl == "ours":
            out, _ = layer(x, lengths=lengths)
            loss = out.square().sum()
        else:  # nn modules take no lengths with a padded tensor: they run all T steps
            out, _ = layer(x)
            loss = out.square().sum()
        loss.backward()

    run()  # warm-up
    times = []
    for _ in range(args.rounds):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    print(json.dumps(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", default="lstm,gru")
    parser.add_argument("--dtypes", default="float32")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds per column")
    parser.add_argument("--rounds", type=int, default=2, help="timed runs per round")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--impl", help=argparse.SUPPRESS)
    parser.add_argument("--cell", help=argparse.SUPPRESS)
    parser.add_argument("--dtype", help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    sys.path.insert(0, str(ROOT))
    from derive_cells.derivation import derive
    from derive_cells.emit import emit
    from derive_cells.spec import load_cell

    folder = tempfile.mkdtemp(prefix="bench-layers-")
    cells = args.cells.split(",")
    for cell in cells:
        Path(folder, f"{cell}_layer.py").write_text(emit(derive(load_cell(cell)), "torch"))
    columns = [(impl, inp) for inp in ("padded", "packed") for impl in ("ours", "nn")]
    print(f"two layers, bidirectional, T={T} B={B} I={I} H={H}, lengths in [T/2, T]; "
          "milliseconds of forward+backward (median)", file=sys.stderr)
    print("| cell | dtype | ours padded | nn padded | ours packed | nn packed | "
          "padded ours/nn | packed ours/nn | ours packed/padded | nn packed/padded |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for cell in cells:
        for dtype in args.dtypes.split(","):
            samples: dict[tuple[str, str], list[float]] = {c: [] for c in columns}
            for _ in range(args.repeats):
                for impl, inp in columns:
                    out = subprocess.run(
                        [sys.executable, __file__, "--worker", "--impl", impl, "--cell", cell,
                         "--dtype", dtype, "--input", inp, "--folder", folder,
                         "--rounds", str(args.rounds)],
                        check=True, capture_output=True, text=True)
                    samples[impl, inp] += json.loads(out.stdout)
            ms = {c: 1000 * statistics.median(v) for c, v in samples.items()}
            op, np_, ok, nk = (ms["ours", "padded"], ms["nn", "padded"], ms["ours", "packed"],
                               ms["nn", "packed"])
            print(f"| {cell} | {dtype} | {op:.1f} | {np_:.1f} | {ok:.1f} | {nk:.1f} | "
                  f"{op / np_:.2f} | {ok / nk:.2f} | {ok / op:.2f} | {nk / np_:.2f} |",
                  flush=True)


if __name__ == "__main__":
    main()
