"""Start-up time of `derive-cells lstm --emit numpy` beside `python -c "import sympy"`.

    python bench/bench_startup.py [--repeats 15]

Both commands run as fresh processes, interleaved; prints the medians and their ratio (the
target is at most 2x: the emit path must not import torch or plotting libraries).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args()
    beside = Path(sys.executable).parent / "derive-cells"  # the interpreter's own environment
    cli = str(beside) if beside.exists() else shutil.which("derive-cells") or "derive-cells"
    commands = {
        "import sympy": [sys.executable, "-c", "import sympy"],
        "derive-cells lstm --emit numpy": [cli, "lstm", "--emit", "numpy"],
    }
    times: dict[str, list[float]] = {k: [] for k in commands}
    for _ in range(args.repeats):
        for name, cmd in commands.items():
            start = time.perf_counter()
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            times[name].append(time.perf_counter() - start)
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    for k, v in med.items():
        print(f"{k:<34} {v:7.1f} ms")
    ratio = med["derive-cells lstm --emit numpy"] / med["import sympy"]
    print(f"{'ratio':<34} {ratio:7.2f}x  (target <= 2)")
    heavy = subprocess.run([sys.executable, "-X", "importtime", "-c",
                            "import sys; sys.argv = ['derive-cells', 'lstm', '--emit', 'numpy'];"
                            "from derive_cells.cli import main; main()"],
                           capture_output=True, text=True)
    loaded = {line.split("|")[-1].strip().split(".")[0] for line in heavy.stderr.splitlines()}
    print("torch imported:", "torch" in loaded, "| matplotlib imported:", "matplotlib" in loaded)


if __name__ == "__main__":
    main()
