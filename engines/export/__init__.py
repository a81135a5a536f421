"""Export of a model's networks to optimized runtimes, with a parity and speed report."""
