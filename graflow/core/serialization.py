"""Pickling of workflow objects: cloudpickle, so closures, lambdas and ``__main__`` code work."""

from __future__ import annotations

from typing import IO, Any

import cloudpickle

__all__ = ["dump", "dumps", "load", "loads"]


def dumps(obj: Any) -> bytes:
    """Pickle ``obj`` (functions by value where they cannot be imported)."""
    return cloudpickle.dumps(obj, protocol=5)  # type: ignore[no-any-return]


def loads(data: bytes) -> Any:
    """Unpickle bytes made by ``dumps`` (only ever from a trusted source)."""
    return cloudpickle.loads(data)


def dump(obj: Any, file: IO[bytes]) -> None:
    """Pickle ``obj`` into an open binary file."""
    cloudpickle.dump(obj, file, protocol=5)


def load(file: IO[bytes]) -> Any:
    """Unpickle from an open binary file (only ever from a trusted source)."""
    return cloudpickle.load(file)
