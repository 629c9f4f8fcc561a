"""The run: every check in the order of the table, then the report and the exit code."""

from __future__ import annotations

import sys
from typing import Any, TextIO

from agent.diag.agent_api import check_api
from agent.diag.broker import check_broker
from agent.diag.config import check_config
from agent.diag.options import DiagOptions
from agent.diag.outbox import check_outbox
from agent.diag.report import Check, Progress, any_failed, render_json, render_table
from agent.diag.sinks import check_sinks
from agent.diag.state_dir import check_state_dir
from agent.diag.stores import check_stores, used_stores
from agent.diag.stream import probe_stream, stream_checks, url_target
from agent.diag.tasks import check_tasks, read_tasks
from agent.redact import secrets, url_secrets
from agent.settings import StreamSettings, config_path


def diagnose(options: DiagOptions, progress: Progress) -> tuple[list[Check], dict[str, Any]]:
    """Every check, in the order of the table; plus facts for the report's header."""
    if options.url is not None:
        secrets.register("diag:url", url_secrets(options.url))
    config, settings = check_config(options)
    checks = [config]
    facts: dict[str, Any] = {"agent_running": None, "node_id": settings.node_id if settings else None}
    if options.url is not None:
        if config_path(options.config) is None:
            checks = []  # a bare stream probe: the missing config file is not a finding
        stream_settings = settings.stream if settings is not None else StreamSettings()
        target = url_target(options.url)
        progress(f"probing {target.masked} ({options.sample_s:g} s decode sample) …")
        probe = probe_stream(target, stream_settings, timeout_s=options.timeout_s, sample_s=options.sample_s)
        return checks + stream_checks("stream", probe), facts
    if settings is None:
        return checks, facts
    checks.append(check_state_dir(settings))
    progress(f"asking the agent's API on {settings.api.listen} …")
    api_checks, view = check_api(settings, options)
    facts["agent_running"] = view is not None
    checks += api_checks
    broker = check_broker(settings, options, view, progress)
    checks += broker
    records, tasks_finding = read_tasks(settings)
    if tasks_finding is not None:
        checks.append(tasks_finding)
    checks += check_tasks(records, settings, options, view, progress)
    checks += check_sinks(records, settings, broker[0], options.timeout_s, progress)
    checks += check_stores(settings, *used_stores(records), progress)
    checks += check_outbox(settings, view)
    return checks, facts


def run_diag(options: DiagOptions, *, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Print the report; 1 when any check FAILs, else 0."""
    checks, facts = diagnose(options, Progress(err))
    print(render_json(checks, facts) if options.as_json else render_table(checks, facts), file=out)
    return 1 if any_failed(checks) else 0
