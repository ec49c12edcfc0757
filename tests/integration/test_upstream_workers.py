"""Upstream and seed-document worker entry points serving graflow's Redis runs.

The worker code of graflow's original architecture document runs as written (in a
subprocess, against a redis-server of this module, so its ``default`` queue and db 0 are
its own); so does upstream's ``python -m graflow.worker.main``. A ``TaskWorker`` started
either way runs the tasks of ``graflow.run(wf, redis=URL)`` exactly as a
``graflow supervisor`` node would. Tasks are built inside the tests: closures travel by
value with cloudpickle, so the worker processes need none of this module.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import graflow
from graflow import parallel, task, workflow
from graflow.core.context import ExecutionContext
from graflow.core.engine import WorkflowEngine
from graflow.core.graph import TaskGraph
from graflow.core.handler import TaskHandler as CoreTaskHandler
from graflow.exceptions import GraflowRuntimeError, TaskError
from graflow.queue.base import TaskSpec
from graflow.queue.distributed import DistributedTaskQueue
from graflow.queue.factory import QueueBackend
from graflow.queue.local import LocalTaskQueue
from graflow.queue.redis import RedisTaskQueue
from graflow.redis import keys
from graflow.redis.channel import RedisChannel
from graflow.redis.signing import Signer
from graflow.worker.handler import InProcessTaskExecutor, TaskHandler
from graflow.worker.worker import TaskWorker

SECRET = b"upstream worker test secret, 32b"
_DEADLINE_S = 20.0

# The worker entry point of the seed document, verbatim. The document's listing never
# imports ``time``; that one line is the only addition.
SEED_WORKER_MAIN = '''\
import time  # missing from the document's listing
# worker_main.py
import os
import redis
from graflow.worker.worker import TaskWorker
from graflow.worker.handler import InProcessTaskExecutor
from graflow.queue.redis import RedisTaskQueue
from graflow.core.context import ExecutionContext
from graflow.core.engine import WorkflowEngine

def create_worker_from_env():
    """環境変数からワーカー設定を生成"""
    redis_host = os.getenv('REDIS_HOST', 'localhost')
    redis_port = int(os.getenv('REDIS_PORT', '6379'))
    worker_id = os.getenv('WORKER_ID', 'worker-1')
    max_concurrent = int(os.getenv('MAX_CONCURRENT_TASKS', '4'))
    
    # Redis接続
    redis_client = redis.Redis(
        host=redis_host, 
        port=redis_port, 
        decode_responses=True
    )
    
    # ダミーExecutionContext（ワーカー専用）
    from graflow.core.graph import TaskGraph
    dummy_graph = TaskGraph()
    context = ExecutionContext.create(
        graph=dummy_graph,
        start_node="dummy",
        queue_backend="redis",
        channel_backend="redis",
        config={"redis_client": redis_client}
    )
    
    # TaskQueue作成
    task_queue = RedisTaskQueue(context, redis_client=redis_client)
    
    # TaskHandler作成
    handler = InProcessTaskExecutor()
    
    # ワーカー作成
    worker = TaskWorker(
        queue=task_queue,
        handler=handler,
        worker_id=worker_id,
        max_concurrent_tasks=max_concurrent
    )
    
    return worker

if __name__ == "__main__":
    worker = create_worker_from_env()
    try:
        worker.start()
        # Keep running until signal
        while worker.is_running:
            time.sleep(1)
    except KeyboardInterrupt:
        worker.stop()
'''  # noqa: W291, W293, RUF001 - the document's whitespace and full-width brackets

# The document's custom handler, verbatim, after the imports its listing assumes and a
# registry of task types (what a worker container would bring).
SEED_CONTAINERIZED_HANDLER = """\
import logging
from typing import Any, Callable, Dict
from graflow.worker.handler import TaskHandler
logger = logging.getLogger(__name__)

def shout(task):
    channel = task.get_execution_context().get_channel()
    channel.set(f"shouted:{task.task_id}", task.task_id.upper())

def explode(task):
    raise RuntimeError("no such luck")

TASK_REGISTRY = {"shout": shout, "explode": explode}

class ContainerizedTaskHandler(TaskHandler):
    \"\"\"コンテナ環境用のタスクハンドラー\"\"\"
    
    def __init__(self, task_registry: Dict[str, Callable]):
        self.task_registry = task_registry
        
    def _process_task(self, task: Any) -> bool:
        task_type = getattr(task, 'task_type', None)
        if task_type and task_type in self.task_registry:
            func = self.task_registry[task_type]
            try:
                result = func(task)
                return True
            except Exception as e:
                logger.error(f"Task {task.task_id} failed: {e}")
                return False
        else:
            # デフォルト処理
            return task() if callable(task) else False
"""  # noqa: W293 - verbatim


# -- fixtures and helpers -----------------------------------------------------------------
@pytest.fixture(scope="module")
def private_redis(redis_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A redis-server of this module only: the seed code serves db 0's ``default`` queue."""
    server = type(redis_server)(redis_server.binary, tmp_path_factory.mktemp("seed-redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private XDG config home: its default secret file is shared with child processes."""
    home = tmp_path / "config"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    return home


@pytest.fixture
def queue_name() -> str:
    """A queue of this test's own on the session's redis-server."""
    return f"uw-{uuid.uuid4().hex[:12]}"


class WorkerProcess:
    """A worker started as a subprocess, with its log kept for failure messages."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, *args], env=env, stdout=out, stderr=subprocess.STDOUT
            )

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def wait_registered(self, client: Any, worker_id: str) -> None:
        """Return once the worker's loops announced themselves in Redis."""
        deadline = time.monotonic() + _DEADLINE_S
        while not client.sismember(keys.nodes_index(), worker_id):
            if self.process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"worker {worker_id} did not start:\n{self.output()}")
            time.sleep(0.02)

    def terminate(self) -> int:
        """SIGTERM, then the exit code (killed if it does not exit in time)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=_DEADLINE_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            pytest.fail(f"worker did not stop on SIGTERM:\n{self.output()}")


def _child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "GRAFLOW_"))}
    env.update(extra)
    return env


def _pipeline() -> Any:
    with workflow("pipeline") as wf:

        @task
        def source() -> int:
            return 21

        @task
        def double(source: int) -> tuple[int, int]:
            return source * 2, os.getpid()

        source >> double
    return wf


def _wait_for(predicate: Any, what: str) -> None:
    deadline = time.monotonic() + _DEADLINE_S
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.02)


# -- the seed document's worker entry point -----------------------------------------------
@pytest.mark.timeout(90)
def test_seed_worker_entrypoint_runs_graflow_runs(
    private_redis: Any, config_home: Path, tmp_path: Path
) -> None:
    script = tmp_path / "worker_main.py"
    script.write_text(SEED_WORKER_MAIN)
    env = _child_env(
        REDIS_HOST=private_redis.host,
        REDIS_PORT=str(private_redis.port),
        WORKER_ID="seed-worker",
        MAX_CONCURRENT_TASKS="2",
    )
    worker = WorkerProcess([str(script)], env, tmp_path / "worker.log")
    client = private_redis.client()
    try:
        worker.wait_registered(client, "seed-worker")
        result = graflow.run(_pipeline(), redis=private_redis.url, timeout_s=60)
        value, pid = result.value
        assert value == 42
        assert pid == worker.process.pid
        assert result.results["source"] == 21
        assert result.completed == ["source", "double"]
    finally:
        code = worker.terminate()
    assert code == 0, worker.output()
    assert "Traceback" not in worker.output()


@pytest.mark.timeout(90)
def test_seed_containerized_handler_dispatches_by_task_type(
    private_redis: Any, config_home: Path, tmp_path: Path
) -> None:
    script = tmp_path / "container_worker.py"
    main = SEED_WORKER_MAIN.replace(
        "handler = InProcessTaskExecutor()", "handler = ContainerizedTaskHandler(TASK_REGISTRY)"
    )
    marker = 'if __name__ == "__main__":'
    script.write_text(main.replace(marker, SEED_CONTAINERIZED_HANDLER + "\n" + marker))
    env = _child_env(
        REDIS_HOST=private_redis.host, REDIS_PORT=str(private_redis.port), WORKER_ID="container"
    )
    worker = WorkerProcess([str(script)], env, tmp_path / "worker.log")
    client = private_redis.client()

    with workflow("typed") as wf:

        @task
        def source() -> int:
            return 21

        @task
        def double(source: int) -> int:
            return source * 2

        @task
        def announce() -> str:
            return "never called: the registry handles 'shout' tasks"

        announce.task_type = "shout"  # type: ignore[attr-defined]
        source >> double >> announce

    with workflow("doomed") as doomed:

        @task
        def fragile() -> int:
            return 1

        fragile.task_type = "explode"  # type: ignore[attr-defined]

    try:
        worker.wait_registered(client, "container")
        result = graflow.run(wf, redis=private_redis.url, timeout_s=60)
        # Untyped tasks take the document's fallback, `task()`: their values flow on.
        assert result.results == {"source": 21, "double": 42, "announce": None}
        assert result.channel["shouted:announce"] == "ANNOUNCE"
        with pytest.raises(TaskError, match="reported the task as failed"):
            graflow.run(doomed, redis=private_redis.url, timeout_s=60)
    finally:
        code = worker.terminate()
    assert code == 0, worker.output()
    assert "Task fragile failed: no such luck" in worker.output()


# -- python -m graflow.worker.main --------------------------------------------------------
@pytest.mark.timeout(90)
def test_worker_cli_serves_a_run_and_stops_on_sigterm(
    redis_server: Any, config_home: Path, queue_name: str, tmp_path: Path
) -> None:
    args = [
        "-m", "graflow.worker.main",
        "--redis-host", redis_server.host,
        "--redis-port", str(redis_server.port),
        "--worker-id", "cli-worker",
        "--max-concurrent-tasks", "2",
        "--queue", queue_name,
    ]  # fmt: skip
    worker = WorkerProcess(args, _child_env(), tmp_path / "worker.log")
    client = redis_server.client()
    try:
        worker.wait_registered(client, "cli-worker")
        result = graflow.run(_pipeline(), redis=redis_server.url, queue=queue_name, timeout_s=60)
        assert result.value == (42, worker.process.pid)
    finally:
        code = worker.terminate()
    assert code == 0, worker.output()
    assert "SIGTERM received" in worker.output()


@pytest.mark.timeout(90)
def test_worker_cli_takes_its_settings_from_the_environment(
    redis_server: Any, queue_name: str, tmp_path: Path
) -> None:
    env = _child_env(
        REDIS_HOST=redis_server.host,
        REDIS_PORT=str(redis_server.port),
        WORKER_ID="env-worker",
        MAX_CONCURRENT_TASKS="1",
        GRAFLOW_QUEUE=queue_name,
        GRAFLOW_SECRET=SECRET.decode(),
        LOG_LEVEL="debug",
    )
    worker = WorkerProcess(["-m", "graflow.worker.main"], env, tmp_path / "worker.log")
    client = redis_server.client()
    try:
        worker.wait_registered(client, "env-worker")
        result = graflow.run(
            _pipeline(), redis=redis_server.url, queue=queue_name, secret=SECRET, timeout_s=60
        )
        assert result.value == (42, worker.process.pid)
    finally:
        code = worker.terminate()
    assert code == 0, worker.output()
    assert "with 1 thread(s)" in worker.output()


def test_worker_cli_exits_1_when_redis_does_not_answer(config_home: Path, tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # closed again below: nothing listens there
    completed = subprocess.run(
        [sys.executable, "-m", "graflow.worker.main", "--redis-host", "127.0.0.1",
         "--redis-port", str(port)],
        env=_child_env(), capture_output=True, text=True, timeout=_DEADLINE_S,
    )  # fmt: skip
    assert completed.returncode == 1
    assert "unreachable" in completed.stderr


def test_worker_cli_help_and_bad_settings() -> None:
    shown = subprocess.run(
        [sys.executable, "-m", "graflow.worker.main", "--help"],
        env=_child_env(), capture_output=True, text=True, timeout=_DEADLINE_S,
    )  # fmt: skip
    assert shown.returncode == 0
    assert "TaskWorker independent process" in shown.stdout
    for flag in ("--worker-id", "--max-concurrent-tasks", "--poll-interval", "--redis-host",
                 "--redis-port", "--redis-db", "--redis-key-prefix", "--log-level"):  # fmt: skip
        assert flag in shown.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "graflow.worker.main"],
        env=_child_env(MAX_CONCURRENT_TASKS="many"), capture_output=True, text=True,
        timeout=_DEADLINE_S,
    )  # fmt: skip
    assert bad.returncode == 2
    assert "MAX_CONCURRENT_TASKS='many'" in bad.stderr


# -- TaskWorker in this process -----------------------------------------------------------
@pytest.fixture
def task_worker(redis_client: Any, queue_name: str) -> Iterator[TaskWorker]:
    queue = RedisTaskQueue(redis_client=redis_client, queue=queue_name, signer=Signer(SECRET))
    worker = TaskWorker(queue, worker_id=f"inproc-{queue_name}", max_concurrent_tasks=2)
    try:
        yield worker
    finally:
        worker.stop()


@pytest.mark.timeout(90)
def test_task_worker_runs_runs_and_counts_them(
    task_worker: TaskWorker, redis_server: Any, queue_name: str
) -> None:
    assert not task_worker.is_running
    task_worker.start()
    assert task_worker.is_running
    result = graflow.run(
        _pipeline(), redis=redis_server.url, queue=queue_name, secret=SECRET, timeout_s=60
    )
    assert result.value == (42, os.getpid())

    with workflow("failing") as wf:

        @task
        def broken() -> None:
            raise ValueError("broken on purpose")

    with pytest.raises(GraflowRuntimeError, match="broken on purpose") as info:
        graflow.run(wf, redis=redis_server.url, queue=queue_name, secret=SECRET, timeout_s=60)
    assert isinstance(info.value.cause, ValueError)

    metrics = task_worker.get_metrics()
    assert set(metrics) == {
        "worker_id", "is_running", "is_stopping", "active_tasks", "max_concurrent_tasks",
        "tasks_processed", "tasks_succeeded", "tasks_failed", "tasks_timeout",
        "total_execution_time", "average_execution_time", "success_rate", "runtime",
    }  # fmt: skip
    assert metrics["worker_id"] == task_worker.worker_id
    assert metrics["is_running"] is True
    assert metrics["max_concurrent_tasks"] == 2
    assert (metrics["tasks_processed"], metrics["tasks_succeeded"]) == (3, 2)
    assert (metrics["tasks_failed"], metrics["tasks_timeout"]) == (1, 0)
    assert metrics["success_rate"] == pytest.approx(2 / 3)
    assert task_worker.tasks_processed == 3
    assert task_worker.tasks_failed == 1

    task_worker.stop()
    assert not task_worker.is_running
    assert task_worker.get_metrics()["is_running"] is False
    task_worker.stop()  # idempotent


@pytest.mark.timeout(90)
def test_task_worker_runs_tasks_concurrently(
    task_worker: TaskWorker, redis_server: Any, queue_name: str
) -> None:
    with workflow("meet") as wf:

        def member(name: str) -> Any:
            @task(inject_context=True, id=name)
            def meet(ctx: Any) -> str:
                # Each member waits for the other: only two tasks running at once get past.
                channel = ctx.get_channel()
                channel.atomic_add("arrived", 1)
                deadline = time.monotonic() + 15
                while channel.get("arrived") < 2:
                    if time.monotonic() > deadline:
                        raise TimeoutError("the other member never ran alongside")
                    time.sleep(0.01)
                return threading.current_thread().name

            return meet

        parallel(member("left"), member("right"))

    task_worker.start()
    result = graflow.run(wf, redis=redis_server.url, queue=queue_name, secret=SECRET, timeout_s=60)
    assert {result.results["left"], result.results["right"]} == {
        f"{task_worker.worker_id}-0",
        f"{task_worker.worker_id}-1",
    }


@pytest.mark.timeout(90)
def test_task_worker_with_a_custom_handler(
    redis_client: Any, redis_server: Any, queue_name: str
) -> None:
    class Tagging(TaskHandler):
        def _process_task(self, task: Any) -> Any:
            return f"tagged:{task()}"

    class Named(CoreTaskHandler):
        def execute_task(self, task: Any, context: Any) -> Any:
            value = f"named:{task.run()}"
            context.set_result(task.task_id, value)
            return value

    with workflow("custom") as wf:

        @task
        def plain() -> str:
            return "p"

        @task(handler="named")
        def special() -> str:
            return "s"

        plain >> special

    engine = WorkflowEngine()
    engine.register_handler("named", Named())
    queue = RedisTaskQueue(redis_client=redis_client, queue=queue_name, signer=Signer(SECRET))
    worker = TaskWorker(queue, handler=Tagging(), max_concurrent_tasks=1)
    worker.start()
    try:
        result = graflow.run(
            wf, redis=redis_server.url, queue=queue_name, secret=SECRET, engine=engine, timeout_s=60
        )
    finally:
        worker.stop()
    # The worker's handler runs default tasks; a task naming its handler keeps the run's.
    assert result.results == {"plain": "tagged:p", "special": "named:s"}


def test_task_worker_needs_a_redis_queue() -> None:
    with pytest.raises(ValueError, match="TaskWorker requires a RedisTaskQueue instance"):
        TaskWorker(LocalTaskQueue())  # type: ignore[arg-type]


def test_task_worker_upstream_positional_id_and_signal_handlers(redis_client: Any) -> None:
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    queue = RedisTaskQueue(redis_client=redis_client, signer=Signer(SECRET))
    worker = TaskWorker(queue, "upstream-id")  # upstream: TaskWorker(queue, worker_id, ...)
    assert (worker.worker_id, worker.handler) == ("upstream-id", None)
    assert signal.getsignal(signal.SIGTERM) == worker._on_signal
    worker.stop()  # never started: only gives the signals back
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
    with pytest.raises(TypeError, match="handler must be a TaskHandler"):
        TaskWorker(queue, handler=object())  # type: ignore[arg-type]


# -- queues and contexts built the upstream way -------------------------------------------
def test_seed_dummy_context_and_queue_construct(redis_server: Any, config_home: Path) -> None:
    client = redis_server.client(decode_responses=True)
    context = ExecutionContext.create(
        graph=TaskGraph(),
        start_node="dummy",
        queue_backend="redis",
        channel_backend="redis",
        config={"redis_client": client},
    )
    assert isinstance(context.task_queue, RedisTaskQueue)
    assert isinstance(context.channel, RedisChannel)
    queue = RedisTaskQueue(context, redis_client=client)
    assert queue.queue_name == "default"
    assert queue.signer is context.channel.signer


@pytest.mark.timeout(90)
def test_context_with_redis_queue_backend_runs_on_a_task_worker(
    redis_server: Any, config_home: Path, queue_name: str
) -> None:
    redis_config = {
        "host": redis_server.host,
        "port": redis_server.port,
        "db": 0,
        "queue": queue_name,
    }
    wf = _pipeline()
    context = ExecutionContext.create(
        graph=wf.graph,
        start_node="source",
        queue_backend=QueueBackend.REDIS,
        channel_backend="redis",
        config=redis_config,
    )
    queue = context.task_queue
    assert isinstance(queue, RedisTaskQueue)
    assert queue.queue_name == queue_name
    worker = TaskWorker(queue, max_concurrent_tasks=1)
    worker.start()
    try:
        assert context.execute() == (42, os.getpid())
    finally:
        worker.stop()
    assert context.get_result("source") == 21
    assert worker.tasks_succeeded == 2


@pytest.mark.timeout(90)
def test_distributed_queue_enqueue_runs_one_task_on_a_worker(
    redis_client: Any, redis_server: Any, config_home: Path, queue_name: str
) -> None:
    queue = DistributedTaskQueue(redis_client, key_prefix="graflow", queue=queue_name)
    assert isinstance(queue, RedisTaskQueue)
    wf = _pipeline()
    context = ExecutionContext.create(
        wf.graph, "source", channel_backend="redis", config={"redis_client": redis_client}
    )
    assert queue.is_empty()
    assert queue.enqueue(TaskSpec(wf.graph.get_node("source"), context))
    assert queue.size() == 1
    worker = TaskWorker(queue, max_concurrent_tasks=1)
    worker.start()
    try:
        _wait_for(lambda: context.get_result("source") == 21, "the enqueued task's result")
    finally:
        worker.stop()
    assert queue.is_empty()
    assert queue.get_metrics()["enqueued"] == 1


@pytest.mark.timeout(90)
def test_dequeue_and_notify_serve_a_live_run(
    redis_client: Any, redis_server: Any, queue_name: str
) -> None:
    """An upstream-style hand-written worker loop: dequeue, run, notify."""
    queue = RedisTaskQueue(redis_client=redis_client, queue=queue_name, signer=Signer(SECRET))
    outcome: dict[str, Any] = {}

    def produce() -> None:
        outcome["result"] = graflow.run(
            _pipeline(), redis=redis_server.url, queue=queue_name, secret=SECRET, timeout_s=60
        )

    producer = threading.Thread(target=produce)
    producer.start()
    handler = InProcessTaskExecutor()
    served: list[str] = []
    deadline = time.monotonic() + _DEADLINE_S
    while producer.is_alive() and time.monotonic() < deadline:
        spec = queue.dequeue()
        if spec is None:
            time.sleep(0.01)
            continue
        handler.execute_task(spec.executable, spec.execution_context)
        queue.notify_task_completion(spec.task_id, True)
        served.append(spec.task_id)
    producer.join(timeout=_DEADLINE_S)
    assert served == ["source", "double"]
    assert outcome["result"].value == (42, os.getpid())
    assert queue.get_metrics()["dequeued"] == 2


# -- the seed document's handler API without Redis ----------------------------------------
def test_seed_style_handler_hooks() -> None:
    class Registry(TaskHandler):
        def __init__(self, known: set[str]) -> None:
            self.known = known

        def _process_task(self, task: Any) -> bool:
            return task.task_id in self.known

    with workflow("h"):

        @task
        def known() -> int:
            return 1

        @task
        def unknown() -> int:
            return 2

    handler = Registry({"known"})
    assert handler.process_task(known) is True
    assert handler.process_task(unknown) is False
    assert InProcessTaskExecutor().process_task(known) is True
    assert InProcessTaskExecutor().get_name() == "direct"

    class Incomplete(TaskHandler):
        pass

    with pytest.raises(NotImplementedError, match="_process_task"):
        Incomplete().process_task(known)
