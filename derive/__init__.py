"""derive-cells: symbolic BPTT for recurrent cells, emitted as verified NumPy and Torch code.

    import derive_cells as dc
    cell = dc.load("lstm")            # a built-in by name, or a spec file by path
    cell.derivation                   # forward, adjoint, gradient and Jacobian equations
    cell.module("torch")              # the emitted module, imported
    cell.verify(), cell.decay(steps=100), cell.train("sentiment"), cell.report("lstm.html")

The API is loaded on first use, so that the command line starts fast.
"""

from derive_cells.version import __version__ as __version__

__all__ = ["Cell", "Derivation", "DecayResult", "TrainResult", "VerifyResult", "list_cells",
           "load", "report"]


def __getattr__(name: str):
    if name in __all__:
        from derive_cells import api

        return getattr(api, name)
    raise AttributeError(f"module 'derive_cells' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *__all__])
