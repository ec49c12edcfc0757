"""RedisHistory: the run history of Redis runs, kept in Redis beside the run's other keys.

    graflow:{<run>}:history           hash  run -> RunRecord JSON, graph -> graph JSON
    graflow:{<run>}:history:attempts  hash  seq -> the attempt's ATTEMPT_FIELDS, a JSON list
    graflow:{history}:runs            zset  run id by start time (the index of recent runs)

A run's two keys share its hash tag (one Cluster slot, one pipeline) and expire
``retention_s`` (default 7 days) after the run's last write; the index drops entries older
than that whenever a run starts, and readers skip ids whose record has expired.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from graflow.config import redact_url
from graflow.history.model import AttemptRecord, RunDetail, RunRecord, RunStatus
from graflow.history.store import shown_status
from graflow.redis import keys

__all__ = ["DEFAULT_RETENTION_S", "RedisHistory"]

DEFAULT_RETENTION_S = 7 * 24 * 3600


class RedisHistory:
    """HistoryStore in Redis (see the module docstring for the keys)."""

    def __init__(self, client: Any, url: str, retention_s: float = DEFAULT_RETENTION_S) -> None:
        self.client = client
        self.url = url
        self.retention_s = int(retention_s)

    @property
    def location(self) -> str:
        return redact_url(self.url)

    def start_run(self, run: RunRecord, graph: dict[str, Any]) -> None:
        pipe = self.client.pipeline(transaction=False)
        key = keys.history(run.run_id)
        pipe.hset(key, mapping={"run": orjson.dumps(run.as_dict()), "graph": orjson.dumps(graph)})
        pipe.expire(key, self.retention_s)
        pipe.execute()
        index = self.client.pipeline(transaction=False)
        index.zadd(keys.history_index(), {run.run_id: run.started_at})
        index.zremrangebyscore(keys.history_index(), "-inf", run.started_at - self.retention_s)
        index.execute()

    def write(
        self,
        run: RunRecord,
        attempts: Sequence[Sequence[Any]],
        graph: dict[str, Any] | None,
        removed: Sequence[int] = (),
    ) -> None:
        pipe = self.client.pipeline(transaction=False)
        key, attempts_key = keys.history(run.run_id), keys.history_attempts(run.run_id)
        fields: dict[str, bytes] = {"run": orjson.dumps(run.as_dict())}
        if graph is not None:
            fields["graph"] = orjson.dumps(graph)
        pipe.hset(key, mapping=fields)
        if attempts:
            rows = {str(a[0]): orjson.dumps(list(a)) for a in attempts}
            pipe.hset(attempts_key, mapping=rows)
        if removed:
            pipe.hdel(attempts_key, *(str(seq) for seq in removed))
        pipe.expire(key, self.retention_s)
        pipe.expire(attempts_key, self.retention_s)
        pipe.execute()

    def list_runs(
        self, status: str | None = None, workflow: str | None = None, limit: int = 20
    ) -> list[RunRecord]:
        ids = [_text(i) for i in self.client.zrevrange(keys.history_index(), 0, -1)]
        runs: list[RunRecord] = []
        for start in range(0, len(ids), 200):
            chunk = ids[start : start + 200]
            pipe = self.client.pipeline(transaction=False)
            for run_id in chunk:
                pipe.hget(keys.history(run_id), "run")
            for raw in pipe.execute():
                if raw is None:
                    continue  # expired
                run = _run_of(raw)
                if (not status or run.status == status) and (
                    not workflow or run.workflow == workflow
                ):
                    runs.append(run)
            if len(runs) >= limit:
                break
        runs.sort(key=lambda r: (r.status != RunStatus.RUNNING, -r.started_at))
        return runs[:limit]

    def get_run(self, run_id: str) -> RunDetail | None:
        full_id = self._full_id(run_id)
        if full_id is None:
            return None
        run_id = full_id
        record = self.client.hgetall(keys.history(run_id))
        if not record or b"run" not in record:
            return None
        raw_attempts = self.client.hvals(keys.history_attempts(run_id))
        attempts = sorted(
            (AttemptRecord(*orjson.loads(a)) for a in raw_attempts), key=lambda a: a.seq
        )
        graph = orjson.loads(record[b"graph"]) if b"graph" in record else {}
        return RunDetail(_run_of(record[b"run"]), attempts, graph or {"nodes": [], "edges": []})

    def _full_id(self, run_id: str) -> str | None:
        """``run_id``, or the one recent run whose id starts with it."""
        if self.client.exists(keys.history(run_id)):
            return run_id
        ids = [_text(i) for i in self.client.zrevrange(keys.history_index(), 0, -1)]
        matches = [i for i in ids if i.startswith(run_id)]
        return matches[0] if len(matches) == 1 else None

    def close(self) -> None:
        """The client belongs to whoever made it."""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _run_of(raw: bytes) -> RunRecord:
    run = RunRecord(**orjson.loads(raw))
    run.status = shown_status(run)
    return run
