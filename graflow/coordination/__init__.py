"""Coordination of parallel groups (which backend runs a group's branches)."""

__all__: list[str] = []
