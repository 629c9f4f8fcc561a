"""The configured stores: [obs] (endpoint reachable, keys accepted, each bucket the tasks name exists) and
[dis] (the same for each stream), each with the last reason an event was dead-lettered for it."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from agent.diag.report import Check, Level, Progress, masked_check
from agent.diag.state_dir import store_access
from agent.settings import AgentSettings

if TYPE_CHECKING:
    from agent.tasks.store import TaskRecord

FIX_KEYS = "Check the access key and secret key (and the clock: signatures expire with skew)."


def used_stores(records: Iterable[TaskRecord]) -> tuple[set[str], set[str]]:
    """The buckets (obs inputs and outputs) and DIS streams the stored tasks name."""
    buckets: set[str] = set()
    streams: set[str] = set()
    for record in records:
        spec = record.spec
        if spec.output.obs is not None:
            buckets.add(spec.output.obs.bucket)
        if spec.output.dis is not None:
            streams.add(spec.output.dis.stream_name)
        if spec.input.type == "obs":
            buckets.update(item.bucket for item in spec.input.data if item.bucket)
    return buckets, streams


def check_stores(settings: AgentSettings, buckets: set[str], streams: set[str], progress: Progress) -> list[Check]:
    checks: list[Check] = []
    if settings.obs is not None:
        progress(f"asking the object store at {settings.obs.endpoint} …")
        checks += _obs_checks(settings, buckets)
    elif buckets:
        checks.append(masked_check("store", "obs", Level.FAIL, f"tasks use buckets {sorted(buckets)}, but there "
                                   "is no [obs] section", "Configure [obs] again, or update those tasks."))
    if settings.dis is not None:
        progress(f"asking DIS at {settings.dis.endpoint} …")
        checks += _dis_checks(settings, streams)
    elif streams:
        checks.append(masked_check("store", "dis", Level.FAIL, f"tasks use DIS streams {sorted(streams)}, but "
                                   "there is no [dis] section", "Configure [dis] again, or update those tasks."))
    return checks


def _obs_checks(settings: AgentSettings, buckets: set[str]) -> list[Check]:
    from agent.obs_client import failure, new_client

    assert settings.obs is not None
    subject = f"obs {settings.obs.endpoint}"
    try:
        client = new_client(settings.obs)
    except OSError as exc:
        return [masked_check("store", subject, Level.FAIL, f"cannot read the secret key file: {exc.strerror}",
                             "Fix obs.secret_key_file (path, permissions).")]
    checks = []
    targets: list[str | None] = [*sorted(buckets)] or [None]  # no task names a bucket: list them to test the keys
    for bucket in targets:
        what = f"{subject} bucket {bucket}" if bucket else subject
        try:
            if bucket is None:
                client.list_buckets()
                detail = "reachable, keys accepted"
            else:
                next(iter(client.list_objects(bucket)), None)
                detail = "reachable, keys accepted, bucket exists"
        except Exception as exc:
            reason = failure(exc).reason
            hint = FIX_KEYS if "Signature" in reason or "AccessKey" in reason or "AccessDenied" in reason else (
                "Create the bucket, or fix the tasks' bucket." if "NoSuchBucket" in reason else
                "Is the endpoint right and reachable from this box (DNS, firewall, proxy)?")
            checks.append(masked_check("store", what, Level.FAIL, reason, hint))
            continue
        checks.append(_with_dead_letters(settings, "obs", what, detail))
    return checks


def _dis_checks(settings: AgentSettings, streams: set[str]) -> list[Check]:
    from agent.outputs.dis_client import DisClient

    assert settings.dis is not None
    subject = f"dis {settings.dis.endpoint}"
    try:
        keys = settings.dis_key_pair()
    except OSError as exc:
        return [masked_check("store", subject, Level.FAIL, f"cannot read the secret key file: {exc.strerror}",
                             "Fix the secret_key_file of [dis] (or of [obs] with keys_from_obs).")]
    if not streams:
        return [masked_check("store", subject, Level.OK, "configured; no task sends to DIS yet")]
    client = DisClient(settings.dis, keys)
    checks = []
    try:
        for stream in sorted(streams):
            status, reason = client.describe_stream(stream)
            what = f"{subject} stream {stream}"
            if 200 <= status < 300:
                checks.append(_with_dead_letters(settings, "dis", what, f"reachable, keys accepted, {reason}"))
            elif status in (401, 403):
                checks.append(masked_check("store", what, Level.FAIL, reason, FIX_KEYS))
            elif status == 0:
                checks.append(masked_check("store", what, Level.FAIL, reason,
                                           "Is the endpoint right and reachable from this box?"))
            else:
                checks.append(masked_check("store", what, Level.FAIL, reason,
                                           "Create the stream in the DIS console, or fix the tasks' stream_name."))
    finally:
        client.close()
    return checks


def _with_dead_letters(settings: AgentSettings, sink: str, subject: str, detail: str) -> Check:
    """OK, or WARN with the newest dead letter's reason when events for this sink were given up on."""
    path, _ = store_access(settings, "outbox.db")
    if path is None:
        return masked_check("store", subject, Level.OK, detail)
    from agent.outputs.outbox import Outbox

    try:
        outbox = Outbox(path, max_bytes=settings.outbox.max_bytes)
    except Exception:  # the outbox check reports an unreadable outbox
        return masked_check("store", subject, Level.OK, detail)
    try:
        letters = [letter for letter in outbox.dead_letters(1000) if letter["sink"] == sink]
    finally:
        outbox.close()
    if not letters:
        return masked_check("store", subject, Level.OK, detail)
    return masked_check("store", subject, Level.WARN, f"{detail}; {len(letters)} dead letter(s), the last: "
                        f"{letters[0]['reason']}", "Fix the cause; GET /v2/<project>/dead-letters lists them.")
