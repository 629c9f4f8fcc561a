"""The REST API token: configured (value or file), else generated once into the state directory."""

from __future__ import annotations

import os
import secrets as random_secrets
from pathlib import Path

from agent.settings import AgentSettings

GENERATED_NAME = "api-token"


def generated_token_path(settings: AgentSettings) -> Path:
    return settings.state_dir / GENERATED_NAME


def api_token(settings: AgentSettings, *, create: bool) -> str | None:
    """The token clients must send. With ``create`` (the agent itself), one is generated if none exists."""
    configured = settings.api.resolved_token()
    if configured:
        return configured
    path = generated_token_path(settings)
    if path.is_file():
        return path.read_text(encoding="utf-8").strip() or None
    if not create:
        return None
    settings.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    token = random_secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(token + "\n")
    return token
