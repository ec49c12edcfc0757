"""Upstream import path of ``MemoryChannel``."""

from __future__ import annotations

from graflow.channels.memory import MemoryChannel

__all__ = ["MemoryChannel"]
