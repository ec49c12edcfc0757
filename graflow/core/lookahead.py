"""Chain lookahead: a chain's next tasks go out with the running one, on a condition.

A hop of a chain costs the scheduler one round trip to a worker process per task: the
successor can only be dispatched once the predecessor's completion is back. When the
successor is certain to be the next task of its frame *if* the predecessor finishes cleanly
(it returns, and issues no control command), the scheduler sends it at once, marked "run
only after item P finished cleanly". The worker decides locally, without waiting::

    scheduler ── [X, Y after X, Z after Y] ──▶ worker: runs X; X clean? run Y; Y clean? run Z
    scheduler ◀── DONE X, DONE Y, DONE Z ───── (a skipped item comes back void)

Which tasks run never changes: Y runs exactly when the scheduler, seeing X's clean
completion, would have queued it as the frame's only next task. A conditional item is
*unresolved* until its predecessor's completion is applied: a clean one *adopts* it (it is
now the frame's running task), anything else leaves it to come back void, and a void item is
forgotten (its cycle count given back). Unresolved items are not in a checkpoint's in-flight
list: a resume re-derives them from their predecessor.

A successor qualifies when it is the only successor of a task that has no timeout, is a
plain task (not a group; bound arguments travel in the worker's copy of the graph), has no
timeout of its own, and appears only once in the chain; the frame must have nothing else
queued and no retry waiting, and the run must have steps left. A successor that takes
arguments from the channel (typically its predecessor's result, by parameter name) goes
without them: the worker resolves them from the channel when the item starts, after its
predecessor's completion was posted, so it sees every write a scheduler-made item would have
seen. (A process-pool worker keeps the result of the task it ran last, so ``b(a)`` after
``a`` costs no round trip at all.)
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from graflow.core.cycle import base_task_id
from graflow.core.spec import WorkItem
from graflow.core.task import CPU_LANE, TaskWrapper

if TYPE_CHECKING:
    from graflow.core.engine import _Frame, _Scheduler

__all__ = ["ChainLookahead"]


class ChainLookahead:
    """The scheduler's book of conditional items (one per run)."""

    __slots__ = ("child_of", "depth", "parent_of")

    def __init__(self, depth: int) -> None:
        self.depth = depth
        self.child_of: dict[int, int] = {}  # seq -> the unresolved item waiting on it
        self.parent_of: dict[int, int] = {}  # unresolved seq -> the item it waits on

    def is_unresolved(self, seq: int) -> bool:
        """True for a conditional item whose predecessor has not finished yet."""
        return seq in self.parent_of

    def extend(self, sched: _Scheduler, frame: _Frame, tail: WorkItem) -> None:
        """Send up to ``depth`` conditional successors after the chain ending at ``tail``."""
        chain = 0
        seen = {tail.task_id}
        head = tail
        while head.seq in self.parent_of:  # walk back to count what is already out
            chain += 1
            head = sched.inflight[self.parent_of[head.seq]][1]
            seen.add(head.task_id)
        backend = sched.backend
        while chain < self.depth:
            nxt = self._successor(sched, frame, tail, seen)
            if nxt is None:
                return
            task_id, exe = nxt
            item = sched._make_item(task_id, exe, frame, prepare=False)
            sched.inflight[item.seq] = (frame, item)
            sched.pending_by_backend[frame.backend] += 1
            self.child_of[tail.seq] = item.seq
            self.parent_of[item.seq] = tail.seq
            backend.submit_after(item, exe, tail.seq)  # type: ignore[attr-defined]
            seen.add(task_id)
            tail = item
            chain += 1

    def _successor(
        self, sched: _Scheduler, frame: _Frame, tail: WorkItem, seen: set[str]
    ) -> tuple[str, TaskWrapper] | None:
        ctx = sched.context
        if (
            tail.timeout_s is not None
            or tail.seq in self.child_of
            or frame.queue
            or frame.timers
            or frame.dead
            or sched.stopped
            or ctx.max_steps_reached
            or ctx.steps + len(sched.inflight) >= ctx.max_steps
        ):
            return None
        succs = sched.succ.get(tail.task_id)
        if not succs or len(succs) != 1:
            return None
        task_id = succs[0]
        if task_id in seen:
            return None
        data = sched.nodes.get(task_id)
        exe = None if data is None else data.get("task")
        if type(exe) is not TaskWrapper or exe.timeout_s is not None:
            return None
        # Only plain sync tasks run ahead: io and async ones have lanes of their own, where
        # they start at once without riding along with a predecessor (issue 13).
        tail_data = sched.nodes.get(tail.task_id)
        tail_exe = None if tail_data is None else tail_data.get("task")
        if exe.lane != CPU_LANE or getattr(tail_exe, "lane", CPU_LANE) != CPU_LANE:
            return None
        return task_id, exe

    def on_completion(self, sched: _Scheduler, frame: _Frame, seq: int, clean: bool) -> None:
        """Item ``seq`` finished (its completion already applied): adopt its successor."""
        child = self.child_of.pop(seq, None)
        if child is None:
            return
        if not clean:
            return  # the worker skips the child; its void completion comes back
        del self.parent_of[child]
        item = sched.inflight[child][1]
        queue = frame.queue
        if queue and queue[0] == item.task_id:
            queue.popleft()
        else:
            # Only the queued successor can stand here (see the module docstring).
            with contextlib.suppress(ValueError):
                queue.remove(item.task_id)
        frame.busy = True
        tail = item
        while tail.seq in self.child_of:
            tail = sched.inflight[self.child_of[tail.seq]][1]
        self.extend(sched, frame, tail)

    def on_void(self, sched: _Scheduler, item: WorkItem) -> None:
        """A conditional item came back unrun: forget it."""
        parent = self.parent_of.pop(item.seq, None)
        if parent is not None and self.child_of.get(parent) == item.seq:
            del self.child_of[parent]
        if item.attempt == 0:  # give back the cycle it was counted for
            counts = sched.context.cycle_controller.cycle_counts
            base = base_task_id(item.task_id)
            if counts.get(base, 0) > 0:
                counts[base] -= 1


def lookahead_depth(backend: Any) -> int:
    """How many conditional successors ``backend`` takes (0: it takes none)."""
    return int(getattr(backend, "chain_lookahead", 0) or 0)
