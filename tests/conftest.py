"""Shared fixtures: every test starts with no workflow current in its thread."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from graflow.core.workflow import clear_workflow_context


@pytest.fixture(autouse=True)
def _no_current_workflow() -> Iterator[None]:
    clear_workflow_context()
    yield
    clear_workflow_context()
