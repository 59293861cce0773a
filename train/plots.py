"""Learning plots: learning curves, and for a sweep the test metric against the swept value
(distance, sequence length) with chance marked, with one small panel per value."""

from __future__ import annotations

import math

from derive_cells.plots import pyplot, slug


def learning_figure(runs: list[dict], title: str | None = None):
    """Learning curves: the loss (train solid, test dashed) and the test metric against the
    epoch, one colour per run; chance (or the constant baseline) dotted."""
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.5, 4.2))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, run in enumerate(runs):
        color = colors[k % len(colors)]
        epochs = [e["epoch"] for e in run["epochs"]]
        name = run["cell"]
        for ax, key, style, what in ((left, "train_loss", "-", "train-loss"),
                                     (left, "test_loss", "--", "test-loss"),
                                     (right, "test_metric", "-", "test-metric")):
            (line,) = ax.plot(epochs, [e[key] for e in run["epochs"]], color=color,
                              lw=1.6 if style == "-" else 1.2, ls=style,
                              marker="o" if ax is right else None, ms=3,
                              label={"train-loss": f"{name} train", "test-loss": f"{name} test",
                                     "test-metric": name}[what])
            line.set_gid(slug(what, name))
    metric = runs[0]["metric"] if runs else "accuracy"
    if runs:
        right.axhline(runs[0]["chance"], color="0.4", lw=0.9, ls=":",
                      label="chance" if metric == "accuracy" else "predict 1 (baseline)")
        if metric == "mse":
            left.set_yscale("log")
            right.set_yscale("log")
    from matplotlib.ticker import MaxNLocator

    for ax in (left, right):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    left.set_xlabel("epoch")
    left.set_ylabel("loss (BCE)" if metric == "accuracy" else "loss (MSE)")
    right.set_xlabel("epoch")
    right.set_ylabel("test accuracy" if metric == "accuracy" else "test MSE")
    left.legend(fontsize=7, framealpha=0.85)
    right.legend(fontsize=7, framealpha=0.85)
    fig.suptitle(title or "Learning curves")
    fig.tight_layout()
    return fig


def sweep_figure(runs: list[dict], key: str, title: str | None = None):
    """The final test metric against the task parameter `key` (distance, steps): one line
    per cell; chance (or the constant baseline) dotted."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    names = list(dict.fromkeys(r["cell"] for r in runs))
    for k, name in enumerate(names):
        mine = sorted((r for r in runs if r["cell"] == name), key=lambda r: r["info"][key])
        (line,) = ax.plot([r["info"][key] for r in mine],
                          [r["epochs"][-1]["test_metric"] for r in mine],
                          color=colors[k % len(colors)], lw=1.6, marker="o", ms=4, label=name)
        line.set_gid(slug("sweep", name))
    metric = runs[0]["metric"] if runs else "accuracy"
    if runs:
        ax.axhline(runs[0]["chance"], color="0.4", lw=0.9, ls=":",
                   label="chance" if metric == "accuracy" else "predict 1 (baseline)")
    if len({r["info"][key] for r in runs}) > 2 and min(r["info"][key] for r in runs) > 0:
        ax.set_xscale("log")
        ticks = sorted({r["info"][key] for r in runs})
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
    ax.set_xlabel({"distance": "distance d from the decisive word to the end",
                   "steps": "sequence length T"}.get(key, key))
    ax.set_ylabel("final test accuracy" if metric == "accuracy" else "final test MSE")
    if metric == "accuracy":
        ax.set_ylim(0.4, 1.02)
    ax.set_title(title or f"Test {metric} against {key}")
    ax.legend(fontsize=8, framealpha=0.85)
    fig.tight_layout()
    return fig


MAX_PANELS = 12  # a sweep over more values shows the sweep plot alone


def sweep_curves_figure(runs: list[dict], key: str, title: str | None = None):
    """The test metric against the epoch in one small panel per value of the task parameter
    `key`, one colour per cell (the same in every panel), one legend for the whole figure."""
    plt = pyplot()
    values = sorted({r["info"][key] for r in runs})
    names = list(dict.fromkeys(r["cell"] for r in runs))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    cols = min(3, len(values))
    rows = math.ceil(len(values) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(9.5, 0.8 + 2.3 * rows), sharey=True,
                             squeeze=False, layout="constrained")
    metric = runs[0]["metric"]
    from matplotlib.ticker import MaxNLocator

    for ax, value in zip(axes.flat, values, strict=False):
        for k, name in enumerate(names):
            for run in (r for r in runs if r["cell"] == name and r["info"][key] == value):
                (line,) = ax.plot([e["epoch"] for e in run["epochs"]],
                                  [e["test_metric"] for e in run["epochs"]],
                                  color=colors[k % len(colors)], lw=1.4, label=name)
                line.set_gid(slug("test-metric", name, f"{key}-{value}"))
        ax.axhline(runs[0]["chance"], color="0.4", lw=0.9, ls=":",
                   label="chance" if metric == "accuracy" else "predict 1 (baseline)")
        if metric == "mse":
            ax.set_yscale("log")
        ax.set_title(f"{key} = {value}", fontsize=9)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=8)
    for ax in list(axes.flat)[len(values):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("epoch", fontsize=9)
    for ax in axes[:, 0]:
        ax.set_ylabel("test accuracy" if metric == "accuracy" else "test MSE", fontsize=9)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 6),
               fontsize=8, framealpha=0.85)
    fig.suptitle(title or f"Test {metric} per epoch, one panel per {key}")
    return fig


def learning_figures(result: dict) -> dict[str, object]:
    """The figures of a training result: learning curves, or for a sweep one small panel of
    test curves per value (when there are at most MAX_PANELS) and the sweep plot."""
    runs, key, task = result["runs"], result.get("sweep"), result["task"]
    if not key:
        return {"curves": learning_figure(runs, f"{task}: learning curves")}
    figures = {}
    if len({r["info"][key] for r in runs}) <= MAX_PANELS:
        figures["curves"] = sweep_curves_figure(
            runs, key, f"{task}: test {runs[0]['metric']} per epoch, one panel per {key}")
    figures["sweep"] = sweep_figure(runs, key, f"{task}: final test {runs[0]['metric']} "
                                               f"after {result['config']['epochs']} epochs")
    return figures
