"""Task queues: where ready tasks wait for a worker."""

__all__: list[str] = []
