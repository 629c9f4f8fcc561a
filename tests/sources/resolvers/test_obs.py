"""obs inputs against moto's S3 server: the create-time check, the download cache and its size cap."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.settings import ObsSettings
from agent.sources.resolvers.base import InputRef, ResolveError
from agent.sources.resolvers.obs import ObsResolver
from agent.tasks.errors import ApiError
from agent.tasks.model import TaskInputData
from tests.fixtures.obs import REGION, S3Server

pytestmark = pytest.mark.integration

KIB = 1024


def ref(bucket: str, key: str) -> InputRef:
    return InputRef(kind="obs", data=TaskInputData(bucket=bucket, path=key), vcn=None, index=0,
                    field="input.data[0]")


def resolver(server: S3Server, cache: Path, *, cap: int = 1 << 20, secret: str | None = None) -> ObsResolver:
    settings = ObsSettings(endpoint=server.endpoint, region=REGION, addressing="path", access_key=server.access_key,
                           secret_key=secret or server.secret_key, cache_max_bytes=cap, timeout_s=3)
    return ObsResolver(settings, cache)


def test_without_the_section_the_task_is_refused_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ApiError) as caught:
        ObsResolver(None, tmp_path).check(ref("b", "k.mp4"))
    assert caught.value.params == ["input.type"] and "[obs]" in caught.value.detail


def test_check_names_the_path_with_the_stores_reason(tmp_path: Path, s3_server: S3Server) -> None:
    bucket = s3_server.create_bucket()
    s3_server.put(bucket, "big.mp4", b"x" * (1 << 20 + 1))
    s3_server.put(bucket, "ok.mp4", b"x")
    for obs, key, words in ((resolver(s3_server, tmp_path), "gone.mp4", "NoSuchKey"),
                            (resolver(s3_server, tmp_path), "big.mp4", "cache_max_bytes"),
                            (resolver(s3_server, tmp_path, secret="wrong-secret"), "ok.mp4", "AccessDenied")):
        with pytest.raises(ApiError) as caught:
            obs.check(ref(bucket, key))
        assert caught.value.params == ["input.data[0].path"] and words in caught.value.detail
    resolver(s3_server, tmp_path).check(ref(bucket, "ok.mp4"))


def test_the_cache_keeps_the_newest_downloads_within_its_cap(tmp_path: Path, s3_server: S3Server) -> None:
    bucket = s3_server.create_bucket()
    for name in ("a", "b"):
        s3_server.put(bucket, f"{name}.mp4", name.encode() * (600 * KIB))
    obs = resolver(s3_server, tmp_path / "cache")
    first = obs.resolve(ref(bucket, "a.mp4"))
    assert first.is_file and Path(first.url).read_bytes() == b"a" * (600 * KIB)
    assert obs.resolve(ref(bucket, "a.mp4")).url == first.url  # from the cache
    second = obs.resolve(ref(bucket, "b.mp4"))
    assert Path(second.url).is_file() and not Path(first.url).exists()  # 1.2 MiB > 1 MiB: a was evicted
    s3_server.put(bucket, "b.mp4", b"B" * (600 * KIB))  # replaced under the same key: a new version
    assert Path(obs.resolve(ref(bucket, "b.mp4")).url).read_bytes() == b"B" * (600 * KIB)
    with pytest.raises(ResolveError, match="NoSuchKey"):
        obs.resolve(ref(bucket, "gone.mp4"))
