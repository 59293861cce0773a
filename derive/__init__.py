"""derive-cells: symbolic BPTT for recurrent cells, emitted as verified NumPy and Torch code."""

__version__ = "0.1.0"
