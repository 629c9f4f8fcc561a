"""``obs`` inputs: a video object in the [obs] store, downloaded into ``{state_dir}/cache/obs`` and played
as a local file (SUCCEEDED at its end, like a ``url`` file input).

Downloaded rather than streamed from a presigned GET URL: FFmpeg's https client does not verify the
server's certificate unless told to, and whether it can be given ``obs.ca_file`` depends on the TLS
library the PyAV wheel was built with, so the store's TLS settings would hold for outputs but not for
inputs; a presigned URL is also a bearer credential in the demuxer's hands (and its logs) for its
lifetime; and a network blip in the middle of a file would replay it from the start, analysing it twice.
The download goes through the same client as the obs output (keys, TLS, timeouts), the file then plays
and seeks locally, and a restart or a second task on the same object finds it in the cache. The price is
disk space, bounded by ``obs.cache_max_bytes`` (least recently used files go first; a larger object is
refused at create time), and a start delay of one download.

The create-time check asks the store for the object (HEAD): a missing object, bucket or permission is a
400 naming ``input.data[i].path`` with the store's reason. An unreachable store is not: the task is
created and its input retries with backoff, showing the reason, until the store answers.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from minio import Minio

from agent.obs_client import failure, new_client
from agent.settings import ObsSettings
from agent.sources.resolvers.base import InputRef, InputResolver, ResolveError
from agent.sources.target import StreamTarget
from agent.tasks.errors import invalid, missing_section

log = logging.getLogger(__name__)

CHUNK = 1 << 20
_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,8}$")  # kept on the cached file: FFmpeg probes by content and name


class ObsResolver(InputResolver):
    kind = "obs"

    def __init__(self, settings: ObsSettings | None, cache_dir: Path) -> None:
        self._settings = settings
        self._cache_dir = cache_dir
        self._client: Minio | None = None
        self._client_lock = threading.Lock()
        self._lock = threading.Lock()  # one download at a time: the cache's size accounting stays simple

    def check(self, ref: InputRef) -> None:
        if self._settings is None:
            raise missing_section("input.type", "obs")
        bucket, key = ref.data.bucket or "", ref.data.path or ""
        try:
            size = self._client_for().stat_object(bucket, key).size or 0
        except Exception as exc:
            what = failure(exc)
            if not what.permanent:
                log.warning("%s: cannot check obs object %s/%s now (%s); the input will retry", ref.field, bucket,
                            key, what.reason)
                return
            raise invalid(f"{ref.field}.path", f"the store refuses object {key!r} in bucket {bucket!r}: "
                                               f"{what.reason}",
                          "Check the bucket and key, and that [obs]'s access key may read them.") from None
        if size > self._settings.cache_max_bytes:
            raise invalid(f"{ref.field}.path", f"the object is {size} bytes, more than obs.cache_max_bytes "
                                               f"({self._settings.cache_max_bytes})",
                          "Raise obs.cache_max_bytes if the disk has room, or cut the video.")

    def resolve(self, ref: InputRef) -> StreamTarget:
        if self._settings is None:
            raise ResolveError("obs inputs need an [obs] section in the agent's config", retryable=False)
        bucket, key = ref.data.bucket or "", ref.data.path or ""
        try:
            path = self._cached(bucket, key)
        except ResolveError:
            raise
        except Exception as exc:
            what = failure(exc)
            raise ResolveError(f"obs object {bucket}/{key}: {what.reason}", retryable=not what.permanent) from None
        return StreamTarget(url=str(path), is_file=True)

    def _client_for(self) -> Minio:
        assert self._settings is not None
        with self._client_lock:
            if self._client is None:
                self._client = new_client(self._settings)
            return self._client

    def _cached(self, bucket: str, key: str) -> Path:
        """The local copy of the object's current version, downloaded now if the cache lacks it."""
        assert self._settings is not None
        client = self._client_for()
        stat = client.stat_object(bucket, key)
        size = stat.size or 0
        if size > self._settings.cache_max_bytes:
            raise ResolveError(f"obs object {bucket}/{key} is {size} bytes, more than obs.cache_max_bytes",
                               retryable=False)
        # the ETag names the version: an object replaced under the same key is downloaded again
        digest = hashlib.sha256(f"{bucket}\0{key}\0{stat.etag}".encode()).hexdigest()[:32]
        suffix = _SUFFIX.search(key)
        path = self._cache_dir / (digest + (suffix.group(0).lower() if suffix else ""))
        with self._lock:
            if path.is_file() and path.stat().st_size == size:
                os.utime(path)  # recently used: evicted last
                return path
            self._cache_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._make_room(size)
            partial = path.with_name(path.name + ".part")
            response = client.get_object(bucket, key)
            try:
                with partial.open("wb") as out:
                    for chunk in response.stream(CHUNK):
                        out.write(chunk)
            finally:
                response.close()
                response.release_conn()
            os.replace(partial, path)
        log.info("obs object %s/%s downloaded (%d bytes) to %s", bucket, key, size, path)
        return path

    def _make_room(self, incoming: int) -> None:
        """Delete the least recently used cached files (and stale partial ones) until ``incoming`` fits."""
        assert self._settings is not None
        files = [(entry.stat().st_mtime, entry.stat().st_size, Path(entry.path)) for entry in
                 os.scandir(self._cache_dir) if entry.is_file()]
        total = sum(size for _, size, _ in files)
        for _, size, path in sorted(files):
            if total + incoming <= self._settings.cache_max_bytes:
                break
            path.unlink(missing_ok=True)  # a reader that has it open keeps reading: Linux frees it after
            total -= size
