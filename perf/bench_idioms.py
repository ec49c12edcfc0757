"""W1 and W3 written the ways people write them, on every backend, in one invocation.

    python perf/bench_idioms.py [--processes 2] [--repeat 3] [--backends inproc,pool,redis]
                                [--w1 shared,bound,...] [--w3 shared,get_result,...]
                                [--json out.json]

perf/bench_mp.py and perf/bench_redis.py time the shapes the engine has fast paths for (one
shared function, no arguments). Here the same workloads are written in each form the README
and upstream Graflow teach; the timed span includes building the workflow.

W1, 10,000 tasks in one parallel group (tasks/s):
  shared     TaskWrapper(f"t{i}", noop): one function shared by every task
  bound      bound instances of one module-level @task: echo(task_id=f"t{i}", i=i),
             grouped with parallel(*tasks) (examples/word_count.py)
  nested     the same, the @task defined inside the `with workflow` block (examples/pipeline.py)
  partial    a distinct functools.partial(noop_arg, i) per task
  lambda     a distinct closure per task: TaskWrapper(f"t{i}", make(i)), make returning
             `lambda: i` (not `lambda i=i: i`: a parameter, even with a default, is looked
             up among the run's channel keys per task, a round trip on Redis)
  context    bound instances of an @task(inject_context=True) that reads its task id
W3, a chain of 1,000 dependent tasks (us/hop):
  shared     TaskWrapper(f"h{i}", noop) chained
  get_result each task a closure that reads its predecessor with context.get_result
  get_bound  bound instances of one @task(inject_context=True) reading ctx.get_result(prev)
  param      functions made at run time (exec) taking the predecessor's result by
             parameter name, as `transform(extract)` does
  param_cl   the same made as closures with a **kwargs-free signature built per hop

Baselines in the same invocation, same number of processes (fork): W1
multiprocessing.Pool.map(noop_arg, range(n), chunksize=1), Pool.apply_async per task and
ProcessPoolExecutor.submit per task; W3 Pool.apply per hop and ProcessPoolExecutor per hop.
Backends: in-process (graflow.run(processes=0)), a Supervisor of --processes workers, and
one Redis node (a fresh redis-server on a free loopback port and `graflow supervisor`).
Every repeat runs each form once, round-robin, so that the host's swings hit every form;
each figure is the median over --repeat rounds. Nothing is asserted beyond results.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import functools
import json
import multiprocessing as mp
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import graflow
from graflow import TaskExecutionContext, parallel, task
from graflow.core.task import ParallelGroup, TaskWrapper, chain
from graflow.core.workflow import WorkflowContext, workflow

W1_FORMS = ("shared", "bound", "nested", "partial", "lambda", "context")
W3_FORMS = ("shared", "get_result", "get_bound", "param", "param_cl")
BACKENDS = ("inproc", "pool", "redis")


def noop() -> None:
    return None


def noop_arg(_: Any) -> None:
    return None


def increment(x: int) -> int:
    return x + 1


@task
def echo(i: int) -> int:
    return i


@task(inject_context=True)
def whoami(ctx: TaskExecutionContext, i: int) -> int:
    return i if ctx.task_id == f"t{i}" else -1


@task(inject_context=True)
def step_from(ctx: TaskExecutionContext, prev: str | None) -> int:
    return 0 if prev is None else ctx.get_result(prev) + 1


# -- W1 forms: each builds a workflow of n tasks and returns it with its start node ----------
def w1_shared(n: int) -> tuple[WorkflowContext, str]:
    with workflow("w1-shared") as wf:
        ParallelGroup([TaskWrapper(f"t{i}", noop) for i in range(n)], name="g")
    return wf, "g"


def w1_bound(n: int) -> tuple[WorkflowContext, str]:
    with workflow("w1-bound") as wf:
        parallel(*[echo(task_id=f"t{i}", i=i) for i in range(n)]).set_group_name("g")
    return wf, "g"


def w1_nested(n: int) -> tuple[WorkflowContext, str]:
    with workflow("w1-nested") as wf:

        @task
        def count(i: int) -> int:
            return i

        parallel(*[count(task_id=f"t{i}", i=i) for i in range(n)]).set_group_name("g")
    return wf, "g"


def w1_partial(n: int) -> tuple[WorkflowContext, str]:
    with workflow("w1-partial") as wf:
        members = [TaskWrapper(f"t{i}", functools.partial(noop_arg, i)) for i in range(n)]
        ParallelGroup(members, name="g")
    return wf, "g"


def _constant(i: int) -> Callable[[], int]:
    return lambda: i


def w1_lambda(n: int) -> tuple[WorkflowContext, str]:
    with workflow("w1-lambda") as wf:
        ParallelGroup([TaskWrapper(f"t{i}", _constant(i)) for i in range(n)], name="g")
    return wf, "g"


def w1_context(n: int) -> tuple[WorkflowContext, str]:
    with workflow("w1-context") as wf:
        parallel(*[whoami(task_id=f"t{i}", i=i) for i in range(n)]).set_group_name("g")
    return wf, "g"


# -- W3 forms: each builds a chain of `hops` tasks whose last returns hops - 1 (or None) -----
def w3_shared(hops: int) -> tuple[WorkflowContext, str]:
    with workflow("w3-shared") as wf:
        chain(*[TaskWrapper(f"h{i}", noop) for i in range(hops)])
    return wf, "h0"


def _reader(prev: str | None) -> Callable[..., int]:
    if prev is None:
        return lambda ctx: 0
    return lambda ctx: ctx.get_result(prev) + 1


def w3_get_result(hops: int) -> tuple[WorkflowContext, str]:
    with workflow("w3-get-result") as wf:
        ids = [f"h{i}" for i in range(hops)]
        tasks = [
            TaskWrapper(t, _reader(ids[i - 1] if i else None), inject_context=True)
            for i, t in enumerate(ids)
        ]
        chain(*tasks)
    return wf, "h0"


def w3_get_bound(hops: int) -> tuple[WorkflowContext, str]:
    with workflow("w3-get-bound") as wf:
        chain(*[step_from(task_id=f"h{i}", prev=f"h{i - 1}" if i else None) for i in range(hops)])
    return wf, "h0"


def _exec_step(previous: str | None) -> Callable[..., int]:
    """A function whose one parameter is named after its predecessor, made with exec."""
    if previous is None:
        return lambda: 0
    namespace: dict[str, Any] = {"increment": increment, "__name__": __name__}
    exec(f"def step({previous}):\n    return increment({previous})\n", namespace)
    return namespace["step"]  # type: ignore[no-any-return]


def w3_param(hops: int) -> tuple[WorkflowContext, str]:
    with workflow("w3-param") as wf:
        ids = [f"d{i}" for i in range(hops)]
        chain(*[TaskWrapper(t, _exec_step(ids[i - 1] if i else None)) for i, t in enumerate(ids)])
    return wf, "d0"


def _closure_step(previous: str | None) -> Callable[..., int]:
    """A closure whose signature names its predecessor (``__signature__`` set per hop)."""
    import inspect  # noqa: PLC0415 - only this form needs it

    if previous is None:
        return lambda: 0

    def step(**kwargs: int) -> int:
        return increment(kwargs[previous])

    step.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(previous, inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    )
    return step


def w3_param_cl(hops: int) -> tuple[WorkflowContext, str]:
    with workflow("w3-param-cl") as wf:
        ids = [f"c{i}" for i in range(hops)]
        steps = [_closure_step(ids[i - 1] if i else None) for i in range(hops)]
        chain(*[TaskWrapper(t, steps[i]) for i, t in enumerate(ids)])
    return wf, "c0"


W1_BUILD = {name: globals()[f"w1_{name}"] for name in W1_FORMS}
W3_BUILD = {name: globals()[f"w3_{name}"] for name in W3_FORMS}
W3_LAST: dict[str, Any] = {"shared": None}


# -- running one form on one backend ----------------------------------------------------------
class Backend:
    """How a workflow is run: in-process, on a Supervisor, or against a Redis URL."""

    def __init__(self, name: str, sup: graflow.Supervisor | None, url: str | None) -> None:
        self.name, self.sup, self.url = name, sup, url

    def run(self, wf: WorkflowContext, start: str) -> Any:
        if self.name == "pool":
            assert self.sup is not None
            return self.sup.run(wf, start=start)
        if self.name == "redis":
            return graflow.run(wf, start=start, redis=self.url)
        return graflow.run(wf, start=start, processes=0)


def time_w1(backend: Backend, form: str, n: int) -> float:
    start = time.perf_counter()
    wf, first = W1_BUILD[form](n)
    result = backend.run(wf, first)
    elapsed = time.perf_counter() - start
    assert len(result.results) == n + 1, (form, len(result.results))
    return n / elapsed


def time_w3(backend: Backend, form: str, hops: int) -> float:
    start = time.perf_counter()
    wf, first = W3_BUILD[form](hops)
    result = backend.run(wf, first)
    elapsed = time.perf_counter() - start
    expected = None if form == "shared" else hops - 1
    assert result.value == expected and len(result.results) == hops, (form, result.value)
    return elapsed / hops * 1e6


# -- the standard library in the same invocation ----------------------------------------------
def pool_map(pool: Any, n: int) -> float:
    start = time.perf_counter()
    pool.map(noop_arg, range(n), chunksize=1)
    return n / (time.perf_counter() - start)


def pool_apply_async(pool: Any, n: int) -> float:
    start = time.perf_counter()
    pending = [pool.apply_async(noop_arg, (i,)) for i in range(n)]
    for result in pending:
        result.get()
    return n / (time.perf_counter() - start)


def ppe_submit(ex: cf.ProcessPoolExecutor, n: int) -> float:
    start = time.perf_counter()
    futures = [ex.submit(noop_arg, i) for i in range(n)]
    for future in futures:
        future.result()
    return n / (time.perf_counter() - start)


def pool_apply_hop(pool: Any, hops: int) -> float:
    start = time.perf_counter()
    value = 0
    for _ in range(hops - 1):
        value = pool.apply(increment, (value,))
    assert value == hops - 1
    return (time.perf_counter() - start) / hops * 1e6


def ppe_hop(ex: cf.ProcessPoolExecutor, hops: int) -> float:
    start = time.perf_counter()
    value = 0
    for _ in range(hops - 1):
        value = ex.submit(increment, value).result()
    assert value == hops - 1
    return (time.perf_counter() - start) / hops * 1e6


# -- Redis: a fresh server and one node --------------------------------------------------------
def start_redis_node(processes: int) -> tuple[Callable[[], None], str]:
    """A redis-server (as perf/bench_redis.py starts it) and one node; a stopper, the URL."""
    from bench_redis import start_server  # noqa: PLC0415 - perf/ is not a package

    server, url = start_server()
    node = subprocess.Popen(
        [sys.executable, "-m", "graflow", "supervisor", "--redis", url,
         "--processes", str(processes)],
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip

    def stop() -> None:
        os.killpg(node.pid, signal.SIGTERM)
        node.wait(30)
        server.terminate()
        server.wait()

    return stop, url


# -- the invocation -----------------------------------------------------------------------------
def _rounds(repeat: int, jobs: dict[str, Callable[[], float]]) -> dict[str, float]:
    """Each job once per round, round-robin; the median of each over ``repeat`` rounds."""
    samples: dict[str, list[float]] = {name: [] for name in jobs}
    for _ in range(repeat):
        for name, job in jobs.items():
            samples[name].append(job())
    return {name: statistics.median(values) for name, values in samples.items()}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Every selected form on every selected backend, and the baselines, in one process."""
    ctx = mp.get_context("fork")
    out: dict[str, Any] = {"processes": args.processes, "repeat": args.repeat}
    backends = [b for b in BACKENDS if b in args.backends]
    stop_redis: Callable[[], None] | None = None
    url = None
    if "redis" in backends:
        stop_redis, url = start_redis_node(args.processes)
    try:
        with (
            graflow.Supervisor(args.processes) as sup,
            cf.ProcessPoolExecutor(args.processes, mp_context=ctx) as ex,
            ctx.Pool(args.processes) as pool,
        ):
            list(ex.map(noop_arg, range(100)))
            made = {b: Backend(b, sup, url) for b in backends}
            for backend in made.values():  # warm up: workers forked, node connected
                time_w3(backend, "shared", 50)
                time_w1(backend, "shared", 200)
            w1_jobs: dict[str, Callable[[], float]] = {
                "Pool.map(chunksize=1)": lambda: pool_map(pool, args.tasks),
                "Pool.apply_async": lambda: pool_apply_async(pool, args.tasks),
                "ProcessPoolExecutor": lambda: ppe_submit(ex, args.tasks),
            }
            w3_jobs: dict[str, Callable[[], float]] = {
                "Pool.apply": lambda: pool_apply_hop(pool, args.hops),
                "ProcessPoolExecutor": lambda: ppe_hop(ex, args.hops),
            }
            for b, backend in made.items():
                for form in args.w1:
                    w1_jobs[f"{b}:{form}"] = functools.partial(time_w1, backend, form, args.tasks)
                for form in args.w3:
                    w3_jobs[f"{b}:{form}"] = functools.partial(time_w3, backend, form, args.hops)
            out["W1"] = _rounds(args.repeat, w1_jobs) if args.w1 else {}
            out["W3"] = _rounds(args.repeat, w3_jobs) if args.w3 else {}
    finally:
        if stop_redis is not None:
            stop_redis()
    return out


def report(out: dict[str, Any], args: argparse.Namespace) -> None:
    """The figures, each with its ratio to the baseline the targets are set against."""
    print(
        f"graflow idioms: {args.processes} processes, median of {args.repeat} rounds, "
        f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}"
    )
    w1, w3 = out["W1"], out["W3"]
    if w1:
        base = w1["Pool.map(chunksize=1)"]
        print(f"W1 {args.tasks:,} tasks, tasks/s (ratio to Pool.map; to the backend's fastest)")
        for name in ("Pool.map(chunksize=1)", "Pool.apply_async", "ProcessPoolExecutor"):
            print(f"  {name:<26}{w1[name]:>10,.0f}   x{w1[name] / base:.2f}")
        for b in BACKENDS:
            forms = {f: w1[f"{b}:{f}"] for f in W1_FORMS if f"{b}:{f}" in w1}
            if forms:
                best = max(forms.values())
                for form, value in forms.items():
                    print(
                        f"  {b + ' ' + form:<26}{value:>10,.0f}   x{value / base:.2f}"
                        f"   {value / best:>4.0%} of {b}'s fastest"
                    )
    if w3:
        base = w3["Pool.apply"]
        print(f"W3 {args.hops:,} hops, us/hop (ratio to Pool.apply per hop)")
        for name in ("Pool.apply", "ProcessPoolExecutor"):
            print(f"  {name:<26}{w3[name]:>10,.1f}   x{w3[name] / base:.2f}")
        for b in BACKENDS:
            for form in W3_FORMS:
                value = w3.get(f"{b}:{form}")
                if value is not None:
                    print(f"  {b + ' ' + form:<26}{value:>10,.1f}   x{value / base:.2f}")


def _names(text: str, known: tuple[str, ...]) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise SystemExit(f"unknown form or backend {unknown}; known: {', '.join(known)}")
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--hops", type=int, default=1000)
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--w1", default=",".join(W1_FORMS), help="W1 forms ('' for none)")
    parser.add_argument("--w3", default=",".join(W3_FORMS), help="W3 forms ('' for none)")
    parser.add_argument("--json", dest="json_path")
    args = parser.parse_args(argv)
    args.backends = _names(args.backends, BACKENDS)
    args.w1 = _names(args.w1, W1_FORMS)
    args.w3 = _names(args.w3, W3_FORMS)
    out = measure(args)
    report(out, args)
    if args.json_path:
        with open(args.json_path, "w") as fh:
            json.dump(out, fh, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
