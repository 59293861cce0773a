"""The derivation as plain text: forward nodes, adjoint lines and Jacobian blocks of one step."""

from __future__ import annotations

from derive_cells.derivation import Derivation
from derive_cells.emit.printers import CellCodePrinter


def derivation_text(deriv: Derivation) -> str:
    """What `derive-cells CELL` prints: the normalized step, its adjoints and its Jacobian."""
    cell = deriv.cell
    printer = CellCodePrinter({g.name: g.matrix for g in deriv.groups})
    p = printer.doprint
    out = [f"# {cell.name}: {cell.title}", "", "## Equations of one step"]
    out += [f"({k}) {t} = {text}" for k, (t, _, text) in enumerate(cell.equations, start=1)]
    out += ["", "## Forward, normalized (one node per function and matrix product)"]
    for node in deriv.nodes:
        if node.kind == "matvec":
            rhs = f"{node.expr.args[0]} @ {node.expr.args[1]}"
        else:
            rhs = p(node.expr)
        out.append(f"({node.equation}) {node.name} = {rhs}")
    out += ["", "## Matrix products, grouped by operand"]
    for g in deriv.groups:
        members = ", ".join(m for _, m in g.members)
        when = "all steps at once, before the loop" if g.hoisted else "once per step"
        out.append(f"{g.name} = {g.operand} @ {g.matrix}.T  with {g.matrix} = [{members}]"
                   f"  ({when})")
    out += ["", "## Backward (adjoints d_* of one step, in the order they are computed)"]
    for s in cell.state:
        extra = " plus d_outputs[t]" if s == cell.output else ""
        out.append(f"d_{s}: adjoint of {s}_t arriving from step t+1{extra}")
    for a in deriv.adjoints:
        rule = f"    [{'; '.join(a.rules)}]" if a.rules else ""
        out.append(f"({a.equation or '-'}) {a.name} = {p(a.expr)}{rule}")
    for g in deriv.groups:
        parts = ", ".join(p(e) for e in deriv.group_adjoints[g.name])
        out.append(f"d_{g.name} = [{parts}]   -> d_{g.matrix} += d_{g.name}^T {g.operand}")
    out += ["", "## Vector parameters (summed over batch and time)"]
    out += [f"d_{k} = {p(v)}" for k, v in deriv.param_adjoints.items()]
    out += ["", "## Per-step Jacobian d s_t / d s'_{t-1}  (diag(v) M scales the rows of M)"]
    def block(s: str, sp: str, terms) -> str:
        parts = []
        for t in terms:
            if t.matrix is None:
                parts.append(f"diag({p(t.coef)})")
            else:
                tail = f" d{t.operand}/d{sp}_prev" if t.operand else ""
                parts.append(f"diag({p(t.coef)}) {t.matrix}{tail}")
        return f"d{s}/d{sp}_prev = " + ("\n    + ".join(parts) if parts else "0")

    out += [block(s, sp, terms) for (s, sp), terms in deriv.jacobian.items()]
    if deriv.jacobian_operands or deriv.jacobian_tangents:
        out += ["where (blocks of product operands; _D_<a>_<b>: elementwise da/db within the "
                "step, b a previous state or a matrix product)"]
    out += [block(o, sp, terms) for o, blocks in deriv.jacobian_operands.items()
            for sp, terms in blocks.items()]
    out += [f"{t.name} = {p(t.expr)}" for t in deriv.jacobian_tangents]
    return "\n".join(out) + "\n"
