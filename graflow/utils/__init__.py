"""Helpers kept under their upstream import paths; ``graflow.utils.graph`` draws graphs."""
