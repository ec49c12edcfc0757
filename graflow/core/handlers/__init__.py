"""Built-in task handlers and parallel-group policies."""

__all__: list[str] = []
