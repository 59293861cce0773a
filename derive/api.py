"""The Python API: a cell as an object, from its equations to checked code, decay, training and
a report, with rich displays for Jupyter.

>>> import derive_cells as dc
>>> cell = dc.load("lstm")
>>> cell.state
('h', 'c')
>>> "def backward(" in cell.emit("numpy")
True

Every step runs what the command line runs (the CLI is a layer over the same functions), and
results carry the fields of the command's JSON (``as_dict()``).
"""

from __future__ import annotations

import os
from functools import cached_property
from html import escape
from pathlib import Path

from derive_cells.spec import Cell as Spec
from derive_cells.spec import builtin_cells, load_cell

TARGETS = ("numpy", "torch")


def list_cells() -> dict[str, str]:
    """The built-in cells: name -> title."""
    return {name: load_cell(name).title for name in builtin_cells()}


def load(name_or_path: str | os.PathLike) -> Cell:
    """A built-in cell by name ("lstm") or a spec file by path; a bad spec raises SpecError
    (a ValueError) naming the file, the equation and the reason."""
    return Cell(load_cell(os.fspath(name_or_path)))


def report(cells, path: str | os.PathLike, fmt: str | None = None,
           train: TrainResult | None = None) -> Path:
    """Write one report of several cells (Cell objects, names or spec paths) to path: HTML,
    .tex (figures beside it) or PDF; train: a TrainResult shown as its Learning section."""
    from derive_cells.reports.write import write_report

    specs = [c.spec if isinstance(c, Cell) else load_cell(os.fspath(c)) for c in cells]
    return write_report(specs, path, fmt, train.as_dict() if train is not None else None)


def cache_dir() -> Path:
    """Where emitted modules are written before they are imported: $DERIVE_CELLS_CACHE, else
    $XDG_CACHE_HOME/derive-cells/modules (~/.cache/derive-cells/modules)."""
    from derive_cells.cache import cache_dir as folder

    return folder()


def _svg(fig) -> str:
    from derive_cells.plots import render
    from derive_cells.reports.html import inline_svg

    return inline_svg(render(fig, "svg"), f"dc{id(fig):x}-")


def _table_html(rows: list[tuple], head: tuple) -> str:
    cells = "".join(f"<th>{escape(str(h))}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{escape(str(v))}</td>" for v in r) + "</tr>"
                   for r in rows)
    return f"<table><tr>{cells}</tr>{body}</table>"


def _math(e) -> str:
    """An equation as a display MathML block (its LaTeX kept as annotation), numbered."""
    from derive_cells.reports.notation import math_block

    return math_block(e.latex, e.mathml, e.number)


class Derivation:
    """The derived equations of a cell, as the reports print them: ``forward``, ``adjoints``
    (the BPTT lines of one step, in order), ``gradients`` (parameters) and ``jacobian`` (the
    per-step Jacobian blocks, then ``jacobian_where``: what they read). Each equation has
    ``number``, ``latex`` and ``mathml``; a Jacobian block's further terms are its ``more``
    rows ("+ term": LaTeX, MathML). ``preactivations``: the z_v names the adjoints use, each
    with the number of v's equation. ``raw`` is the derivation the emitters print."""

    SECTIONS = (("forward", "Forward equations"), ("adjoints", "Backward (BPTT) equations"),
                ("gradients", "Parameter gradients"), ("jacobian", "Per-step Jacobian"),
                ("jacobian_where", "where"))
    BLOCKS = ("jacobian", "jacobian_where")  # sections written one term a row

    def __init__(self, raw, content):
        self.raw, self.name = raw, raw.cell.name
        self.forward, self.adjoints = content.forward, content.backward
        self.gradients, self.jacobian = content.gradients, content.jacobian
        self.jacobian_where = content.jacobian_where
        self.preactivations = content.preactivations

    def __repr__(self) -> str:
        return (f"<Derivation of {self.name}: {len(self.forward)} forward, "
                f"{len(self.adjoints)} adjoint, {len(self.gradients)} gradient equations>")

    def _sections(self):
        for section, title in self.SECTIONS:
            equations = getattr(self, section)
            if equations:
                yield section, title, equations

    def _preactivations_words(self) -> tuple[str, str]:
        """What the report says of the z_v names: (verb phrase, equation numbers)."""
        many = len(self.preactivations) > 1
        return ("are the pre-activations" if many else "is the pre-activation",
                ", ".join(f"({k})" for _, _, k in self.preactivations))

    @staticmethod
    def _block_latex(e, relation: str = " &= ") -> str:
        """A Jacobian block for an aligned environment, one term a row."""
        left, right = e.latex.split(" = ", 1)
        rows = [f"{left}{relation}{right}", *(rf"&\qquad {m}" for m, _ in e.more)]
        return " \\\\\n".join(rows)

    def _repr_html_(self) -> str:
        from derive_cells.reports.notation import aligned_equations, inline_math

        parts = [f"<h3>Derivation of {escape(self.name)}</h3>"]
        for section, title, equations in self._sections():
            parts.append(f"<h4>{title}</h4>")
            if section == "adjoints" and self.preactivations:
                verb, numbers = self._preactivations_words()
                names = ", ".join(inline_math(latex, mathml)
                                  for latex, mathml, _ in self.preactivations)
                parts.append(f"<p>{names} {verb}: the argument of the function in "
                             f"{numbers}.</p>")
            if section in self.BLOCKS:
                parts.append(aligned_equations(equations))
                continue
            for e in equations:
                note = f"<span style='color:#666'>{escape(e.note)}</span>" if e.note else ""
                parts.append(_math(e).replace("</div>", f"{note}</div>", 1))
        return "\n".join(parts)

    def _repr_latex_(self) -> str:
        lines = []
        for section, title, equations in self._sections():
            lines.append(rf"&\text{{{title}}} \\")
            if section == "adjoints" and self.preactivations:
                verb, numbers = self._preactivations_words()
                names = ", ".join(latex for latex, _, _ in self.preactivations)
                lines.append(rf"&{names} \text{{ {verb}: the argument of the function in "
                             rf"{numbers}}} \\")
            for e in equations:
                if section in self.BLOCKS:
                    lines.append(f"&{self._block_latex(e, ' = ')} \\\\")
                else:
                    number = rf" && ({e.number})" if e.number else ""
                    lines.append(rf"&{e.latex}{number} \\")
        return "$$\\begin{aligned}\n" + "\n".join(lines) + "\n\\end{aligned}$$"

    def _repr_markdown_(self) -> str:
        parts = [f"### Derivation of `{self.name}`"]
        for section, title, equations in self._sections():
            parts.append(f"**{title}**")
            if section == "adjoints" and self.preactivations:
                verb, numbers = self._preactivations_words()
                names = ", ".join(f"${latex}$" for latex, _, _ in self.preactivations)
                parts.append(f"{names} {verb}: the argument of the function in {numbers}.")
            for e in equations:
                if section in self.BLOCKS:
                    parts.append(f"$$\\begin{{aligned}}\n{self._block_latex(e)}\n"
                                 f"\\end{{aligned}}$$")
                else:
                    number = rf" \qquad ({e.number})" if e.number else ""
                    parts.append(f"$$ {e.latex}{number} $$")
        return "\n\n".join(parts)


class Cell:
    """A recurrent cell: its spec (``spec``: name, title, input, state, output, equations,
    parameters), its derivation, emitted modules, verification, decay, training and report."""

    def __init__(self, spec: Spec):
        self.spec = spec
        self.name, self.title = spec.name, spec.title
        self.input, self.state, self.output = spec.input, spec.state, spec.output
        self._modules: dict[str, object] = {}

    def __repr__(self) -> str:
        return f"<Cell {self.name}: {self.title}>"

    @cached_property
    def _raw(self):
        from derive_cells.derivation import derive

        return derive(self.spec)

    @cached_property
    def derivation(self) -> Derivation:
        """The derived equations (forward, adjoints, parameter gradients, Jacobian)."""
        from derive_cells.reports.content import cell_content

        return Derivation(self._raw, cell_content(self._raw, self.emit("numpy")))

    @property
    def equations(self) -> list[tuple[str, str]]:
        """The spec's equations as written: (target, text)."""
        return [(target, text) for target, _, text in self.spec.equations]

    def emit(self, target: str = "numpy") -> str:
        """The standalone module's source for target 'numpy' or 'torch': the bytes
        `derive-cells CELL --emit TARGET` prints, CELL as given to load() (a built-in name or
        the spec file's path), so the header regenerates it and `emit --check` accepts it."""
        import shlex

        from derive_cells.emit import emit

        if target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
        cell = shlex.quote(self.spec.source)
        return emit(self._raw, target, command=f"derive-cells {cell} --emit {target}")

    def module(self, target: str = "numpy"):
        """The emitted module, imported: written once to a file in cache_dir() (named by a
        hash of its source, so inspect, pdb and tracebacks show it) and run from the source
        text checked against that file, never from bytecode (derive_cells.cache); the same
        source gives the same module object in a process. Nothing is written to the working
        directory."""
        if target not in self._modules:
            from derive_cells.cache import load_module

            text = self.emit(target)
            self._modules[target] = load_module(text, f"{_safe(self.name)}_{target}")
        return self._modules[target]

    def verify(self, dtypes=("float64", "float32"), backends=TARGETS) -> VerifyResult:
        """Check the emitted gradients (as `derive-cells verify`; needs torch)."""
        from derive_cells.verify.checks import Checker
        from derive_cells.verify.modules import Runner

        runners = {t: Runner(self.module(t), t) for t in backends}
        results, cache = [], {}
        for dt in dtypes:
            for target, runner in runners.items():
                other = runners.get("torch") if target == "numpy" else None
                results += list(Checker(self.spec, runner, target, dt, other, cache).all())
        return VerifyResult(self.name, results)

    def decay(self, **setup) -> DecayResult:
        """Gradient-norm decay across timesteps (as `derive-cells decay`); setup: the fields of
        derive_cells.verify.decay.measurement.Setup (steps, batch, hidden, forget_bias, dtype,
        ...)."""
        from derive_cells.verify.decay.measurement import Setup, check_budget, measure

        config = Setup(**setup)
        module = self.module("numpy")
        check_budget(module, self._raw, config)
        return DecayResult(measure(module, self._raw, config).as_dict())

    def train(self, task: str = "sentiment", forget_bias=None, decay: bool = True,
              distances=None, steps=None, train_size=None, test_size=None, data_dir=None,
              gate_bias=None, init=None, tmax=None, **config) -> TrainResult:
        """Train the article's model on a task (as `derive-cells train`); config: the fields
        of derive_cells.train.run.Config (backend, optimizer, lr, epochs, hidden, ...).
        Values the command line refuses raise ValueError, as does an experiment over the
        memory or time budget; Ctrl-C raises KeyboardInterrupt whose ``result`` holds the
        finished runs. gate_bias: {gate: value or [values]} (as --gate-bias); init="chrono"
        with tmax=N (as --init chrono --tmax N)."""
        from derive_cells.train import experiment
        from derive_cells.train.run import Config

        settings = Config(**config)
        biases = [forget_bias] if isinstance(forget_bias, (int, float)) else forget_bias
        gates = ({g: [v] if isinstance(v, (int, float)) else v for g, v in gate_bias.items()}
                 if isinstance(gate_bias, dict) else gate_bias)
        return TrainResult(experiment.run_task([self._raw], task, settings, distances, steps,
                                               train_size, test_size, data_dir, biases, decay,
                                               gate_biases=gates, init=init, tmax=tmax))

    def report(self, path: str | os.PathLike, fmt: str | None = None,
               train: TrainResult | None = None) -> Path:
        """Write the HTML, LaTeX or PDF report (format from the extension unless fmt); train:
        a TrainResult shown as its Learning section."""
        return report([self], path, fmt, train)

    def _repr_html_(self) -> str:
        d = self.derivation
        forward = "".join(_math(e) for e in d.forward)
        return (f"<h3>{escape(self.name)}: {escape(self.title)}</h3>"
                f"<p>input {escape(self.input)}, state {escape(', '.join(self.state))}, "
                f"output {escape(self.output)}</p>{forward}"
                f"<p style='color:#666'>cell.derivation shows the derived BPTT equations.</p>")

    def _repr_latex_(self) -> str:
        lines = [rf"{e.latex} \\" for e in self.derivation.forward]
        return "$$\\begin{aligned}\n" + "\n".join(f"&{x}" for x in lines) + "\n\\end{aligned}$$"

    def _repr_markdown_(self) -> str:
        eqs = "\n\n".join(f"$$ {e.latex} $$" for e in self.derivation.forward)
        return f"### `{self.name}`: {self.title}\n\n{eqs}"


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c == "_" else "_" for c in name)


class VerifyResult:
    """The checks of a cell: ``results`` (dicts with the fields of `verify --format json`),
    ``passed``, ``failed``."""

    def __init__(self, name: str, results: list):
        self.name, self._results = name, results
        self.results = [r.as_dict() for r in results]
        self.failed = [r for r in self.results if not r["passed"]]
        self.passed = not self.failed

    def as_dict(self) -> list[dict]:
        return self.results

    def __repr__(self) -> str:
        return (f"<VerifyResult {self.name}: {len(self.results) - len(self.failed)}/"
                f"{len(self.results)} arrays within tolerance>")

    def _repr_html_(self) -> str:
        from derive_cells.verify.report import grouped

        rows = []
        for (_, backend, dtype, check), arrays in grouped(self._results):
            worst = max(arrays, key=lambda r: r.max_rel_error / r.tolerance)
            rows.append((backend, dtype, check, worst.array, f"{worst.max_rel_error:.1e}",
                         "ok" if all(r.passed for r in arrays) else "FAIL"))
        return (f"<p>{escape(repr(self))}</p>" +
                _table_html(rows, ("backend", "dtype", "check", "worst array", "error", "")))

    def _repr_markdown_(self) -> str:
        return f"`{self!r}`"


class DecayResult:
    """A decay measurement: the fields of `decay --format json` as attributes and
    ``as_dict()``; ``rate_per_step`` per state."""

    def __init__(self, data: dict):
        self._data = data
        self.__dict__.update(data)

    def as_dict(self) -> dict:
        return dict(self._data)

    def __repr__(self) -> str:
        rates = ", ".join(f"{s}: {r:.4g}" if r is not None else f"{s}: -"
                          for s, r in self._data["rate_per_step"].items())
        return f"<DecayResult {self._data['cell']} T={self._data['steps']}: {rates} per step>"

    def _repr_html_(self) -> str:
        from derive_cells.verify.decay.plots import decay_figure

        d = self._data
        rows = [(s, d["rate_per_step"][s], d["predicted_rate_per_step"][s],
                 d["prediction"][s] or "-", d["half_life"][s]) for s in d["rate_per_step"]]
        return (_svg(decay_figure([d], f"{d['cell']}: gradient norm across timesteps")) +
                _table_html(rows, ("state", "rate/step", "predicted", "prediction",
                                   "half-life")))


class TrainResult:
    """A training experiment: the fields of `train --format json` (``runs``, ``config``,
    ``description``, ...) as attributes and ``as_dict()``."""

    def __init__(self, data: dict):
        self._data = data
        self.__dict__.update(data)

    def as_dict(self) -> dict:
        return dict(self._data)

    def __repr__(self) -> str:
        finals = ", ".join(f"{r['cell']}: {r['metric']} {r['epochs'][-1]['test_metric']:.4g}"
                           for r in self._data["runs"])
        return f"<TrainResult {self._data['task']}: {finals}>"

    def _repr_html_(self) -> str:
        from derive_cells.train.plots import learning_figures

        figures = "".join(_svg(f) for f in learning_figures(self._data).values())
        rows = [(r["cell"], r["epochs"][-1]["train_metric"], r["epochs"][-1]["test_metric"],
                 r["reached"], r["seconds_per_epoch"]) for r in self._data["runs"]]
        return (f"<p>{escape(self._data['description'])}</p>" +
                _table_html(rows, ("cell", "train", "test", "first epoch at target",
                                   "s/epoch")) + figures)
