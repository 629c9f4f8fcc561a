"""``edge-agent diag``: every check an operator needs to find a fault in one look.

Config, state directory, broker (connect, subscribe, round trip), REST API, then per task and input the
resolution, the input's state in the running agent, an open of the stream and a decode sample, and per
sink its reachability and outbox. Each check is OK, WARN or FAIL with a one-line hint; the exit code is 1
when anything FAILs.

It works with the agent stopped (it reads the config and the state directory) and with it running (it
asks the API: /healthz, /metrics, a token check and each task's view, and reads the task store, which
SQLite's WAL mode lets two processes share). It never writes to the state directory except one temporary
file for the writability test, and it opens the stores only as the user who owns them, so that a ``sudo
edge-agent diag`` cannot leave root-owned WAL files that a running agent could not write. Probes run one
after the other, so a decode sample measures what this box decodes for one stream, not what four at once
would.

Modules, one job each: ``report`` (a check, the table and the JSON), ``options``, ``config`` and
``state_dir`` (the local checks), ``agent_api`` (the running agent), ``broker`` (the MQTT round trip),
``stream`` (open and decode sample of one stream), ``tasks`` (tasks and their inputs), ``sinks``
(webhook, event_center), ``outbox``, and ``run`` (the order of the checks). Every string leaves through
``report.masked_check``; the secrets it masks are registered first.
"""

from agent.diag.options import DiagOptions
from agent.diag.run import run_diag

__all__ = ["DiagOptions", "run_diag"]
