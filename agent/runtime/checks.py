"""The create-time checks that need the data plane's knowledge: algorithms, inputs, outputs."""

from __future__ import annotations

from agent.algorithms import registry
from agent.outputs.router import check_output
from agent.outputs.stores import check_store_outputs
from agent.settings import AgentSettings
from agent.sources.resolvers.registry import ResolverSet
from agent.tasks.model import TaskSpec
from agent.tasks.service import SpecCheck


def static_checks(settings: AgentSettings, resolvers: ResolverSet | None = None) -> list[SpecCheck]:
    """Checks TaskService runs on every create and update; only an obs input's object check does network I/O."""

    def algorithm(spec: TaskSpec, service_name: str) -> None:
        registry.validate_task(service_name, spec.service_version, spec.config.common,
                               models_roots=settings.models_roots)

    return [algorithm, *start_checks(settings, resolvers)]


def start_checks(settings: AgentSettings, resolvers: ResolverSet | None = None) -> list[SpecCheck]:
    """Checks the supervisor runs before each start (the agent's config may have changed since the create).

    The algorithm is not among them: starting loads it, and that load is its check (one scan of the
    installed entry points per start, not two)."""
    inputs = resolvers if resolvers is not None else ResolverSet(settings)

    def task_inputs(spec: TaskSpec, _: str) -> None:
        inputs.check(spec)

    def outputs(spec: TaskSpec, _: str) -> None:
        check_output(settings, spec.output)
        check_store_outputs(settings, spec.output)

    return [task_inputs, outputs]
