"""Worker-side runtime shared by every backend: run state of a run, and running one item."""

__all__: list[str] = []
