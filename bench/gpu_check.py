"""The emitted Torch LSTM and GRU on CUDA: float64 against the CPU result, float32 timed
against nn.LSTM / nn.GRU (cuDNN). One short script for a machine with a GPU:

    python bench/gpu_check.py

Without CUDA it says so and exits 0 (nothing to check).
"""

from __future__ import annotations

import importlib.util
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from derive_cells.derivation import derive  # noqa: E402
from derive_cells.emit import emit  # noqa: E402
from derive_cells.spec import load_cell  # noqa: E402

NN = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}
SIZES = {"mid": (100, 32, 64, 128), "large": (200, 64, 128, 256)}


def load(cell: str, folder: Path):
    path = folder / f"{cell}_torch.py"
    path.write_text(emit(derive(load_cell(cell)), "torch"))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rel(a, b) -> float:
    return float((a - b).norm() / b.norm())


def timed(fn, repeats=20) -> float:
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        out.append(time.perf_counter() - start)
    return statistics.median(out) * 1e3


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 0
    dev = torch.device("cuda")
    print(f"# {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    worst = 0.0
    print("| cell | check | value |")
    print("|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for cell in NN:
            mod = load(cell, Path(tmp))
            T, B, I, H = 20, 4, 8, 16
            m = NN[cell](I, H).double()
            params = {k.removesuffix("_l0"): v.detach() for k, v in m.named_parameters()}
            x, d = torch.randn(T, B, I, dtype=torch.float64), torch.randn(T, B, H,
                                                                           dtype=torch.float64)
            results = []
            for device in ("cpu", dev):
                p = {k: v.to(device) for k, v in params.items()}
                out, _, cache = mod.forward(x.to(device), None, p)
                d_x, _, d_p = mod.backward(d.to(device), None, cache)
                results.append([out.cpu(), d_x.cpu(), *(d_p[k].cpu() for k in sorted(d_p))])
            err = max(rel(a, b) for a, b in zip(results[1], results[0], strict=True))
            worst = max(worst, err)
            print(f"| {cell} | float64 CUDA vs CPU, worst rel. error | {err:.1e} |")
            for size, (T, B, I, H) in SIZES.items():
                nn = NN[cell](I, H).to(dev)
                p = {k.removesuffix("_l0"): v.detach() for k, v in nn.named_parameters()}
                x = torch.randn(T, B, I, device=dev)
                dout = torch.ones(T, B, H, device=dev)
                xr = x.clone().requires_grad_()

                def ours(mod=mod, x=x, p=p, dout=dout):
                    with torch.no_grad():
                        out, _, cache = mod.forward(x, None, p)
                        mod.backward(dout, None, cache)

                def cudnn(nn=nn, xr=xr, dout=dout):
                    out, _ = nn(xr)
                    out.backward(dout)

                a, b = timed(ours), timed(cudnn)
                print(f"| {cell} | {size} float32 fwd+bwd: emitted {a:.2f} ms, cuDNN {b:.2f} ms"
                      f" | {a / b:.2f}x |")
    return 0 if worst < 1e-10 else 1


if __name__ == "__main__":
    sys.exit(main())
