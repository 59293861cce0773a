"""The gradient-norm decay plot: log10 of the adjoint's norm against distance, per cell and
state, with its spread, the theory's prediction and where float32 would underflow."""

from __future__ import annotations

import math

from derive_cells.plots import pyplot, slug

FLOAT32_MIN_NORMAL_LOG10 = math.log10(1.1754943508222875e-38)


def decay_figure(measurements: list[dict], title: str | None = None):
    """log10 of the gradient norm against the distance back from the last step: one line per
    cell and state, the predicted slope dashed, rates in the legend."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    k = 0
    for m in measurements:
        d = m["distance"]
        for state, values in m["log10_norm"].items():
            if all(v is None for v in values):
                continue
            color = colors[k % len(colors)]
            k += 1
            xs = [x for x, v in zip(d, values, strict=True) if v is not None]
            ys = [v for v in values if v is not None]
            rate = m["rate_per_step"].get(state)
            label = f"{m['cell']} {state}: {rate:.4g} per step" if rate else \
                f"{m['cell']} {state}"
            (line,) = (line,) = ax.plot(xs, ys, color=color, lw=1.6, label=label)
            line.set_gid(slug("measured", m["cell"], state))
            spread = m.get("log10_spread", {}).get(state)
            if spread:
                lo = [v - s for v, s in zip(values, spread, strict=True)
                      if v is not None and s is not None]
                hi = [v + s for v, s in zip(values, spread, strict=True)
                      if v is not None and s is not None]
                if len(lo) == len(xs):
                    band = ax.fill_between(xs, lo, hi, color=color, alpha=0.12, lw=0)
                    band.set_gid(slug("spread", m["cell"], state))
            pred = m["predicted_rate_per_step"].get(state)
            if pred and pred > 0:
                start = max(2, m["steps"] // 10)
                x0 = min(xs, key=lambda x: abs(x - start))
                y0 = ys[xs.index(x0)]
                x1 = d[-1]
                kind = (m.get("prediction", {}).get(state) or "predicted").split(":")[0]
                (dash,) = ax.plot([x0, x1], [y0, y0 + (x1 - x0) * math.log10(pred)],
                                  color=color, lw=1.2, ls="--",
                                  label=f"{m['cell']} {state}, {kind}: {pred:.4g} per step")
                dash.set_gid(slug("predicted", m["cell"], state))
            leaves = m.get("float32_leaves_normal_range_at", {}).get(state)
            if m.get("dtype") == "float32" and leaves is not None:
                mark = ax.axvline(leaves, color=color, lw=0.8, ls=":",
                                  label=f"{m['cell']} {state} leaves float32's normal range "
                                        f"at d={leaves}")
                mark.set_gid(slug("float32", m["cell"], state))
    if any(m.get("dtype") == "float32" for m in measurements):
        ax.axhline(FLOAT32_MIN_NORMAL_LOG10, color="0.4", lw=0.8, ls=":")
    ax.set_xlabel("distance d back from the last step")
    ax.set_ylabel(r"$\log_{10} \|\partial L / \partial s_{T-d}\|$ (geometric mean over batch)")
    ax.set_title(title or "Gradient norm across timesteps")
    ax.legend(fontsize=7.5, loc="best", framealpha=0.85)
    fig.tight_layout()
    return fig
