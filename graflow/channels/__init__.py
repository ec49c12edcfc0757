"""Key-value channels that tasks of one run share; import from the submodules."""

from __future__ import annotations

__all__: list[str] = []
