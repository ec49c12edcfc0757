"""Where run records live: the HistoryStore protocol, and its SQLite implementation.

    Recorder (writer thread) ──start_run / write──▶ SqliteHistory ──▶ history.db (WAL)
    graflow runs, graflow ui ──list_runs / get_run──▶ SqliteHistory ◀─┘ (any process)

Many processes write one file at once (cron runs, a pool's driver, the dashboard reading):
the database is in WAL mode, so readers never block the writer; every write is one short
``BEGIN IMMEDIATE`` transaction, which takes the write lock up front (a deferred transaction
that reads first and then writes can fail at once with "database is locked", whatever the
busy timeout), and a write that still finds the lock busy past the timeout is tried again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import orjson

from graflow.exceptions import ConfigError
from graflow.history.model import ATTEMPT_FIELDS, AttemptRecord, RunDetail, RunRecord, RunStatus

__all__ = ["LOST_AFTER_S", "HistoryStore", "SqliteHistory", "default_path"]

logger = logging.getLogger(__name__)

LOST_AFTER_S = 60.0
"""A run still "running" whose driver has not written for this long is shown as lost."""

_BUSY_TIMEOUT_S = 10.0
_RETRY_FOR_S = 120.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, workflow TEXT NOT NULL, target TEXT NOT NULL,
    backend TEXT NOT NULL, host TEXT NOT NULL, pid INTEGER NOT NULL,
    started_at REAL NOT NULL, ended_at REAL, updated_at REAL NOT NULL,
    status TEXT NOT NULL, exit_code INTEGER, error TEXT NOT NULL, tasks INTEGER NOT NULL,
    counts BLOB NOT NULL, graph BLOB
);
CREATE INDEX IF NOT EXISTS runs_started ON runs (started_at);
CREATE TABLE IF NOT EXISTS attempts (
    run_id TEXT NOT NULL, seq INTEGER NOT NULL, task_id TEXT NOT NULL,
    attempt INTEGER NOT NULL, state TEXT NOT NULL, queued_at REAL, started_at REAL,
    ended_at REAL, duration_s REAL, worker TEXT NOT NULL, error TEXT NOT NULL,
    traceback TEXT NOT NULL, PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;
"""

_INSERT_ATTEMPTS = (
    f"INSERT OR REPLACE INTO attempts (run_id, {', '.join(ATTEMPT_FIELDS)}) SELECT ?, "
    + ", ".join(f"json_extract(value, '$[{i}]')" for i in range(len(ATTEMPT_FIELDS)))
    + " FROM json_each(?)"
)

_RUN_COLUMNS = (
    "run_id, workflow, target, backend, host, pid, started_at, ended_at, updated_at, "
    "status, exit_code, error, tasks, counts"
)
_ATTEMPT_COLUMNS = ", ".join(ATTEMPT_FIELDS)


def default_path(state_dir: str | None) -> Path:
    """``$XDG_STATE_HOME/graflow/history.db`` (``~/.local/state`` without the variable)."""
    base = Path(state_dir) if state_dir else Path("~/.local/state").expanduser()
    return base / "graflow" / "history.db"


class HistoryStore(Protocol):
    """Keeps run records. ``start_run`` and ``write`` come from one writer thread per run;
    the readers may be called from any thread or process. Writes are idempotent (a row is
    replaced by its newer version)."""

    @property
    def location(self) -> str:
        """Where the records are (a file path, or a Redis URL without its password)."""

    def start_run(self, run: RunRecord, graph: dict[str, Any]) -> None:
        """Record a run that begins, with its graph."""

    def write(
        self,
        run: RunRecord,
        attempts: Sequence[Sequence[Any]],
        graph: dict[str, Any] | None,
        removed: Sequence[int] = (),
    ) -> None:
        """Record ``attempts`` (rows of ``ATTEMPT_FIELDS`` values, new or newer versions)
        and the run's status, in one go; ``graph`` replaces the run's graph when tasks were
        added while it ran; the attempts numbered ``removed`` are deleted (they never ran
        and went out again as other attempts)."""

    def list_runs(
        self, status: str | None = None, workflow: str | None = None, limit: int = 20
    ) -> list[RunRecord]:
        """The most recent runs first (running ones before finished ones)."""

    def get_run(self, run_id: str) -> RunDetail | None:
        """A run (by its id, or a prefix naming one run) with its attempts and graph."""

    def close(self) -> None:
        """Release connections."""


class SqliteHistory:
    """HistoryStore in one SQLite file (stdlib ``sqlite3``, WAL mode)."""

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True) -> None:
        self.path = Path(path)
        if not create and not self.path.exists():
            raise ConfigError(f"no run history at {self.path} (no run recorded there yet)")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._connect() as conn:
                conn.execute("PRAGMA journal_mode=WAL")
                self._retrying(lambda: conn.executescript(_SCHEMA))
        except (OSError, sqlite3.DatabaseError) as exc:
            raise ConfigError(
                f"run history {self.path}: cannot be opened ({exc}); set GRAFLOW_HISTORY to "
                "another file, or to off"
            ) from exc

    @property
    def location(self) -> str:
        return str(self.path)

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_S, isolation_level=None)
        try:
            conn.execute("PRAGMA synchronous=NORMAL")
            yield conn
        finally:
            conn.close()

    @staticmethod
    def _retrying(action: Any) -> Any:
        """Run ``action``; if the database stays locked past the busy timeout, again."""
        deadline = time.monotonic() + _RETRY_FOR_S
        delay = 0.01
        while True:
            try:
                return action()
            except sqlite3.OperationalError as exc:
                text = str(exc)
                if ("locked" not in text and "busy" not in text) or time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.5)

    def _transaction(self, statements: Sequence[tuple[str, Any, bool]]) -> None:
        """Run ``(sql, parameters, many)`` statements in one write transaction."""

        def attempt() -> None:
            with self._connect() as conn:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    for sql, params, many in statements:
                        if many:
                            conn.executemany(sql, params)
                        else:
                            conn.execute(sql, params)
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")

        self._retrying(attempt)

    def start_run(self, run: RunRecord, graph: dict[str, Any]) -> None:
        sql = f"INSERT OR REPLACE INTO runs ({_RUN_COLUMNS}, graph) VALUES ({_marks(15)})"
        self._transaction([(sql, (*_run_row(run), orjson.dumps(graph)), False)])

    def write(
        self,
        run: RunRecord,
        attempts: Sequence[Sequence[Any]],
        graph: dict[str, Any] | None,
        removed: Sequence[int] = (),
    ) -> None:
        statements: list[tuple[str, Any, bool]] = []
        if attempts:
            # All rows in one JSON parameter, unpacked by SQLite itself: one statement that
            # runs without the GIL, where binding each row from Python would hold it
            # (and slow the scheduler thread of the run being recorded).
            statements.append((_INSERT_ATTEMPTS, (run.run_id, orjson.dumps(attempts)), False))
        if removed:
            sql = "DELETE FROM attempts WHERE run_id=? AND seq=?"
            statements.append((sql, [(run.run_id, seq) for seq in removed], True))
        set_run = (
            "UPDATE runs SET ended_at=?, updated_at=?, status=?, exit_code=?, error=?, tasks=?, "
            "counts=? WHERE run_id=?"
        )
        params = (
            run.ended_at,
            run.updated_at,
            str(run.status),
            run.exit_code,
            run.error,
            run.tasks,
            orjson.dumps(run.counts),
        )
        statements.append((set_run, (*params, run.run_id), False))
        if graph is not None:
            statements.append(
                ("UPDATE runs SET graph=? WHERE run_id=?", (orjson.dumps(graph), run.run_id), False)
            )
        self._transaction(statements)

    def list_runs(
        self, status: str | None = None, workflow: str | None = None, limit: int = 20
    ) -> list[RunRecord]:
        where, params = _run_filter(status, workflow)
        sql = (
            f"SELECT {_RUN_COLUMNS} FROM runs {where} "
            "ORDER BY (status = 'running') DESC, started_at DESC LIMIT ?"
        )
        with self._connect() as conn:
            rows = conn.execute(sql, (*params, limit)).fetchall()
        return [_run_of(row) for row in rows]

    def get_run(self, run_id: str) -> RunDetail | None:
        with self._connect() as conn:
            rows = conn.execute(
                f"SELECT {_RUN_COLUMNS}, graph FROM runs WHERE run_id >= ? AND run_id < ? LIMIT 2",
                (run_id, run_id + "\uffff"),
            ).fetchall()
            exact = [r for r in rows if r[0] == run_id]
            if exact:
                rows = exact
            if len(rows) != 1:
                return None
            row = rows[0]
            attempts = conn.execute(
                f"SELECT {_ATTEMPT_COLUMNS} FROM attempts WHERE run_id=? ORDER BY seq",
                (row[0],),
            ).fetchall()
        graph = orjson.loads(row[14]) if row[14] else {"nodes": [], "edges": []}
        return RunDetail(_run_of(row[:14]), [_attempt_of(a) for a in attempts], graph)

    def close(self) -> None:
        """Nothing held between calls (each opens its own connection)."""


def _marks(count: int) -> str:
    return ", ".join("?" * count)


def _run_filter(status: str | None, workflow: str | None) -> tuple[str, tuple[Any, ...]]:
    clauses: list[str] = []
    params: list[Any] = []
    if status == RunStatus.LOST:
        clauses.append("status = 'running' AND updated_at < ?")
        params.append(time.time() - LOST_AFTER_S)
    elif status == RunStatus.RUNNING:
        clauses.append("status = 'running' AND updated_at >= ?")
        params.append(time.time() - LOST_AFTER_S)
    elif status:
        clauses.append("status = ?")
        params.append(status)
    if workflow:
        clauses.append("workflow = ?")
        params.append(workflow)
    return ("WHERE " + " AND ".join(clauses) if clauses else ""), tuple(params)


def _run_row(run: RunRecord) -> tuple[Any, ...]:
    return (
        run.run_id,
        run.workflow,
        run.target,
        run.backend,
        run.host,
        run.pid,
        run.started_at,
        run.ended_at,
        run.updated_at,
        str(run.status),
        run.exit_code,
        run.error,
        run.tasks,
        orjson.dumps(run.counts),
    )


_RUN_NAMES = [name.strip() for name in _RUN_COLUMNS.split(",")]


def _run_of(row: Sequence[Any]) -> RunRecord:
    values = dict(zip(_RUN_NAMES, row, strict=True))
    values["counts"] = orjson.loads(values["counts"])
    run = RunRecord(**values)
    run.status = shown_status(run)
    return run


def shown_status(run: RunRecord) -> str:
    """The run's status, ``lost`` for a run whose driver stopped writing while it ran."""
    if run.status == RunStatus.RUNNING and run.updated_at < time.time() - LOST_AFTER_S:
        return RunStatus.LOST.value
    return str(run.status)


def _attempt_of(row: Sequence[Any]) -> AttemptRecord:
    return AttemptRecord(*row)
