"""Which store a run's history goes to: ``history=``, ``--history``, ``GRAFLOW_HISTORY``.

history=False / "off"   nothing is recorded
history="PATH"          that SQLite file
history=<HistoryStore>  that store
history=None            GRAFLOW_HISTORY if set; else the run's Redis for Redis runs, and
                        $XDG_STATE_HOME/graflow/history.db (~/.local/state/...) otherwise
"""

from __future__ import annotations

from typing import Any

from graflow.config import RedisTLS, Settings
from graflow.history.store import HistoryStore, SqliteHistory, default_path
from graflow.redis.connect import connect
from graflow.redis.history import RedisHistory

__all__ = ["OFF", "HistoryChoice", "open_store", "reader_store"]

OFF = ("off", "false", "0", "no", "none")

HistoryChoice = HistoryStore | str | bool | None
"""What ``graflow.run(history=...)`` accepts (see the module docstring)."""


def _is_off(choice: Any) -> bool:
    return choice is False or (isinstance(choice, str) and choice.strip().lower() in OFF)


def open_store(
    choice: HistoryChoice,
    settings: Settings,
    *,
    redis_url: str | None = None,
    redis_tls: RedisTLS | None = None,
) -> HistoryStore | None:
    """The store a run records into (None: history is off); ConfigError for a bad one."""
    if choice is None:
        choice = settings.history
    if choice is None or choice is True:
        if redis_url is not None:
            return RedisHistory(connect(redis_url, redis_tls), redis_url)
        return SqliteHistory(default_path(settings.state_dir))
    if choice is False or _is_off(choice):
        return None
    if isinstance(choice, str):
        return SqliteHistory(choice)
    return choice


def reader_store(
    choice: str | None,
    settings: Settings,
    *,
    redis_url: str | None = None,
    redis_tls: RedisTLS | None = None,
    create: bool = False,
) -> HistoryStore:
    """The store ``graflow runs`` and ``graflow ui`` read: Redis with a URL, else the file
    (ConfigError if it does not exist, unless ``create``)."""
    if redis_url is not None:
        return RedisHistory(connect(redis_url, redis_tls), redis_url)
    choice = choice if choice is not None else settings.history
    if choice is None or _is_off(choice):
        return SqliteHistory(default_path(settings.state_dir), create=create)
    return SqliteHistory(choice, create=create)
