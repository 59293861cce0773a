"""Learning on the derived code: tasks and data, NumPy and Torch models, optimizers, one run,
experiments and sweeps, the agreement check against torch.nn, and the ``train`` command."""
