"""The runtime of emitted modules: real, linted Python whose text after a marker line is inlined
into every emitted module of a target (only the helpers a module calls are kept)."""
