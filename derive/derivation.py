"""Symbolic reverse mode over a cell's equation list: one time step, element by element.

The equations are normalized into a straight-line program of scalar nodes (one symbol stands for
one element of a vector), then swept backwards: when a node is reached its adjoint is complete, so
it is written once, and its contributions are passed to the nodes it reads. Matrix products are
nodes of their own whose adjoints flow on structurally (``dM += d^T v``, ``dv += d M``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sympy

from derive_cells import naming
from derive_cells.functions import BY_CLASS, CellFunction
from derive_cells.spec import RESERVED_NAMES, Cell, MatVec, prev


@dataclass
class Node:
    """One assignment of the normalized step: ``name = expr``."""

    name: str
    kind: str  # "arith", "func" or "matvec"
    expr: sympy.Expr  # arith: over symbols; func: F(symbol); matvec: MatVec(M, symbol)
    equation: int  # 1-based index of the spec equation it came from
    size: str  # "H" or "I"

    @property
    def reads(self) -> list[sympy.Symbol]:
        if self.kind == "matvec":
            return [self.expr.args[1]]
        return sorted(self.expr.free_symbols, key=sympy.default_sort_key)


@dataclass
class Group:
    """Matrix products that share an operand: computed as one product with stacked matrices."""

    name: str  # the product's name in emitted code, e.g. "h_prev_W"
    operand: str  # e.g. "x", "h_prev" or a node name
    members: list[tuple[str, str]]  # (matvec node name, matrix name), in node order
    matrix: str  # name of the stacked matrix in emitted code, e.g. "W_h_prev"
    hoisted: bool  # operand is the input: one product for all steps, before the loop


@dataclass
class Adjoint:
    """One backward line: ``d_<name> = expr`` (or a group's stacked adjoint)."""

    name: str  # adjoint variable name, "d_..."
    expr: sympy.Expr
    equation: int  # spec equation whose node this adjoint belongs to (0: the step's inputs)
    rules: tuple[str, ...] = ()  # derivative rules used, for the comment beside the line


@dataclass
class JacobianTerm:
    coef: sympy.Expr  # elementwise coefficient (rows of the block); may read Tangent names
    matrix: str | None  # None: a diagonal term; else coef scales the rows of matrix @ J[operand]
    operand: str | None  # operand of the product (None for a diagonal term)


@dataclass
class Tangent:
    """A named elementwise total derivative ``name = d node / d leaf`` within one step.

    The leaf is a previous state or a matrix-product node. Coefficients read by several later
    ones (or long) get a name, assigned once, so that later coefficients stay short.
    """

    name: str  # "_D_<node>_<leaf>": the "_" prefix is reserved, so no spec name can equal it
    node: str
    leaf: str
    expr: sympy.Expr  # over saved values and earlier tangents' names


@dataclass
class Derivation:
    cell: Cell
    nodes: list[Node]
    groups: list[Group]
    adjoints: list[Adjoint]  # the backward step, in order
    group_adjoints: dict[str, list[sympy.Expr]]  # group -> adjoint symbol of each member (or 0)
    param_adjoints: dict[str, sympy.Expr]  # vector parameter -> its per-step adjoint
    param_sources: dict[str, tuple[str, int]]  # parameter -> (group, member) sharing its adjoint
    prev_adjoints: dict[str, str]  # state -> adjoint variable of its previous value
    input_elementwise: bool  # the input is read elementwise too (not only through products)
    jacobian: dict[tuple[str, str], list[JacobianTerm]]  # (s, s') -> terms of ds_t/ds'_{t-1}
    jacobian_operands: dict[str, dict[str, list[JacobianTerm]]] = field(default_factory=dict)
    jacobian_tangents: list[Tangent] = field(default_factory=list)  # in the order to compute

    def node(self, name: str) -> Node:
        return next(n for n in self.nodes if n.name == name)


class Backprop(sympy.Function):
    """``d_G @ W_G``: a product group's stacked adjoint passed back to the group's operand."""

    nargs = 1


def d(name: str) -> sympy.Symbol:
    return sympy.Symbol(f"d_{name}")


class _Names:
    """Made-up names that never collide with the spec's (or each other)."""

    def __init__(self, cell: Cell):
        self.taken = cell.names | set(RESERVED_NAMES)

    def new(self, base: str) -> str:
        if base.startswith(("d_", "_")):  # the prefixes of adjoints and of emitted internals
            base = "v" + base.lstrip("_")
        return naming.unique(base, self.taken)


def normalize(cell: Cell) -> tuple[list[Node], list[Group]]:
    """Split the equations into function, matrix-product and arithmetic nodes."""
    names, nodes = _Names(cell), []
    sizes = {cell.input: "I"}
    groups: dict[str, Group] = {}
    made: dict[sympy.Expr, sympy.Symbol] = {}  # one node per distinct product or operand
    current = {"text": ""}  # the equation being split, as written (made-up names follow it)

    def size_of(expr: sympy.Expr) -> str:
        found = {sizes.get(s.name, "H") for s in expr.free_symbols}
        return "I" if found == {"I"} else "H"

    def add(name, kind, expr, eq) -> sympy.Symbol:
        size = "H" if kind == "matvec" else size_of(expr)
        sizes[name] = size
        nodes.append(Node(name, kind, expr, eq, size))
        return sympy.Symbol(name)

    def lift(expr: sympy.Expr, eq: int, target: str, base: str) -> sympy.Expr:
        """Replace every function call and matrix product inside expr by a node's symbol."""
        if expr.is_Atom:
            return expr
        if isinstance(expr, MatVec):
            matrix, operand = expr.args
            role = f"{target}_operand"
            lifted = lift(operand, eq, target, role)
            operand = as_symbol(lifted, eq, naming.describe(lifted, current["text"]) or role)
            key = MatVec(matrix, operand)
            if key in made:  # the same matrix times the same operand: computed once
                return made[key]
            node = names.new(naming.product(matrix.name, operand.name))
            group = groups.get(operand.name)
            if group is None:
                group = groups[operand.name] = Group(
                    names.new(naming.group(operand.name)), operand.name, [],
                    names.new(naming.stacked_matrix(operand.name)), operand.name == cell.input)
            group.members.append((node, matrix.name))
            made[key] = add(node, "matvec", key, eq)
            return made[key]
        if isinstance(expr, CellFunction):
            fname = BY_CLASS[type(expr)].name
            arg = lift(expr.args[0], eq, target, base)
            arg = as_symbol(arg, eq, naming.describe(arg, current["text"]) or base)
            return add(names.new(naming.function_value(fname, arg.name)), "func",
                       type(expr)(arg), eq)
        return expr.func(*(lift(a, eq, target, base) for a in expr.args))

    def as_symbol(expr: sympy.Expr, eq: int, base: str) -> sympy.Symbol:
        if expr.is_Symbol:
            return expr
        if expr not in made:
            made[expr] = add(names.new(base), "arith", expr, eq)
        return made[expr]

    for k, (target, expr, text) in enumerate(cell.equations, start=1):
        current["text"] = text
        if isinstance(expr, CellFunction):
            pre = naming.pre_activation(target)
            arg = lift(expr.args[0], k, target, pre)
            add(target, "func", type(expr)(as_symbol(arg, k, pre)), k)
        else:
            add(target, "arith", lift(expr, k, target, f"{target}_arg"), k)
    return nodes, list(groups.values())


def _partials(node: Node) -> dict[sympy.Symbol, tuple[sympy.Expr, str | None]]:
    """Partial derivative of the node by each symbol it reads, written with saved values."""
    y = sympy.Symbol(node.name)
    if node.kind == "func":
        (arg,) = node.expr.args
        rule = BY_CLASS[type(node.expr)].rule
        return {arg: (node.expr.fdiff().subs(node.expr, y), rule)}
    return {s: (sympy.diff(node.expr, s), None) for s in node.reads}


def derive(cell: Cell) -> Derivation:
    """Derive the backward step and the per-step Jacobian of a cell."""
    nodes, groups = normalize(cell)
    contributions: dict[str, list[sympy.Expr]] = {}
    rules: dict[str, list[str]] = {}
    for s in cell.state:
        contributions[s] = [d(s)]
    if cell.output not in cell.state:
        contributions[cell.output] = [d(cell.output)]
    group_of = {m: g for g in groups for m, _ in g.members}
    adjoints: list[Adjoint] = []
    member_adjoint: dict[str, sympy.Symbol] = {}
    member_expr: dict[str, sympy.Expr] = {}

    def complete(name: str, eq: int, alias_ok: bool = False) -> sympy.Expr | None:
        parts = contributions.get(name)
        if not parts:
            return None
        total = sympy.Add(*parts)
        if total != d(name) and not (alias_ok and total.is_Symbol):
            used = tuple(dict.fromkeys(rules.get(name, ())))
            adjoints.append(Adjoint(f"d_{name}", total, eq, used))
        return total

    for node in reversed(nodes):
        total = complete(node.name, node.equation, alias_ok=node.kind == "matvec")
        if node.kind == "matvec":
            group = group_of[node.name]
            if total is not None:
                member_adjoint[node.name] = total if total.is_Symbol else d(node.name)
                member_expr[node.name] = total
            # the group's first member comes last in this sweep: every member's adjoint is
            # known, and the operand (an earlier node) has not been reached yet
            live = any(m in member_adjoint for m, _ in group.members)
            if node.name == group.members[0][0] and live and not group.hoisted:
                contributions.setdefault(group.operand, []).append(
                    Backprop(sympy.Symbol(group.name)))
            continue
        if total is None:
            continue
        for sym, (partial, rule) in _partials(node).items():
            if partial != 0:
                contributions.setdefault(sym.name, []).append(d(node.name) * partial)
                if rule:
                    rules.setdefault(sym.name, []).append(rule)

    param_adjoints = {}
    for p in cell.vectors:
        parts = contributions.get(p)
        param_adjoints[p] = sympy.Add(*parts) if parts else sympy.Integer(0)
    prev_adjoints = {}
    for s in cell.state:
        name = prev(s)
        total = complete(name, 0)
        prev_adjoints[s] = f"d_{name}" if total is not None else ""
    input_elementwise = bool(contributions.get(cell.input))
    if input_elementwise:
        complete(cell.input, 0)

    zero = sympy.Integer(0)
    group_adjoints = {g.name: [member_adjoint.get(m, zero) for m, _ in g.members]
                      for g in groups}
    # a vector parameter whose adjoint equals a product's is summed from that product's stack
    param_sources = {}
    for p, expr in param_adjoints.items():
        for g in groups:
            for k, (m, _) in enumerate(g.members):
                if m in member_expr and member_expr[m] == expr and p not in param_sources:
                    param_sources[p] = (g.name, k)
    jac, jac_ops, tangents = _jacobian(cell, nodes)
    return Derivation(cell, nodes, groups, adjoints, group_adjoints, param_adjoints,
                      param_sources, prev_adjoints, input_elementwise, jac, jac_ops,
                      tangents)


# a coefficient gets a name when several later ones read it and it is longer than this many
# expression nodes, or when it is longer than the second bound (unless only its own state block
# reads it); shorter ones stay inline, so the blocks of small cells read as one product each
# (GRU: z * (1 - z) * (h_prev - n))
SHARED_INLINE_MAX = 16
INLINE_MAX = 30


def _size(expr: sympy.Expr) -> int:
    """Expression nodes in expr (named tangents count as one)."""
    return 1 + sum(_size(a) for a in expr.args)


def _collect(expr: sympy.Add, names: set[str]) -> sympy.Expr:
    """Terms of a sum that share a named tangent as a factor, summed under it:
    ``D_a * p + D_a * q + r`` -> ``D_a * (p + q) + r`` (sympy.collect, without its cost)."""
    groups: dict[sympy.Symbol, list[sympy.Expr]] = {}
    rest = []
    for term in expr.args:
        factors = term.args if term.is_Mul else (term,)
        key = next((f for f in factors if f.is_Symbol and f.name in names), None)
        if key is None:
            rest.append(term)
        else:
            groups.setdefault(key, []).append(sympy.Mul(*(f for f in factors if f != key)))
    if all(len(parts) == 1 for parts in groups.values()):
        return expr
    return sympy.Add(*rest, *(key * sympy.Add(*parts) for key, parts in groups.items()))


def _jacobian(cell: Cell, nodes: list[Node]):
    """Blocks of d state_t / d state'_{t-1} as sums of diagonal and matrix terms.

    Forward mode with named tangents: elementwise total derivatives D[n][leaf] are carried
    forward with matrix-product nodes and previous states as leaves, each one the sum over the
    symbols n reads of partial * D[symbol][leaf]. A D read by several later ones (and not
    short), or a long one, becomes a Tangent: assigned once, read by its name, so derivation
    and emitted code stay linear in the number of nodes. Then
    J[n][s'] = diag(D[n][s'_prev]) + sum over products m of diag(D[n][m]) M_m J[operand_m][s'].
    Returns the state blocks, the blocks of product operands they read, and the tangents they
    need, in the order to compute them.
    """
    prevs = {prev(s): s for s in cell.state}
    one = sympy.Integer(1)
    total: dict[str, dict[str, sympy.Expr]] = {p: {p: one} for p in prevs}
    matvec = {n.name: n for n in nodes if n.kind == "matvec"}
    readers: dict[str, int] = dict.fromkeys(cell.state, 1)  # each state's own block reads it
    for node in nodes:
        for s in node.reads:
            readers[s.name] = readers.get(s.name, 0) + 1
    tangents: list[Tangent] = []
    taken: set[str] = set()

    def name_of(node: str, leaf: str) -> str:
        base = f"_D_{node}_{leaf}"
        name, k = base, 2
        while name in taken:
            name, k = f"{base}_{k}", k + 1
        taken.add(name)
        return name

    for node in nodes:
        if node.kind == "matvec":
            if total.get(node.expr.args[1].name):  # the operand moves with the previous state
                total[node.name] = {node.name: one}
            continue
        acc: dict[str, sympy.Expr] = {}
        for sym, (partial, _rule) in _partials(node).items():
            for leaf, coef in total.get(sym.name, {}).items():
                acc[leaf] = acc.get(leaf, 0) + partial * coef
        out = {}
        for leaf, coef in acc.items():
            if coef == 0:
                continue
            if coef.is_Add:
                coef = _collect(coef, taken)
            size, read = _size(coef), readers.get(node.name, 0)
            only_block = node.name in cell.state and read == 1  # printed once, in its block
            if not coef.is_Atom and not only_block and (
                    size > INLINE_MAX or (read > 1 and size > SHARED_INLINE_MAX)):
                tangents.append(Tangent(name_of(node.name, leaf), node.name, leaf, coef))
                coef = sympy.Symbol(tangents[-1].name)
            out[leaf] = coef
        total[node.name] = out

    blocks: dict[str, dict[str, list[JacobianTerm]]] = {}

    def block(name: str) -> dict[str, list[JacobianTerm]]:
        if name in blocks:
            return blocks[name]
        out: dict[str, list[JacobianTerm]] = {}
        for leaf, coef in total.get(name, {}).items():
            if leaf in prevs:
                out.setdefault(prevs[leaf], []).append(JacobianTerm(coef, None, None))
                continue
            matrix, operand = matvec[leaf].expr.args
            if operand.name in prevs:
                out.setdefault(prevs[operand.name], []).append(
                    JacobianTerm(coef, matrix.name, None))
            else:
                for s in block(operand.name):
                    out.setdefault(s, []).append(JacobianTerm(coef, matrix.name, operand.name))
        blocks[name] = out
        return out

    jac = {(s, sp): block(s).get(sp, []) for s in cell.state for sp in cell.state}
    inner = {n.expr.args[1].name for n in matvec.values()} - set(prevs) - {cell.input}
    operands = {n: blocks[n] for n in blocks if n in inner}
    # only the tangents the blocks read, directly or through other tangents
    read = {s.name for b in [jac, *operands.values()] for ts in b.values() for t in ts
            for s in t.coef.free_symbols}
    used = []
    for t in reversed(tangents):
        if t.name in read:
            used.append(t)
            read |= {s.name for s in t.expr.free_symbols}
    return jac, operands, used[::-1]
