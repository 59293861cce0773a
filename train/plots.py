"""Learning plots: learning curves, and for a sweep the test metric against the swept value
(distance, sequence length) with chance marked, beside the gradient's decay rate per epoch with
the moment each run reached the target (when the runs watched it), and one small panel of test
curves per value."""

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


def has_decay(runs: list[dict]) -> bool:
    """Whether the runs watched the gradient's decay (a decay_rate in every epoch)."""
    return bool(runs) and all(e.get("decay_rate") is not None for r in runs
                              for e in r["epochs"])


def sweep_decay_figure(runs: list[dict], key: str, title: str | None = None):
    """Two panels, one colour per configuration (cell and initialisation): the final test
    metric against the swept value `key` with chance dotted; beside it the gradient's decay
    rate per step (measured on the run's probe batch) against the epoch, one line per run
    (lighter for smaller values of `key`), a filled circle where the run first reached the
    target. Rates are drawn on a logit axis (0.5, 0.9, 0.99, 0.999 evenly apart) when all lie
    strictly between 0 and 1."""
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11.5, 4.6),
                                      gridspec_kw={"width_ratios": [1, 1.15]})
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    names = list(dict.fromkeys(r["cell"] for r in runs))
    values = sorted({r["info"][key] for r in runs})
    metric = runs[0]["metric"]
    rates = [e["decay_rate"] for r in runs for e in r["epochs"]]
    logit = all(0 < v < 1 for v in rates)
    for k, name in enumerate(names):
        color = colors[k % len(colors)]
        mine = sorted((r for r in runs if r["cell"] == name), key=lambda r: r["info"][key])
        (line,) = left.plot([r["info"][key] for r in mine],
                            [r["epochs"][-1]["test_metric"] for r in mine], color=color, lw=1.8,
                            marker="o", ms=4.5, label=name)
        line.set_gid(slug("sweep", name))
        for r in mine:
            value = r["info"][key]
            shade = 0.35 + 0.65 * (values.index(value) + 1) / len(values)
            epochs = [e["epoch"] for e in r["epochs"]]
            rate = [e["decay_rate"] for e in r["epochs"]]
            (line,) = right.plot(epochs, rate, color=color, lw=1.4, alpha=shade,
                                 label=name if value == mine[-1]["info"][key] else None)
            line.set_gid(slug("decay", name, f"{key}-{value}"))
            if r["reached"] is not None:
                (mark,) = right.plot([r["reached"]], [rate[r["reached"]]], "o", color=color,
                                     ms=7, mec="black", mew=0.8, alpha=shade)
                mark.set_gid(slug("reached", name, f"{key}-{value}"))
    left.axhline(runs[0]["chance"], color="0.4", lw=0.9, ls=":",
                 label="chance" if metric == "accuracy" else "predict 1 (baseline)")
    if len(values) > 2 and min(values) > 0:
        left.set_xscale("log")
        left.set_xticks(values, [str(v) for v in values])
        left.minorticks_off()
    left.set_xlabel({"distance": "distance d from the decisive word to the end",
                     "steps": "sequence length T"}.get(key, key))
    left.set_ylabel("final test accuracy" if metric == "accuracy" else "final test MSE")
    if metric == "accuracy":
        left.set_ylim(0.4, 1.02)
    else:
        left.set_yscale("log")
    left.set_title(f"test {metric} against {key}", fontsize=10)
    left.legend(fontsize=7.5, framealpha=0.85)
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    if logit:
        right.set_yscale("logit")
        low, high = min(rates), max(rates)
        ticks = [t for t in (0.1, 0.2, 0.3, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999,
                             0.9999) if low / 1.5 <= t <= 1 - (1 - high) / 1.5]
        right.set_yticks(ticks, [format(t, "g") for t in ticks])
        right.minorticks_off()
    right.xaxis.set_major_locator(MaxNLocator(integer=True))
    right.set_xlabel("epoch (0: initial weights)")
    right.set_ylabel("gradient decay rate per step")
    target = runs[0]["target"]
    right.set_title(f"decay rate while learning (lighter: smaller {key})", fontsize=10)
    handles, labels = right.get_legend_handles_labels()
    handles.append(Line2D([], [], ls="", marker="o", color="0.6", mec="black", ms=7))
    labels.append(f"reached test {'acc' if metric == 'accuracy' else 'MSE'} "
                  f"{'>=' if metric == 'accuracy' else '<='} {target:g}")
    right.legend(handles, labels, fontsize=7.5, framealpha=0.85)
    fig.suptitle(title or f"Test {metric} against {key}, and the gradient's decay while "
                          "learning")
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
    title = f"{task}: final test {runs[0]['metric']} after {result['config']['epochs']} epochs"
    figures["sweep"] = (sweep_decay_figure(runs, key, title + ", and the gradient's decay rate")
                        if has_decay(runs) else sweep_figure(runs, key, title))
    return figures
