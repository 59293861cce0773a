"""Code generation: a derivation becomes an emitted module.

plan (what each step computes, grouped by operand), step (the per-step forward and backward
sections), printers (SymPy code printers in the author's term order), layout (lines broken as
by hand), targets (what NumPy and Torch modules carry), torch_layer (the nn.Module text), header
(the header that names a module's cell) and text (the derivation as plain text).
``emit(derivation, target)`` is the entry point.
"""

from derive_cells.emit.module import emit

__all__ = ["emit"]
