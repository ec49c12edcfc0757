"""graflow.mp: the multiprocessing engine."""
