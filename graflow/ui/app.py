"""The dashboard's ASGI app: pages, their JSON, and live updates of a run by server-sent events.

    browser ──GET /, /runs/<id>, /nodes, /queues──▶ HTML shell + /static/*.js (no CDN)
    browser ──GET /api/...────────────────────────▶ JSON read from the HistoryStore / Redis
    browser ◀─/api/runs/<id>/events (SSE)──────────  the run's changed tasks, every poll_s
    browser ──POST /api/queues/<q>/requeue|purge──▶ dead letters (body names the queue again)

The store is read in a thread (SQLite and redis-py block). The page never shows a Redis
password (URLs are redacted) or the signing secret (the app never holds it).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import html
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from graflow.history.model import RunDetail, RunStatus, summarize_tasks
from graflow.history.store import HistoryStore
from graflow.redis import dlq
from graflow.redis.status import read_status
from graflow.ui.layout import layout

__all__ = ["TOKEN_COOKIE", "create_app"]

TOKEN_COOKIE = "graflow_ui_token"
_STATIC = Path(__file__).parent / "static"
_KEEPALIVE_S = 15.0
_LIVE = (RunStatus.RUNNING.value,)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def _json(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


def _page(title: str, script: str, where: str, body: str) -> HTMLResponse:
    text = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)} · graflow</title>
<link rel="stylesheet" href="/static/style.css"></head>
<body><header><strong>graflow</strong>
<nav><a href="/">runs</a> <a href="/nodes">nodes</a> <a href="/queues">queues</a></nav>
<span class="where" title="where the history is read from">{html.escape(where)}</span></header>
<main>{body}</main>
<script src="/static/common.js"></script><script src="/static/{script}"></script>
</body></html>"""
    return HTMLResponse(text)


_RUNS_BODY = """<h1>Runs</h1>
<form id="filters"><label>status <select name="status"><option value="">any</option>
<option>running</option><option>succeeded</option><option>failed</option>
<option>interrupted</option><option>lost</option></select></label>
<label>workflow <input name="workflow" placeholder="name"></label></form>
<table id="runs"><thead><tr><th>run</th><th>workflow</th><th>status</th><th>exit</th>
<th>started</th><th>took</th><th>tasks</th><th>backend</th></tr></thead><tbody></tbody></table>
"""

_RUN_BODY = """<h1>Run <code id="run-id"></code> <span id="run-status" class="state"></span></h1>
<p id="run-meta"></p><p id="run-error" class="error"></p>
<h2>Graph</h2><div id="graph-box"><svg id="graph" xmlns="http://www.w3.org/2000/svg"></svg></div>
<h2>Timeline</h2><div id="gantt-box"><svg id="gantt" xmlns="http://www.w3.org/2000/svg"></svg></div>
<h2>Tasks</h2><table id="tasks"><thead><tr><th>task</th><th>state</th><th>attempts</th>
<th>worker</th><th>start</th><th>took</th></tr></thead><tbody></tbody></table>
<h2>Failures</h2><div id="failures"><p class="muted">none</p></div>
"""

_NODES_BODY = """<h1>Nodes and workers</h1><p id="nodes-note" class="muted"></p>
<table id="workers"><thead><tr><th>node</th><th>worker</th><th>queue</th><th>heartbeat</th>
<th>done</th><th>failed</th><th>rate</th><th>in flight</th></tr></thead><tbody></tbody></table>
"""

_QUEUES_BODY = """<h1>Queues and dead letters</h1><p id="queues-note" class="muted"></p>
<table id="queues"><thead><tr><th>queue</th><th>waiting</th><th>in flight</th>
<th>dead letters</th><th></th></tr></thead><tbody></tbody></table>
<div id="dead"></div>
"""


class _Dashboard:
    """The request handlers, over one store and (optionally) one Redis client."""

    def __init__(self, store: HistoryStore, redis: Any, poll_s: float) -> None:
        self.store = store
        self.redis = redis
        self.poll_s = poll_s
        self.where = store.location

    # -- pages -------------------------------------------------------------------------
    async def runs_page(self, request: Request) -> Response:
        return _page("runs", "runs.js", self.where, _RUNS_BODY)

    async def run_page(self, request: Request) -> Response:
        return _page("run", "run.js", self.where, _RUN_BODY)

    async def nodes_page(self, request: Request) -> Response:
        return _page("nodes", "nodes.js", self.where, _NODES_BODY)

    async def queues_page(self, request: Request) -> Response:
        return _page("queues", "queues.js", self.where, _QUEUES_BODY)

    # -- runs --------------------------------------------------------------------------
    async def runs(self, request: Request) -> Response:
        params = request.query_params
        try:
            limit = max(1, min(500, int(params.get("limit", "50"))))
        except ValueError:
            return _json({"error": "limit must be a whole number"}, 400)
        runs = await run_in_threadpool(
            self.store.list_runs,
            params.get("status") or None,
            params.get("workflow") or None,
            limit,
        )
        return _json([r.as_dict() for r in runs])

    async def run(self, request: Request) -> Response:
        detail = await run_in_threadpool(self.store.get_run, request.path_params["run_id"])
        if detail is None:
            return _json({"error": "no such run"}, 404)
        return _json(_describe(detail, with_layout=True))

    async def events(self, request: Request) -> Response:
        run_id = request.path_params["run_id"]
        return StreamingResponse(
            self._stream(request, run_id),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    async def _stream(self, request: Request, run_id: str) -> AsyncIterator[bytes]:
        """Every ``poll_s``: the tasks that changed since the last event; ends with the run."""
        sent: dict[str, Any] = {}
        sent_run: dict[str, Any] | None = None
        nodes = -1
        quiet_s = 0.0
        while not await request.is_disconnected():
            detail = await run_in_threadpool(self.store.get_run, run_id)
            if detail is None:
                yield b"event: missing\ndata: {}\n\n"
                return
            described = _describe(detail, with_layout=len(detail.graph["nodes"]) != nodes)
            nodes = len(detail.graph["nodes"])
            changed = [t for t in described["tasks"] if sent.get(t["task_id"]) != t]
            update: dict[str, Any] = {"tasks": changed}
            if described["run"] != sent_run:
                update["run"] = described["run"]
            if "layout" in described:
                update["layout"] = described["layout"]
                update["failures"] = described["failures"]
            elif changed:
                update["failures"] = described["failures"]
            if len(update) > 1 or changed:
                yield b"data: " + orjson.dumps(update) + b"\n\n"
                quiet_s = 0.0
            elif quiet_s >= _KEEPALIVE_S:
                yield b": keep-alive\n\n"
                quiet_s = 0.0
            sent.update((t["task_id"], t) for t in changed)
            sent_run = described["run"]
            if described["run"]["status"] not in _LIVE:
                yield b"event: end\ndata: {}\n\n"
                return
            await asyncio.sleep(self.poll_s)
            quiet_s += self.poll_s

    # -- nodes and queues (Redis) ------------------------------------------------------
    def _no_redis(self) -> Response:
        return _json(
            {"available": False, "reason": "start graflow ui with --redis URL to see these"}
        )

    async def nodes(self, request: Request) -> Response:
        if self.redis is None:
            return self._no_redis()
        status = await run_in_threadpool(read_status, self.redis)
        in_flight: dict[str, int] = {}
        for queue in status.queues:
            for consumer, count in queue.in_flight_by_consumer.items():
                in_flight[consumer] = in_flight.get(consumer, 0) + count
        workers = [
            {
                "node": node.node_id,
                "worker": w.consumer,
                "queue": w.queue,
                "seen_age_s": w.seen_age_s,
                "done": w.done,
                "failed": w.failed,
                "rate_per_s": w.rate_per_s,
                "stale": w.stale,
                "in_flight": in_flight.get(w.consumer, 0),
            }
            for node in status.nodes
            for w in node.workers
        ]
        return _json({"available": True, "workers": workers, "gone_nodes": status.gone_nodes})

    async def queues(self, request: Request) -> Response:
        if self.redis is None:
            return self._no_redis()
        return _json(await run_in_threadpool(self._read_queues))

    def _read_queues(self) -> dict[str, Any]:
        status = read_status(self.redis)
        out = []
        for queue in status.queues:
            dead = dlq.list_dead(self.redis, queue.name, 20) if queue.dead_letters else []
            out.append(
                {
                    "name": queue.name,
                    "waiting": queue.waiting,
                    "in_flight": queue.in_flight,
                    "dead_letters": queue.dead_letters,
                    "dead": [
                        {
                            "entry_id": d.entry_id,
                            "reason": d.reason,
                            "run_id": d.run_id,
                            "deliveries": d.deliveries,
                            "dead_at": d.dead_at,
                            "can_requeue": d.can_requeue,
                        }
                        for d in dead
                    ],
                }
            )
        return {"available": True, "queues": out}

    async def dead_letter_action(self, request: Request) -> Response:
        if self.redis is None:
            return self._no_redis()
        if request.headers.get("x-graflow-ui") != "1":
            return _json({"error": "send this from the dashboard"}, 403)
        queue, action = request.path_params["queue"], request.path_params["action"]
        if action not in ("requeue", "purge"):
            return _json({"error": f"no action {action!r}: requeue or purge"}, 404)
        try:
            body = orjson.loads(await request.body() or b"{}")
        except orjson.JSONDecodeError:
            return _json({"error": "the body must be JSON"}, 400)
        if not isinstance(body, dict) or body.get("confirm") != queue:
            return _json({"error": f"confirm by sending {{'confirm': {queue!r}}}"}, 400)
        if action == "purge":
            count = await run_in_threadpool(dlq.purge, self.redis, queue)
            return _json({"purged": count})
        outcome = await run_in_threadpool(dlq.requeue_all, self.redis, queue)
        return _json({"requeued": sum(1 for v in outcome.values() if v == "requeued")})


def _describe(detail: RunDetail, *, with_layout: bool) -> dict[str, Any]:
    """A run as the pages want it: the run, per-task summaries, failures, maybe the layout."""
    tasks = [t.as_dict() for t in summarize_tasks(detail)]
    failures = [
        {"task_id": a.task_id, "attempt": a.attempt, "error": a.error, "traceback": a.traceback}
        for a in detail.attempts
        if a.state in ("failed", "retried") and (a.error or a.traceback)
    ]
    out: dict[str, Any] = {"run": detail.run.as_dict(), "tasks": tasks, "failures": failures}
    if with_layout:
        out["layout"] = layout(detail.graph)
    return out


class TokenGate:
    """Lets a request through only with the token: ``?token=`` (then kept in a cookie),
    the cookie, or ``Authorization: Bearer <token>``."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        from_query = request.query_params.get("token")
        bearer = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        given = from_query or request.cookies.get(TOKEN_COOKIE) or bearer
        if not given or not hmac.compare_digest(given.encode(), self.token.encode()):
            refused = PlainTextResponse(
                "graflow ui: this dashboard needs its token (open it as /?token=...)", 401
            )
            await refused(scope, receive, send)
            return
        if from_query:  # keep it in a cookie and take it out of the address bar
            redirect = RedirectResponse(request.url.remove_query_params("token"), 303)
            redirect.set_cookie(TOKEN_COOKIE, self.token, httponly=True, samesite="strict")
            await redirect(scope, receive, send)
            return
        await self.app(scope, receive, send)


def create_app(
    store: HistoryStore,
    *,
    redis: Any = None,
    token: str | None = None,
    poll_s: float = 0.25,
    on_ready: Callable[[], None] | None = None,
) -> ASGIApp:
    """The dashboard over ``store`` (and ``redis``, a client, for nodes and queues);
    ``on_ready`` is called once the server starts serving it."""
    board = _Dashboard(store, redis, poll_s)
    routes = [
        Route("/", board.runs_page),
        Route("/runs/{run_id}", board.run_page),
        Route("/nodes", board.nodes_page),
        Route("/queues", board.queues_page),
        Route("/api/runs", board.runs),
        Route("/api/runs/{run_id}", board.run),
        Route("/api/runs/{run_id}/events", board.events),
        Route("/api/nodes", board.nodes),
        Route("/api/queues", board.queues),
        Route(
            "/api/queues/{queue}/{action:str}",
            board.dead_letter_action,
            methods=["POST"],
        ),
        Mount("/static", StaticFiles(directory=_STATIC), name="static"),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        if on_ready is not None:
            on_ready()
        yield

    app: ASGIApp = Starlette(routes=routes, lifespan=lifespan)
    if token:
        app = TokenGate(app, token)
    return app
