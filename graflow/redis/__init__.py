"""Scale-out over Redis: task queue, channel, barrier coordinator, key names and blob signing."""

from __future__ import annotations

__all__: list[str] = []
