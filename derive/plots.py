"""Plots (matplotlib, no display), shared by the stages that draw: a pyplot set up for
deterministic output (fixed SVG ids, no dates), ids for lines, and rendering to bytes.

Every line a stage draws carries an id (``measured-<cell>-<state>``, ``predicted-<cell>-<state>``)
so that tests and reports can find it.
"""

from __future__ import annotations

import io


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.hashsalt": "derive-cells", "svg.fonttype": "none",
                         "font.size": 10, "axes.grid": True, "grid.alpha": 0.3})
    return plt


def slug(*parts: str) -> str:
    return "-".join("".join(c if c.isalnum() or c == "_" else "_" for c in p) for p in parts)


def render(fig, fmt: str) -> bytes:
    """The figure as SVG or PNG bytes, the same bytes for the same figure."""
    buf = io.BytesIO()
    metadata = {"svg": {"Date": None}, "pdf": {"CreationDate": None, "ModDate": None},
                "png": {"Software": None}}[fmt]
    fig.savefig(buf, format=fmt, metadata=metadata, dpi=120)
    pyplot().close(fig)
    return buf.getvalue()
