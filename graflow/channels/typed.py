"""``TypedChannel``: a channel view that only stores and returns messages of one TypedDict."""

from __future__ import annotations

import typing
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Generic, TypeVar

from graflow.channels.base import Channel
from graflow.channels.schemas import BUILTIN_MESSAGE_TYPES
from graflow.exceptions import ConfigError

__all__ = ["ChannelTypeRegistry", "TypedChannel"]

T = TypeVar("T")

_MISSING: Any = object()

# Only fields annotated with exactly one of these are type-checked; anything else
# (Any, list[str], unions, ...) accepts any value, as upstream Graflow does.
_CHECKED_TYPES: tuple[type, ...] = (str, int, float, bool, list, dict)


def _is_typed_dict(message_type: object) -> bool:
    """True for TypedDict classes, whether from ``typing`` or ``typing_extensions``."""
    return (
        isinstance(message_type, type)
        and issubclass(message_type, dict)
        and hasattr(message_type, "__required_keys__")
        and hasattr(message_type, "__optional_keys__")
    )


def _field_types(message_type: type[Any]) -> dict[str, Any]:
    """Each field's annotation, resolved when possible (left as a string when not)."""
    try:
        return typing.get_type_hints(message_type)
    except (NameError, TypeError):
        return dict(message_type.__annotations__)


def _has_type(value: object, expected: type) -> bool:
    """True if ``value`` fits the plain annotation ``expected``; ints fit floats, bools fit bool."""
    if isinstance(value, bool):
        return expected is bool
    if expected is float:
        return isinstance(value, float | int)
    return isinstance(value, expected)


class _Schema:
    """The keys and plainly annotated field types of one TypedDict."""

    __slots__ = ("checked", "fields", "required")

    def __init__(self, message_type: type[Any]) -> None:
        self.required = frozenset(typing.cast(Any, message_type).__required_keys__)
        fields = _field_types(message_type)
        self.fields = frozenset(fields)
        self.checked = {
            key: hint
            for key, hint in fields.items()
            if isinstance(hint, type) and hint in _CHECKED_TYPES
        }

    def accepts(self, message: object) -> bool:
        """True if ``message`` is a dict with the required keys, no others, and fitting types."""
        if not isinstance(message, dict):
            return False
        keys = message.keys()
        if not (self.required <= keys and keys <= self.fields):
            return False
        return all(
            _has_type(message[key], expected)
            for key, expected in self.checked.items()
            if key in message
        )


def _validate_typed_dict(data: object, message_type: object) -> bool:
    """True if ``message_type`` is a TypedDict and ``data`` matches it (as TypedChannel checks)."""
    return _is_typed_dict(message_type) and _Schema(typing.cast(Any, message_type)).accepts(data)


class TypedChannel(Generic[T]):
    """Wraps a channel so that ``set``/``send`` store only messages of ``message_type``.

    ``get``/``receive`` return the default for a missing key and for a stored value that does
    not match the schema. List and counter operations pass through unvalidated.
    """

    def __init__(self, channel: Channel, message_type: type[T]) -> None:
        if not _is_typed_dict(message_type):
            raise ValueError(f"message_type must be a TypedDict class, got {message_type!r}")
        self._channel = channel
        self._message_type = message_type
        self._schema = _Schema(message_type)

    def __repr__(self) -> str:
        return f"TypedChannel({self._channel!r}, {self._message_type.__name__})"

    @property
    def name(self) -> str:
        """The wrapped channel's name."""
        return self._channel.name

    @property
    def message_type(self) -> type[T]:
        """The TypedDict every stored message must match."""
        return self._message_type

    @property
    def channel(self) -> Channel:
        """The wrapped channel."""
        return self._channel

    def is_valid(self, message: object) -> bool:
        """True if ``message`` matches the schema: keys, and plainly annotated field types."""
        return self._schema.accepts(message)

    def set(self, key: str, message: T, ttl: float | None = None) -> None:
        """Store ``message``; ``TypeError`` if it does not match the schema."""
        if not self.is_valid(message):
            raise TypeError(f"Value does not conform to {self._message_type.__name__}")
        self._channel.set(key, message, ttl)

    def send(self, key: str, message: T, ttl: float | None = None) -> None:
        """Store ``message``, as ``set`` does; ``TypeError`` if it does not match the schema."""
        if not self.is_valid(message):
            raise TypeError(f"Message does not conform to {self._message_type.__name__}")
        self._channel.set(key, message, ttl)

    def get(self, key: str, default: T | None = None) -> T | None:
        """The message under ``key``, or ``default`` when missing or not matching the schema."""
        value = self._channel.get(key, _MISSING)
        if value is _MISSING or not self.is_valid(value):
            return default
        return typing.cast(T, value)

    def receive(self, key: str, default: T | None = None) -> T | None:
        """Same as ``get``."""
        return self.get(key, default)

    def exists(self, key: str) -> bool:
        """True if ``key`` holds a live value (valid or not)."""
        return self._channel.exists(key)

    def delete(self, key: str) -> bool:
        """Remove ``key``; True if it existed."""
        return self._channel.delete(key)

    def keys(self) -> list[str]:
        """Every live key of the wrapped channel."""
        return self._channel.keys()

    def clear(self) -> None:
        """Remove every key of the wrapped channel."""
        self._channel.clear()

    def append(self, key: str, value: Any, ttl: float | None = None) -> int:
        """Append to a list in the wrapped channel, unvalidated."""
        return self._channel.append(key, value, ttl)

    def prepend(self, key: str, value: Any, ttl: float | None = None) -> int:
        """Prepend to a list in the wrapped channel, unvalidated."""
        return self._channel.prepend(key, value, ttl)

    def atomic_add(self, key: str, amount: int | float = 1) -> int | float:
        """Add to a number in the wrapped channel."""
        return self._channel.atomic_add(key, amount)

    @contextmanager
    def lock(self, key: str, timeout: float = 10.0) -> Iterator[None]:
        """Hold the wrapped channel's lock named ``key``."""
        with self._channel.lock(key, timeout):
            yield


class ChannelTypeRegistry:
    """Message TypedDicts by short name; the ``graflow.channels.schemas`` ones are built in."""

    _types: dict[str, type[Any]] = dict(BUILTIN_MESSAGE_TYPES)

    @classmethod
    def register(cls, name: str, message_type: type[Any]) -> None:
        """Register ``message_type`` under ``name``, replacing any earlier one."""
        if not _is_typed_dict(message_type):
            raise ValueError(f"message_type must be a TypedDict class, got {message_type!r}")
        cls._types[name] = message_type

    @classmethod
    def get(cls, name: str) -> type[Any] | None:
        """The TypedDict registered under ``name``, or None."""
        return cls._types.get(name)

    @classmethod
    def names(cls) -> list[str]:
        """Every registered name."""
        return sorted(cls._types)

    @classmethod
    def create_channel(cls, channel: Channel, name: str) -> TypedChannel[Any]:
        """Wrap ``channel`` for the type registered under ``name``; ``ConfigError`` if none."""
        message_type = cls._types.get(name)
        if message_type is None:
            raise ConfigError(
                f"Message type '{name}' not registered; registered types: {cls.names()}"
            )
        return TypedChannel(channel, message_type)
