"""``ChannelFactory``: builds a run's channel from a backend name."""

from __future__ import annotations

import importlib
from typing import Any

from graflow.channels.base import Channel
from graflow.channels.memory import MemoryChannel
from graflow.exceptions import ConfigError

__all__ = ["ChannelFactory"]


class ChannelFactory:
    """Channel classes by backend name: ``"memory"`` built in, others registered by their module."""

    _backends: dict[str, type[Channel]] = {"memory": MemoryChannel}
    # Backends living in optional layers register themselves when their module is imported;
    # naming the module here lets a run ask for them by name without importing them first.
    _modules: dict[str, str] = {"redis": "graflow.redis.channel"}

    @classmethod
    def create_channel(cls, backend: str, name: str, **kwargs: Any) -> Channel:
        """A new channel of ``backend`` named ``name``; ``kwargs`` go to its constructor."""
        channel_class = cls._backends.get(backend)
        if channel_class is None and backend in cls._modules:
            importlib.import_module(cls._modules[backend])
            channel_class = cls._backends.get(backend)
        if channel_class is None:
            raise ConfigError(
                f"Unsupported backend '{backend}'. "
                f"Available backends: {cls.get_available_backends()}"
            )
        return channel_class(name, **kwargs)

    @classmethod
    def register_backend(cls, name: str, channel_class: type[Channel]) -> None:
        """Make ``channel_class`` the backend called ``name``, replacing any earlier one."""
        if not (isinstance(channel_class, type) and issubclass(channel_class, Channel)):
            raise TypeError(f"Backend class must be a subclass of Channel, got {channel_class!r}")
        cls._backends[name] = channel_class

    @classmethod
    def unregister_backend(cls, name: str) -> None:
        """Forget the backend called ``name``; nothing happens if there is none."""
        cls._backends.pop(name, None)

    @classmethod
    def get_available_backends(cls) -> list[str]:
        """Every backend name, in registration order."""
        return list(cls._backends)

    @classmethod
    def is_backend_available(cls, name: str) -> bool:
        """True if a backend is registered as ``name``."""
        return name in cls._backends
