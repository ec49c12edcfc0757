"""The Recorder: a RunObserver that writes the run's record in batches, off the hot path.

    scheduler thread                          writer thread (one per run)
    ────────────────                          ───────────────────────────
    tasks_queued / tasks_done / task_event ─▶ notes (deque) ──every flush_s──▶ store.write
    run_started ─────── starts ─────────────▶ graph snapshot, store.start_run
    run_finished ────── tells ──────────────▶ last write (skipped tasks, status), exits

The scheduler only appends one small tuple per call (a whole group's items, a backend's
batch of completions); merging them into attempt rows, building the graph and every write
happen in the writer thread. ``run_finished`` does not wait for the
last write: the thread is not a daemon, so the process finishes it before exiting, and
``wait`` waits for it where a caller needs the record at once (tests, ``graflow run``).
A store that fails mid-run (disk full, Redis away) loses the record, never the run: the
error is logged once and the writer goes on trying at the next flush.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from graflow.exceptions import RunInterrupted
from graflow.history.model import RunRecord, RunStatus, TaskState

if TYPE_CHECKING:
    from collections.abc import Sequence

    from graflow.core.graph import TaskGraph
    from graflow.core.spec import Completion, WorkItem
    from graflow.history.store import HistoryStore

__all__ = ["Recorder", "graph_summary"]

logger = logging.getLogger(__name__)

_QUEUED, _DONE, _EVENT = 0, 1, 2
_HEARTBEAT_S = 5.0  # a running run's updated_at is refreshed at least this often
_SLICE = 256  # notes handled between two offers of the GIL to the scheduler

Row = list[Any]
"""An attempt as the writer keeps it: the values of ``ATTEMPT_FIELDS``, in that order."""
_STATE, _STARTED_AT, _ENDED_AT, _DURATION, _WORKER, _ERROR, _TRACEBACK = 3, 5, 6, 7, 8, 9, 10
_QUEUED_STATE = TaskState.QUEUED.value
_SUCCEEDED = TaskState.SUCCEEDED.value
_FAILED = TaskState.FAILED.value


class Recorder:
    """Records one run into ``store`` (implements graflow.core.observer.RunObserver)."""

    def __init__(
        self,
        store: HistoryStore,
        *,
        workflow: str = "",
        target: str = "",
        backend: str = "inprocess",
        flush_s: float = 0.5,
    ) -> None:
        self.store = store
        self.workflow = workflow
        self.target = target
        self.backend = backend
        self.flush_s = flush_s
        self.run: RunRecord | None = None
        self._notes: deque[tuple[Any, ...]] = deque()
        self._note = self._notes.append
        self._now = time.time
        self._graph: TaskGraph | None = None
        self._wake = threading.Event()
        self._finished = False
        self._thread: threading.Thread | None = None
        self._rows: dict[int, Row] = {}  # writer thread only
        self._counts: dict[str, int] = {state.value: 0 for state in TaskState}
        self._dirty: set[int] = set()
        self._removed: list[int] = []  # seqs of rows to delete (void conditional items)
        self._latest: dict[str, int] = {}  # task id -> seq of its latest attempt
        self._groups: dict[tuple[str, int], int] = {}  # (group, attempt) -> its row's seq
        self._failed_store = False

    # -- RunObserver (scheduler thread) ------------------------------------------------
    def run_started(self, run_id: str, graph: TaskGraph) -> None:
        now = time.time()
        self.run = RunRecord(
            run_id=run_id,
            workflow=self.workflow,
            target=self.target,
            backend=self.backend,
            started_at=now,
            host=socket.gethostname(),
            pid=os.getpid(),
            updated_at=now,
        )
        self._graph = graph
        self._thread = threading.Thread(
            target=self._serve, name=f"graflow-history-{run_id[:8]}", daemon=False
        )
        self._thread.start()

    def tasks_queued(self, items: Sequence[WorkItem]) -> None:
        self._note((_QUEUED, tuple(items), self._now()))

    def tasks_done(self, completions: Sequence[Completion]) -> None:
        if completions:
            self._note((_DONE, tuple(completions), self._now()))

    def task_event(self, task_id: str, state: str, attempt: int, detail: str = "") -> None:
        self._note((_EVENT, task_id, state, attempt, detail, self._now()))

    def run_finished(self, error: BaseException | None) -> None:
        run = self.run
        if run is None:
            return
        run.ended_at = time.time()
        run.status, run.exit_code = _outcome(error)
        if error is not None:
            run.error = f"{type(error).__name__}: {error}"
        self._finished = True
        self._wake.set()

    # -- for callers -------------------------------------------------------------------
    def wait(self, timeout_s: float | None = None) -> bool:
        """Wait until the run's record is written; False if still writing at the timeout."""
        thread = self._thread
        if thread is None:
            return True
        thread.join(timeout_s)
        return not thread.is_alive()

    # -- writer thread -----------------------------------------------------------------
    def _serve(self) -> None:
        run = self.run
        assert run is not None
        # The run's row goes in at once (it is listed as running); its graph comes with the
        # first write: reading a large graph here would compete with the run's first steps.
        self._store(lambda: self.store.start_run(run, {"nodes": [], "edges": []}))
        nodes_written = -1
        last_write = time.monotonic()
        while True:
            self._wake.wait(self.flush_s)
            finished = self._finished
            self._take_notes()
            if finished:
                break
            if self._dirty or time.monotonic() - last_write >= _HEARTBEAT_S:
                nodes_written = self._write_with_graph(nodes_written)
                last_write = time.monotonic()
        graph = self._snapshot_graph()
        self._mark_skipped(graph, run.ended_at or time.time())
        self._write_with_graph(nodes_written, graph)

    def _write_with_graph(self, nodes_written: int, graph: dict[str, Any] | None = None) -> int:
        """Write, with the graph if it grew since it was written; how many nodes it has."""
        run = self.run
        assert run is not None
        if graph is None:
            live = self._graph
            if live is not None and len(live._nodes) == nodes_written:
                self._write(None)  # the graph written is still the whole graph
                return nodes_written
            graph = self._snapshot_graph()
        nodes = len(graph["nodes"])
        run.tasks = nodes
        self._write(graph if nodes != nodes_written else None)
        return nodes

    def _store(self, action: Any) -> None:
        try:
            action()
        except Exception as exc:  # noqa: BLE001 - a lost record must never fail the run
            if not self._failed_store:
                self._failed_store = True
                run_id = self.run.run_id if self.run is not None else "?"
                logger.warning(
                    "run %s: its history could not be written to %s: %s",
                    run_id,
                    self.store.location,
                    exc,
                )
            return
        self._failed_store = False

    def _write(self, graph: dict[str, Any] | None) -> None:
        run = self.run
        assert run is not None
        rows = self._rows
        changed = [rows[seq] for seq in self._dirty]
        removed, self._removed = self._removed, []
        self._dirty = set()
        run.counts = {state: n for state, n in self._counts.items() if n}
        run.updated_at = time.time()
        self._store(lambda: self.store.write(run, changed, graph, removed))

    def _snapshot_graph(self) -> dict[str, Any]:
        graph = self._graph
        for _ in range(100):  # the scheduler may add tasks meanwhile: read again
            try:
                return graph_summary(graph) if graph is not None else {"nodes": [], "edges": []}
            except RuntimeError:
                time.sleep(0.001)
        return {"nodes": [], "edges": []}

    def _take_notes(self) -> None:
        notes = self._notes
        handled = 0
        for _ in range(len(notes)):
            note = notes.popleft()
            kind = note[0]
            if kind == _EVENT:
                self._on_event(note)
                continue
            handle = self._on_queued if kind == _QUEUED else self._on_done
            batch, at = note[1], note[2]
            for start in range(0, len(batch), _SLICE):
                handle(batch[start : start + _SLICE], at)
                handled += _SLICE
                if handled >= _SLICE:
                    # Let the scheduler thread have the GIL between slices: it waits for
                    # it (up to the 5 ms switch interval) each time a completion wakes it.
                    time.sleep(0)
                    handled = 0

    def _set_state(self, row: Row, state: str) -> None:
        counts = self._counts
        counts[row[_STATE]] -= 1
        counts[state] = counts.get(state, 0) + 1
        row[_STATE] = state

    def _on_queued(self, items: Sequence[WorkItem], at: float) -> None:
        rows, latest, dirty = self._rows, self._latest, self._dirty
        for item in items:
            seq, task_id = item.seq, item.task_id
            rows[seq] = [
                seq,
                task_id,
                item.attempt,
                _QUEUED_STATE,
                at,
                None,
                None,
                None,
                "",
                "",
                "",
            ]
            latest[task_id] = seq
            dirty.add(seq)
        self._counts[_QUEUED_STATE] += len(items)

    def _on_done(self, completions: Sequence[Completion], at: float) -> None:
        rows, dirty = self._rows, self._dirty
        for completion in completions:
            seq = completion.seq
            row = rows.get(seq)
            if row is None or row[_STATE] != _QUEUED_STATE:
                continue  # a late duplicate of an attempt already recorded
            if completion.void:  # it did not run: the task goes out again as another item
                self._forget(row)
                continue
            self._set_state(row, _SUCCEEDED if completion.ok else _FAILED)
            duration_s = completion.duration_s
            row[_STARTED_AT] = at - duration_s if duration_s else at
            row[_ENDED_AT] = at
            row[_DURATION] = duration_s
            row[_WORKER] = completion.worker or "driver"
            if not completion.ok:
                error = completion.error
                row[_ERROR] = "" if error is None else f"{type(error).__name__}: {error}"
                remote = getattr(error, "remote_traceback", None)
                row[_TRACEBACK] = completion.traceback or remote or ""
            dirty.add(seq)

    def _forget(self, row: Row) -> None:
        seq, task_id = row[0], row[1]
        del self._rows[seq]
        self._counts[row[_STATE]] -= 1
        self._dirty.discard(seq)
        self._removed.append(seq)
        if self._latest.get(task_id) == seq:
            del self._latest[task_id]

    def _on_event(self, note: tuple[Any, ...]) -> None:
        _, task_id, state, attempt, detail, at = note
        if state == TaskState.RETRIED.value:
            seq = self._latest.get(task_id)
            row = None if seq is None else self._rows.get(seq)
            if row is not None:
                self._set_state(row, state)
                row[_ERROR] = row[_ERROR] or detail
                self._dirty.add(row[0])
            return
        key = (task_id, attempt)
        seq = self._groups.get(key)
        if seq is None:  # a group runs in the driver: a row of its own, numbered below 0
            seq = self._groups[key] = -1 - len(self._groups)
            started = TaskState.STARTED.value
            self._rows[seq] = [seq, task_id, attempt, started, at, at, None, None, "driver", "", ""]
            self._counts[started] += 1
            self._latest[task_id] = seq
        row = self._rows[seq]
        if state != TaskState.STARTED.value:
            self._set_state(row, state)
            row[_ENDED_AT] = at
            row[_DURATION] = at - (row[_STARTED_AT] or at)
            row[_ERROR] = detail
        self._dirty.add(seq)

    def _mark_skipped(self, graph: dict[str, Any], ended_at: float) -> None:
        """Tasks that never ran, and attempts handed out that never came back, are skipped."""
        skipped = TaskState.SKIPPED.value
        for row in self._rows.values():
            if row[_STATE] in (_QUEUED_STATE, TaskState.STARTED.value):
                self._set_state(row, skipped)
                row[_ENDED_AT] = ended_at
                self._dirty.add(row[0])
        seq = -1 - len(self._groups)
        for node in graph["nodes"]:
            task_id = node["id"]
            if task_id not in self._latest:
                self._rows[seq] = [seq, task_id, 0, skipped, None, None, None, None, "", "", ""]
                self._counts[skipped] = self._counts.get(skipped, 0) + 1
                self._dirty.add(seq)
                seq -= 1


def graph_summary(graph: TaskGraph) -> dict[str, Any]:
    """A graph as plain data: ``{"nodes": [{"id", "kind", "members"?}], "edges": [[a, b]]}``.

    A parallel group's members are listed under it (its edges lead from the group itself).
    Raises RuntimeError if the graph changes while it is read (read it again).
    """
    nodes: list[dict[str, Any]] = []
    for node_id, data in list(graph._nodes.items()):
        exe = data.get("task")
        node: dict[str, Any] = {"id": node_id, "kind": type(exe).__name__ if exe else "Task"}
        members = getattr(exe, "tasks", None)
        if isinstance(members, list) and node["kind"] == "ParallelGroup":
            node["members"] = [m.task_id for m in members]
        nodes.append(node)
    edges = [[a, b] for a, succs in list(graph._succ.items()) for b in list(succs)]
    return {"nodes": nodes, "edges": edges}


def _outcome(error: BaseException | None) -> tuple[str, int]:
    """(status, exit code) of a run that ended with ``error`` (the codes of ``graflow run``)."""
    if error is None:
        return RunStatus.SUCCEEDED.value, 0
    if isinstance(error, RunInterrupted):
        return RunStatus.INTERRUPTED.value, 128 + signal.Signals[error.signal_name].value
    if isinstance(error, KeyboardInterrupt):  # Ctrl-C, or SIGTERM as graflow run raises it
        return RunStatus.INTERRUPTED.value, 128 + int(getattr(error, "signum", signal.SIGINT))
    return RunStatus.FAILED.value, 1
