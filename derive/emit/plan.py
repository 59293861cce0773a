"""The structure of an emitted module, decided before any text is printed.

From a Derivation it settles: the parameter layout (PARAMS), which forward values the backward
step keeps, which per-step adjoints are stacked for the parameter gradients, and two rewrites
that cut the work of every step without changing the math:

- bias folding: a learned vector ``b`` that only ever appears added to a matrix product ``M v``
  is added to that product once (for the input's products: once for all steps, before the loop),
  i.e. ``M v`` is replaced by ``(M v + b) - b`` and ``b`` cancels out of every expression;
- gate fusion: when every pre-activation is exactly (input product + recurrent product), the
  recurrent product is accumulated onto the input products in one call (``addmm``), and runs of
  gates with the same function are activated as contiguous column blocks.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy

from derive_cells import naming
from derive_cells.derivation import Derivation, Group, JacobianTerm
from derive_cells.functions import BY_CLASS
from derive_cells.spec import RESERVED_NAMES, prev


@dataclass
class Fusion:
    """The step's pre-activations as one (B, k*H) block; see the module docstring."""

    x_group: Group  # products with the input (hoisted)
    h_group: Group  # products with a previous state, one per step
    pre: str  # name of the pre-activation block, e.g. "z_ifgo"
    pre_nodes: list[str]  # the pre-activation node of each slot: z_i, z_f, ...
    block: str | None  # name of the activation block, e.g. "ifgo" (None: not fused)
    act_nodes: list[str]  # the activation of each slot: i, f, g, o
    runs: list[tuple[str, int, int]]  # (function, first slot, end slot) of each same-function run


@dataclass
class Plan:
    deriv: Derivation
    params: dict[str, tuple[str, ...]]  # PARAMS name -> the per-equation blocks it stacks
    subs: dict[sympy.Symbol, sympy.Expr]  # product symbol -> (product + folded biases) - biases
    folded: dict[str, list[str]]  # product node -> biases added to it
    fusion: Fusion | None
    values: list[str]  # forward values the backward step and step_jacobian read, in order
    stack_of: dict[str, str]  # group -> the group whose stacked adjoint it shares
    own: list[str]  # vector parameters whose per-step adjoint gets a stack of its own
    step_params: list[str]  # parameters (and stacked matrices) the step bodies read
    bias_names: dict[str, str]  # group -> name of its stacked folded biases (groups with some)

    def rewrite(self, expr: sympy.Expr) -> sympy.Expr:
        """An expression of the derivation, with folded biases cancelled."""
        return sympy.sympify(expr).xreplace(self.subs) if self.subs else expr

    def shape(self, name: str) -> tuple[str, ...]:
        """A PARAMS entry's shape as emitted modules write it: ('4*H', 'I'), ('H', 'H'), ('H',)."""
        members = self.params[name]
        rows = "H" if len(members) == 1 else f"{len(members)}*H"
        kind = self.deriv.cell.matrices.get(members[0], "vector")
        return {"input": (rows, "I"), "hidden": (rows, "H"), "vector": (rows,)}[kind]

    @property
    def stacks(self) -> list[str]:
        return list(dict.fromkeys(self.stack_of.values()))

    def group_bias(self, group: Group) -> list[list[str]]:
        """Biases folded into each member of a group."""
        return [self.folded.get(m, []) for m, _ in group.members]


def _param_layout(deriv: Derivation) -> dict[str, tuple[str, ...]]:
    cell = deriv.cell
    packed = {m for members in cell.pack.values() for m in members}
    layout = dict(cell.pack)
    layout.update({p: (p,) for p in cell.params if p not in packed})
    return layout


def _fold_biases(deriv: Derivation) -> tuple[dict, dict[str, list[str]]]:
    """Fold each bias into one product it is always added to; input products first."""
    nodes = [n for n in deriv.nodes if n.kind != "matvec"]
    operands = {g.operand for g in deriv.groups}  # a product read by another product keeps
    members = [m for g in sorted(deriv.groups, key=lambda g: not g.hoisted) for m, _ in g.members
               if m not in operands]  # its value: nothing is folded into it
    subs: dict[sympy.Symbol, sympy.Expr] = {}
    folded: dict[str, list[str]] = {}
    for b in deriv.cell.vectors:
        bs = sympy.Symbol(b)
        for m in members:
            ms = sympy.Symbol(m)
            trial = {**subs, ms: subs.get(ms, ms) - bs}
            touched = [n.expr for n in nodes if n.expr.has(bs) or n.expr.has(ms)]
            if touched and all(not e.xreplace(trial).has(bs) for e in touched):
                subs, folded[m] = trial, folded.get(m, []) + [b]
                break
    return subs, folded


def _fuse(deriv: Derivation, rewrite, used_elsewhere, names) -> Fusion | None:
    """The pre-activation block, when every slot is (input product + recurrent product)."""
    hoisted = [g for g in deriv.groups if g.hoisted]
    recurrent = [g for g in deriv.groups if not g.hoisted and g.operand in
                 {prev(s) for s in deriv.cell.state}]
    if len(hoisted) != 1:
        return None
    x_group = hoisted[0]
    for h_group in recurrent:
        k = len(x_group.members)
        if len(h_group.members) != k:
            continue
        pre = []
        for (mx, _), (mh, _) in zip(x_group.members, h_group.members, strict=True):
            want = {sympy.Symbol(mx), sympy.Symbol(mh)}
            node = next((n for n in deriv.nodes if n.kind == "arith"
                         and rewrite(n.expr).is_Add and set(rewrite(n.expr).args) == want), None)
            readers = [n for n in deriv.nodes if n.kind != "matvec"
                       and ({mx, mh} & {s.name for s in rewrite(n.expr).free_symbols})]
            if node is None or readers != [node] or {mx, mh} & used_elsewhere:
                break
            pre.append(node.name)
        else:
            acts = []
            for z in pre:
                readers = [n for n in deriv.nodes if sympy.Symbol(z) in n.expr.free_symbols]
                if len(readers) == 1 and readers[0].kind == "func" and z not in used_elsewhere:
                    acts.append(readers[0])
            block = None
            runs: list[tuple[str, int, int]] = []
            if len(acts) == k and k > 1:
                block = naming.unique(_label([a.name for a in acts]), names)
                for j, a in enumerate(acts):
                    fname = BY_CLASS[type(a.expr)].name
                    if runs and runs[-1][0] == fname:
                        runs[-1] = (fname, runs[-1][1], j + 1)
                    else:
                        runs.append((fname, j, j + 1))
            gates = [deriv.cell.equations[deriv.node(p).equation - 1][0] for p in pre]
            fused = naming.unique(naming.pre_activation(_label(gates)), names)
            return Fusion(x_group, h_group, fused if k > 1 else pre[0],
                          pre, block, [a.name for a in acts] if block else [], runs)
    return None


def _label(parts: list[str]) -> str:
    """i, f, g, o -> ifgo; c_tilde, Gamma_u -> c_tilde_Gamma_u."""
    return "".join(parts) if all(len(p) == 1 for p in parts) else "_".join(parts)


def make_plan(deriv: Derivation) -> Plan:
    cell = deriv.cell
    subs, folded = _fold_biases(deriv)

    def rewrite(e):
        return sympy.sympify(e).xreplace(subs) if subs else e

    names = {*RESERVED_NAMES, *cell.names, *(n.name for n in deriv.nodes),
             *(g.name for g in deriv.groups), *(g.matrix for g in deriv.groups)}
    jac_terms: list[JacobianTerm] = [t for ts in deriv.jacobian.values() for t in ts]
    jac_terms += [t for b in deriv.jacobian_operands.values() for ts in b.values() for t in ts]
    backward_exprs = [rewrite(a.expr) for a in deriv.adjoints]
    backward_exprs += [rewrite(e) for e in deriv.param_adjoints.values()]
    jac_exprs = [rewrite(t.coef) for t in jac_terms]
    jac_exprs += [rewrite(t.expr) for t in deriv.jacobian_tangents]
    read_back = set().union(*(e.free_symbols for e in backward_exprs + jac_exprs))
    read_back = {s.name for s in read_back}
    read_back |= {g.operand for g in deriv.groups}
    fusion = _fuse(deriv, rewrite, read_back, names)

    values = [n.name for n in deriv.nodes if n.name in read_back]
    if cell.output not in cell.state and cell.output not in values:
        values.append(cell.output)
    if fusion and fusion.block:
        fused = set(fusion.act_nodes)
        first = next(i for i, v in enumerate(values) if v in fused) if fused & set(values) \
            else None
        values = [v for v in values if v not in fused]
        if first is not None:
            values.insert(first, fusion.block)

    stack_of: dict[str, str] = {}
    for g in deriv.groups:
        key = tuple(deriv.group_adjoints[g.name])
        stack_of[g.name] = next(h.name for h in deriv.groups
                                if tuple(deriv.group_adjoints[h.name]) == key)
    own = [p for p in cell.vectors if p not in deriv.param_sources
           and deriv.param_adjoints[p] != 0]

    used = set(read_back)
    for n in deriv.nodes:
        if n.kind != "matvec":
            used |= {s.name for s in rewrite(n.expr).free_symbols}
    bias_names = {g.name: naming.unique(naming.folded_bias(g.operand), names) for g in deriv.groups
                  if any(folded.get(m) for m, _ in g.members)}
    step_params = [g.matrix for g in deriv.groups if not g.hoisted]
    step_params += [bias_names[g.name] for g in deriv.groups
                    if not g.hoisted and g.name in bias_names]
    step_params += [p for p in cell.vectors if p in used]
    return Plan(deriv, _param_layout(deriv), subs, folded, fusion, values, stack_of, own,
                step_params, bias_names)
