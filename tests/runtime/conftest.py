from __future__ import annotations

from collections.abc import Iterator

import pytest

from agent.runtime.app import AgentRuntime


@pytest.fixture
def runtimes() -> Iterator[list[AgentRuntime]]:
    """Agents a test started (append them); stopped at its end, whatever happened."""
    started: list[AgentRuntime] = []
    yield started
    for runtime in started:
        runtime.stop()
