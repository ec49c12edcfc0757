"""The tracer hooks of a run on worker processes: every attempt, in the driver."""

from __future__ import annotations

import graflow
from tests.unit.test_trace_interface import Recorder, chain_graph


def test_pool_run_reports_every_attempt_to_the_tracer() -> None:
    tracer = Recorder()
    result = graflow.run(chain_graph(), processes=2, tracer=tracer)
    assert result.value == 2
    starts = [c[1] for c in tracer.calls if c[0] == "task_start"]
    ends = [(c[1], c[2]) for c in tracer.calls if c[0] == "task_end"]
    assert starts == ["a", "b"]
    assert ends == [("a", 1), ("b", 2)]
    assert tracer.calls[0][0] == "workflow_start" and tracer.calls[-1] == ("workflow_end", 2)
    assert tracer.get_runtime_graph().nodes["b"]["status"] == "completed"
