"""Every upstream import path that graflow provides imports, without optional extras."""

from __future__ import annotations

import importlib

import pytest

PATHS = {
    "graflow": ["task", "workflow", "chain", "parallel", "RetryPolicy", "TaskExecutionContext"],
    "graflow.core.decorators": ["task"],
    "graflow.core.workflow": [
        "workflow",
        "WorkflowContext",
        "current_workflow_context",
        "get_current_workflow_context",
        "require_workflow_context",
        "set_current_workflow_context",
        "clear_workflow_context",
    ],
    "graflow.core.task": [
        "Executable", "Task", "TaskWrapper", "SequentialTask", "ParallelGroup", "chain", "parallel"
    ],
    "graflow.core.context": [
        "ExecutionContext", "TaskExecutionContext", "create_execution_context",
        "execute_with_cycles",
    ],
    "graflow.core.engine": ["WorkflowEngine"],
    "graflow.core.graph": ["TaskGraph"],
    "graflow.core.handler": ["TaskHandler", "TaskResult"],
    "graflow.core.handlers.direct": ["DirectTaskHandler"],
    "graflow.core.handlers.group_policy": [
        "GroupExecutionPolicy", "StrictGroupPolicy", "BestEffortGroupPolicy",
        "CriticalGroupPolicy", "AtLeastNGroupPolicy", "POLICY_REGISTRY",
        "canonicalize_group_policy", "resolve_group_policy",
    ],
    "graflow.core.retry": ["RetryPolicy", "RetryController"],
    "graflow.core.cycle": ["CycleController"],
    "graflow.core.checkpoint": ["CheckpointManager", "CheckpointMetadata"],
    "graflow.core.serialization": ["dumps", "loads", "dump", "load"],
    "graflow.channels.base": ["Channel"],
    "graflow.channels.memory_channel": ["MemoryChannel"],
    "graflow.channels.redis_channel": ["RedisChannel"],
    "graflow.channels.typed": ["TypedChannel", "ChannelTypeRegistry"],
    "graflow.channels.factory": ["ChannelFactory"],
    "graflow.queue.base": ["TaskQueue", "TaskSpec", "TaskStatus"],
    "graflow.queue.local": ["LocalTaskQueue"],
    "graflow.queue.distributed": ["DistributedTaskQueue"],
    "graflow.queue.redis": ["RedisTaskQueue"],
    "graflow.queue.factory": ["QueueBackend", "TaskQueueFactory"],
    "graflow.coordination.coordinator": ["CoordinationBackend"],
    "graflow.coordination.redis_coordinator": ["RedisCoordinator", "record_task_completion"],
    "graflow.worker.worker": ["TaskWorker"],
    "graflow.worker.handler": ["TaskHandler", "InProcessTaskExecutor"],
    "graflow.utils.graph": ["draw_ascii", "draw_mermaid", "draw_dot"],
    "graflow.exceptions": [
        "GraflowError", "GraflowRuntimeError", "CycleLimitExceededError",
        "RetryLimitExceededError", "TaskError", "ParallelGroupError",
        "GraflowWorkflowCanceledError", "GraphCompilationError", "DuplicateTaskError",
        "ConfigError", "as_runtime_error",
    ],
}  # fmt: skip


@pytest.mark.parametrize("module", sorted(PATHS))
def test_upstream_import_path(module: str) -> None:
    loaded = importlib.import_module(module)
    missing = [name for name in PATHS[module] if not hasattr(loaded, name)]
    assert not missing, f"{module} lacks {missing}"
