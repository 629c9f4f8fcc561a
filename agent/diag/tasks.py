"""Each stored task, and each input of the tasks meant to run: resolved, its state in the running agent
(the task's REST view), then opened and sampled."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agent.diag.agent_api import AgentView, TaskViewError
from agent.diag.options import DiagOptions
from agent.diag.report import Check, Level, Progress, masked_check
from agent.diag.state_dir import store_access
from agent.diag.stream import probe_stream, stream_checks
from agent.redact import secrets, url_secrets
from agent.settings import AgentSettings

if TYPE_CHECKING:
    from agent.sources.resolvers.registry import ResolverSet
    from agent.tasks.store import TaskRecord

_TASK_LEVEL = {"RUNNING": Level.OK, "STOPPED": Level.OK, "SUCCEEDED": Level.OK, "STARTING": Level.WARN,
               "ABNORMAL": Level.FAIL, "FAILED": Level.FAIL, "START_FAILED": Level.FAIL}
_RESOLVE_HINTS = {
    "edgecamera": "Check the camera id on the node (device twin) or add it under [[cameras]].",
    "vcn": "Check the VCN address, account and camera code (device_id).",
    "restful": "Check the lookup URL and rtsp_path_in_response against the service's reply.",
    "video_source": "Check video_source_id against [[video_sources]] in the config.",
}
# the agent's stream states in which no frame arrives (failed: a lookup that is not retried, e.g. a refused login)
_STREAM_LOST = ("reconnecting", "stalled", "failed")


def read_tasks(settings: AgentSettings) -> tuple[list[TaskRecord], Check | None]:
    """The stored tasks, with their secrets registered for masking; or the one finding that stands in."""
    from agent.tasks.model import spec_secrets
    from agent.tasks.store import TaskStore

    path, refused = store_access(settings, "tasks.db")
    if refused is not None:
        return [], refused
    if path is None:
        return [], masked_check("task", "tasks", Level.OK, "no tasks stored yet")
    try:
        store = TaskStore(settings.state_dir)
    except Exception as exc:  # a locked or corrupt file is a finding, not a crash
        return [], masked_check("task", "tasks", Level.FAIL, f"cannot read {path}: {type(exc).__name__}: {exc}",
                                "Is the disk full or the file damaged? journalctl -u edge-agent tells more.")
    try:
        records = store.all()
    finally:
        store.close()
    for record in records:
        secrets.register(f"task:{record.id}", spec_secrets(record.spec))
    if not records:
        return [], masked_check("task", "tasks", Level.OK, "no tasks stored")
    return records, None


def check_tasks(records: list[TaskRecord], settings: AgentSettings, options: DiagOptions,
                view: AgentView | None, progress: Progress) -> list[Check]:
    """A row per task; the inputs of those meant to run (stopped ones are not probed: use --url)."""
    from agent.sources.resolvers.registry import ResolverSet
    from agent.tasks.store import Desired

    checks: list[Check] = []
    # The running agent holds the device-twin client id: diag resolves edge cameras from [[cameras]] then.
    resolver_settings = settings if view is None else settings.model_copy(update={"mqtt": None})
    resolvers = ResolverSet(resolver_settings, lookup_timeout_s=options.timeout_s,
                            restful_timeout_s=options.timeout_s)
    try:
        for record in records:
            checks.append(_task_check(record, agent_running=view is not None))
            if record.desired is not Desired.RUNNING:
                continue
            reported = None if view is None else _reported_inputs(record, view)
            for index in range(len(record.spec.input.data)):
                checks += _check_input(record, index, resolvers, settings, options, reported, progress)
    finally:
        resolvers.close()
    return checks


def _task_check(record: TaskRecord, *, agent_running: bool) -> Check:
    from agent.tasks.store import Desired

    level = _TASK_LEVEL.get(record.state.value, Level.WARN)
    if record.desired is Desired.STOPPED and level is Level.FAIL:
        level = Level.WARN
    suffix = "" if agent_running else " (last reported; the agent is not running)"
    detail = f"{record.service_name} {record.state.value}, wanted {record.desired.value}" + \
        (f": {record.status}" if record.status else "") + suffix
    hint = record.error.message if record.error is not None and level is not Level.OK else None
    return masked_check("task", f"task {record.name} ({record.id[:8]})", level, detail, hint, task_id=record.id,
                        state=record.state.value, desired=record.desired.value)


def _reported_inputs(record: TaskRecord, view: AgentView) -> list[dict[str, Any]] | TaskViewError:
    if view.tasks is None:
        return TaskViewError("diag has no API token the agent accepts (see the API token check)")
    try:
        return view.tasks.inputs(record.project_id, record.id)
    except TaskViewError as exc:
        return exc


def _check_input(record: TaskRecord, index: int, resolvers: ResolverSet, settings: AgentSettings,
                 options: DiagOptions, reported: list[dict[str, Any]] | TaskViewError | None,
                 progress: Progress) -> list[Check]:
    from agent.sources.resolvers.base import ResolveError

    subject = f"task {record.name} ({record.id[:8]}) input {index}"
    kind = record.spec.input.type
    progress(f"resolving {subject} ({kind}) …")
    try:
        target = resolvers.resolver_for(record.spec, record.id, index)()
    except ResolveError as exc:
        hint = _RESOLVE_HINTS.get(kind, "Check the input's URL (local files must be under media_roots).")
        return [masked_check("input", f"{subject} resolve", Level.FAIL, f"{kind}: {exc.message}", hint)]
    except Exception as exc:  # a resolver bug is this input's finding
        return [masked_check("input", f"{subject} resolve", Level.FAIL, f"{kind}: {type(exc).__name__}: {exc}")]
    # a looked-up URL (restful, VCN) may carry a password that the task's spec does not hold
    secrets.register(f"task:{record.id}:input:{index}", url_secrets(target.url))
    checks = [masked_check("input", f"{subject} resolve", Level.OK, f"{kind} → {target.masked}", url=target.masked)]
    if reported is not None:
        checks.append(input_state_check(subject, index, reported))
    progress(f"probing {subject}: {target.masked} ({options.sample_s:g} s decode sample) …")
    probe = probe_stream(target, settings.stream, timeout_s=options.timeout_s, sample_s=options.sample_s)
    return checks + stream_checks(subject, probe)


def input_state_check(subject: str, index: int, reported: list[dict[str, Any]] | TaskViewError) -> Check:
    """The input's entry in the running agent's task view (``inputs``, as its pipeline reports them)."""
    row = f"{subject} in the agent"
    if isinstance(reported, TaskViewError):
        return masked_check("input", row, Level.WARN, f"cannot read the agent's task view: {reported}",
                            "The agent's /metrics has the same figures (edge_agent_input_state and others).")
    entry = next((item for item in reported if item.get("index") == index), None)
    if entry is None:
        return masked_check("input", row, Level.WARN, "no running pipeline reports this input",
                            "The task is not running now (schedule, or it ended); see `edge-agent task show`.")
    state = str(entry.get("state") or "unknown").lower()
    fps_in = float(entry.get("fps_in") or 0.0)
    fps_out = float(entry.get("fps") or 0.0)
    reconnects = int(entry.get("reconnects") or 0)
    decode_errors = int(entry.get("decode_errors") or 0)
    dropped = int(entry.get("dropped") or 0)
    shared_by = int(entry.get("shared_by") or 1)
    last_error = entry.get("last_error")
    detail = (f"{state}: {fps_in:g} fps in, {fps_out:g} fps analysed, {reconnects} reconnect(s), "
              f"{decode_errors} decode error(s), {dropped} frame(s) dropped"
              + (f", camera shared by {shared_by} tasks" if shared_by > 1 else "")
              + (f"; last error: {last_error}" if last_error else ""))
    data: dict[str, Any] = {"state": state, "fps_in": fps_in, "fps_out": fps_out, "reconnects": reconnects,
                            "decode_errors": decode_errors, "dropped": dropped, "shared_by": shared_by}
    if state in _STREAM_LOST:
        return masked_check("input", row, Level.FAIL, detail,
                            "The agent cannot keep this stream; the probe below shows why.", **data)
    return masked_check("input", row, Level.OK, detail, **data)
