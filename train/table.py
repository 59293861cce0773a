"""The text tables of `derive-cells train`: one row per run (and for a sweep, the test metric
per cell and sweep point), or one row per cell of a --check."""

from __future__ import annotations


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _table(rows: list[tuple]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def runs_table(result: dict) -> str:
    """One row per run, then (for a sweep) the test metric per cell and task parameter."""
    runs, key = result["runs"], result.get("sweep")
    metric = runs[0]["metric"]
    name = "acc" if metric == "accuracy" else "MSE"
    head = ["cell"] + ([key] if key else []) + [
        "train loss", f"train {name}", "test loss", f"test {name}",
        f"epoch {'>=' if metric == 'accuracy' else '<='} {runs[0]['target']:g}", "s/epoch",
        "decay/step", "half-life"]
    rows = [tuple(head)]
    for r in runs:
        e, d = r["epochs"][-1], r["decay"] or {}
        rows.append(tuple([r["cell"]] + ([str(r["info"][key])] if key else []) + [
            *(format(e[k], ".4f" if metric == "accuracy" else ".3g") for k in
              ("train_loss", "train_metric", "test_loss", "test_metric")), _fmt(r["reached"], "d"),
            _fmt(r["seconds_per_epoch"], ".3f"), _fmt(d.get("rate_per_step"), ".4f"),
            _fmt(d.get("half_life"), ".3g")]))
    lines = [result["description"], ""] + _table(rows)
    if key and len({r["info"][key] for r in runs}) > 1:
        values = sorted({r["info"][key] for r in runs})
        cells = list(dict.fromkeys(r["cell"] for r in runs))
        grid = [tuple(["cell"] + [f"{key}={v}" for v in values])]
        for c in cells:
            by = {r["info"][key]: r["epochs"][-1]["test_metric"] for r in runs if r["cell"] == c}
            grid.append(tuple([c] + [_fmt(by.get(v), ".3f" if metric == "accuracy" else ".2g")
                                     for v in values]))
        lines += ["", f"test {metric} after {result['config']['epochs']} epochs "
                      f"(chance {runs[0]['chance']:.3f}):", *_table(grid)]
    cfg = result["config"]
    lines += ["", f"budget: {cfg['epochs']} epochs x {result['train_size']} training rows, batch "
                  f"{cfg['batch_size']}, {cfg['optimizer']} lr {cfg['lr']:g}, clip "
                  f"{_fmt(cfg['clip'], 'g')}, H={cfg['hidden']}"
                  f"{', embedding ' + str(cfg['embed']) if result.get('tokens', True) else ''}, "
                  f"{cfg['dtype']}, backend {cfg['backend']}, seed {cfg['seed']}",
              "decay/step: the gradient's factor per step back through time at the initial "
              "weights (derive-cells decay, the read-out's state); half-life in steps."]
    if result.get("interrupted"):
        stop = result["interrupted"]
        lines.append(f"interrupted (Ctrl-C): {stop['finished']} of {stop['planned']} runs "
                     "finished; the others are not shown.")
    return "\n".join(lines) + "\n"


def check_table(results: list[dict]) -> str:
    rows = [("cell", "reference", "steps", "max loss rel. error", "max param rel. error",
             "worst param", "result")]
    for a in results:
        rows.append((a["cell"], a["reference"], str(a["steps"]), f"{a['max_loss_error']:.2e}",
                     f"{a['max_param_error']:.2e}", a["worst_param"],
                     "ok" if a["passed"] else "FAIL"))
    tol = results[0]["tolerance"] if results else 0
    return "\n".join(_table(rows) + [
        "", f"float64 SGD from the same weights on the same batches; every step's loss and the "
            f"final parameters must agree to {tol:g} (relative)."]) + "\n"
