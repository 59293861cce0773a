"""Gradient-norm decay: the per-step rate measured through the emitted backward (measurement),
the theory set beside it (bound), its plots and the ``decay`` command."""
