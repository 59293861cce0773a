"""Seconds per training epoch of the article's model, by backend, as a user runs it:

    python bench/bench_train.py                          # rnn, lstm, gru on sentiment
    python bench/bench_train.py --cells lstm --task distance --distance 40 --rounds 5

Columns (each run is `derive-cells train CELL --backend B --no-decay --format json` in its own
process; rounds interleave numpy, torch, torch.nn, numpy, ... so that no column shares a process,
an allocator or thread pools with another, and a slow spell of the machine hits all columns):
  numpy     the emitted NumPy module, NumPy optimizer (no torch imported)
  torch     the emitted Torch module (its autograd.Function runs the derived backward), torch.optim
  torch.nn  torch.nn.RNN/LSTM/GRU with autograd over the padded batch, read at each row's length
The figure is the mean seconds of an epoch's training steps (evaluation excluded) reported by
the command, median over rounds; ratios are numpy / torch.nn and torch / torch.nn.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BACKENDS = ("numpy", "torch", "torch.nn")


def one(cell: str, backend: str, args) -> float:
    command = [sys.executable, "-m", "derive_cells.cli", "train", cell, "--backend", backend,
               "--task", args.task, "--epochs", str(args.epochs), "--no-decay",
               "--format", "json", "--hidden", str(args.hidden), "--batch-size",
               str(args.batch_size)]
    if args.task == "distance":
        command += ["--distance", str(args.distance)]
    if args.task == "adding":
        command += ["--steps", str(args.steps)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr}")
    return json.loads(done.stdout)["runs"][0]["seconds_per_epoch"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", default="rnn,lstm,gru")
    parser.add_argument("--task", default="sentiment",
                        choices=["sentiment", "distance", "adding", "reviews"])
    parser.add_argument("--distance", type=int, default=40)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    import numpy
    import torch

    print(f"# {platform.processor() or platform.machine()}, Python {platform.python_version()}, "
          f"NumPy {numpy.__version__}, torch {torch.__version__} ({torch.get_num_threads()} "
          f"threads); task {args.task}, H={args.hidden}, batch {args.batch_size}, "
          f"{args.epochs} epochs per run, median of {args.rounds} interleaved rounds")
    header = (f"{'cell':<16}" + "".join(f"{b + ' s/ep':>14}" for b in BACKENDS) +
              f"{'numpy/nn':>10}{'torch/nn':>10}")
    print(header)
    for cell in args.cells.split(","):
        times: dict[str, list[float]] = {b: [] for b in BACKENDS}
        for _ in range(args.rounds):
            for backend in BACKENDS:
                times[backend].append(one(cell, backend, args))
        med = {b: statistics.median(v) for b, v in times.items()}
        print(f"{cell:<16}" + "".join(f"{med[b]:>14.3f}" for b in BACKENDS) +
              f"{med['numpy'] / med['torch.nn']:>10.2f}{med['torch'] / med['torch.nn']:>10.2f}",
              flush=True)


if __name__ == "__main__":
    main()
