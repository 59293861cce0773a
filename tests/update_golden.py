"""Regenerate the golden emitted sources: python tests/update_golden.py"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from derive_cells.derivation import derive  # noqa: E402
from derive_cells.emit import emit  # noqa: E402
from derive_cells.spec import builtin_cells, load_cell  # noqa: E402

GOLDEN = Path(__file__).parent / "golden"
TARGETS = ("numpy", "torch")


def golden_path(cell: str, target: str) -> Path:
    return GOLDEN / f"{cell}.{target}.py.txt"


def render(cell: str, target: str) -> str:
    return emit(derive(load_cell(cell)), target)


def main() -> None:
    GOLDEN.mkdir(exist_ok=True)
    for cell in builtin_cells():
        for target in TARGETS:
            path = golden_path(cell, target)
            path.write_text(render(cell, target), encoding="utf-8")
            print(f"wrote {path}")


if __name__ == "__main__":
    main()
