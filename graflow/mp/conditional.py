"""The process backend's book of conditional items (see graflow.core.lookahead).

A conditional item runs on the worker that runs its predecessor, right after it, only if
the predecessor finished cleanly. Where it goes depends on where the predecessor is::

    predecessor unsent (in pending)   -> attached: sent in the same batch, right after it
    predecessor out on worker i       -> queued for worker i (sent at the next flush)
    predecessor back already          -> clean: an ordinary item; otherwise void at once
    predecessor gone (came back void) -> void at once

It stays *unresolved* until the predecessor's completion arrives: a clean one makes it an
ordinary item (redelivered as such if its worker dies); after any other, the worker skips
it and says so, and an unresolved item left on a dead worker, or handed back, is void too.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Protocol

from graflow.core.spec import Completion, WorkItem

__all__ = ["ConditionalItems", "void_completion"]


class _Holder(Protocol):
    outstanding: dict[int, WorkItem]
    chained: list[WorkItem]


def void_completion(item: WorkItem) -> Completion:
    """The completion of a conditional item that did not run."""
    return Completion(item.seq, item.task_id, False, void=True)


class ConditionalItems:
    """Where each conditional item of a run stands, and what becomes of it."""

    __slots__ = ("attached", "attached_seqs", "child", "members", "outcomes", "parent")

    def __init__(self) -> None:
        self.parent: dict[int, int] = {}  # unresolved item -> its predecessor
        self.child: dict[int, int] = {}  # predecessor -> its unresolved successor
        self.attached: dict[int, WorkItem] = {}  # unsent item -> successor sent with it
        self.attached_seqs: set[int] = set()
        self.members: set[int] = set()  # items of chains, not finished yet
        self.outcomes: dict[int, bool] = {}  # finished members with no successor yet: clean?

    def __bool__(self) -> bool:
        return bool(self.parent)

    def is_unresolved(self, seq: int) -> bool:
        """True while ``seq`` waits for its predecessor's completion."""
        return seq in self.parent

    def add(
        self,
        item: WorkItem,
        parent: int,
        pending: deque[WorkItem],
        holders: Iterable[_Holder],
        ready: list[Completion],
    ) -> None:
        """Place ``item``, to run only if ``parent`` finishes cleanly (see the module doc)."""
        outcome = self.outcomes.pop(parent, None)
        if outcome is not None:
            if outcome:
                self.members.add(item.seq)
                pending.append(item)
            else:
                ready.append(void_completion(item))
            return
        self.members.add(item.seq)
        self.parent[item.seq] = parent
        self.child[parent] = item.seq
        if (pending and pending[-1].seq == parent) or parent in self.attached_seqs:
            self._attach(parent, item)
            return
        for holder in holders:
            if parent in holder.outstanding:
                holder.chained.append(item)
                return
        if any(i.seq == parent for i in pending):  # redelivered after a worker died
            self._attach(parent, item)
            return
        ready.append(self.void(item))

    def _attach(self, parent: int, item: WorkItem) -> None:
        self.attached[parent] = item
        self.attached_seqs.add(item.seq)

    def take_attached(self, item: WorkItem, batch: list[WorkItem]) -> None:
        """Append to ``batch`` the successors that travel with ``item``."""
        child = self.attached.pop(item.seq, None)
        while child is not None:
            self.attached_seqs.discard(child.seq)
            batch.append(child)
            child = self.attached.pop(child.seq, None)

    def afters(self, batch: list[WorkItem]) -> list[int] | None:
        """The wire form of the conditions: each item's predecessor, or 0."""
        if not self.parent:
            return None
        parent = self.parent
        return [parent.get(i.seq, 0) for i in batch]

    def void(self, item: WorkItem) -> Completion:
        """Forget unresolved ``item``; its void completion for the scheduler."""
        parent = self.parent.pop(item.seq, None)
        if parent is not None and self.child.get(parent) == item.seq:
            del self.child[parent]
        self.members.discard(item.seq)
        return void_completion(item)

    def finished(self, seq: int, clean: bool) -> None:
        """Item ``seq`` came back (ok and without commands: ``clean``)."""
        if seq not in self.members and seq not in self.child:
            return
        self.members.discard(seq)
        child = self.child.pop(seq, None)
        if child is None:
            self.outcomes[seq] = clean  # for a successor sent later
        elif clean:
            del self.parent[child]  # resolved: an ordinary item from now on
        # else the worker skips the successor and says so (or dies: the backend voids it)

    def clear(self) -> None:
        """The run ended."""
        for store in (self.parent, self.child, self.attached, self.outcomes):
            store.clear()
        self.attached_seqs.clear()
        self.members.clear()
