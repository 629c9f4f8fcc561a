"""The config check: the file diag was given (or the defaults) loads and validates."""

from __future__ import annotations

from agent.diag.options import DiagOptions
from agent.diag.report import Check, Level, masked_check
from agent.redact import secrets
from agent.settings import AgentSettings, config_path, config_secrets, load_settings


def check_config(options: DiagOptions) -> tuple[Check, AgentSettings | None]:
    """The check and, when the config is valid, the settings, whose secrets are registered for masking."""
    from pydantic import ValidationError

    path = config_path(options.config)
    where = str(path) if path is not None else "built-in defaults and EDGE_AGENT_* environment"
    try:
        settings = load_settings(options.config)
    except FileNotFoundError as exc:
        return masked_check("config", "config", Level.FAIL, str(exc),
                            "Pass --config with the agent's file, or set EDGE_AGENT_CONFIG."), None
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        key = ".".join(str(part) for part in first["loc"]) or "(file)"
        return masked_check("config", "config", Level.FAIL, f"{where}: invalid at {key}: {first['msg']}",
                            "Fix that key; docs/configuration.md lists every key and its rules.", key=key), None
    except (OSError, ValueError) as exc:  # unreadable file, TOML syntax error
        return masked_check("config", "config", Level.FAIL, f"{where}: {type(exc).__name__}: {exc}",
                            "Check the file's TOML syntax and that this user may read it."), None
    secrets.register("config", config_secrets(settings))
    if path is None:
        return masked_check("config", "config", Level.WARN, "no config file: using built-in defaults",
                            "Pass --config (e.g. /etc/edge-agent/agent.toml) to check the agent's own settings."
                            ), settings
    return masked_check("config", "config", Level.OK, f"{path} is valid (node {settings.node_id})",
                        path=str(path), node_id=settings.node_id), settings
