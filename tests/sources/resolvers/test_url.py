from __future__ import annotations

import os
from pathlib import Path

import pytest

from agent.sources.resolvers.base import InputRef, ResolveError
from agent.sources.resolvers.url import UrlResolver
from agent.tasks.errors import ApiError
from agent.tasks.model import TaskInputData


def ref(url: str) -> InputRef:
    return InputRef(kind="url", data=TaskInputData(url=url), vcn=None, index=0, field="input.data[0]")


@pytest.fixture
def media(tmp_path: Path) -> Path:
    root = tmp_path / "media"
    root.mkdir()
    (root / "clip.mp4").write_bytes(b"\x00" * 16)
    (root / "sub").mkdir()
    (root / "sub" / "deep.mkv").write_bytes(b"\x00" * 16)
    (tmp_path / "secret.mp4").write_bytes(b"\x00" * 16)
    return root


@pytest.mark.parametrize("url", [
    "rtsp://cam.local:554/stream1",
    "rtsps://cam.local/stream1",
    "rtmp://live.example/app/key",
    "http://cdn.example/live/index.m3u8",
    "https://cdn.example/clip.mp4",
])
def test_network_urls_pass_through(url: str) -> None:
    resolver = UrlResolver([])
    resolver.check(ref(url))
    assert resolver.resolve(ref(url)).url == url


def test_http_files_play_to_their_end_but_hls_is_live() -> None:
    resolver = UrlResolver([])
    assert resolver.resolve(ref("https://cdn.example/a/clip.MP4")).is_file
    assert not resolver.resolve(ref("http://cdn.example/live/index.m3u8")).is_file
    assert not resolver.resolve(ref("rtsp://cam/stream.mp4")).is_file


@pytest.mark.parametrize("url", ["ftp://host/x.mp4", "smb://host/share/x.mp4", "gopher://host/", "javascript:x"])
def test_unsupported_schemes_are_refused_naming_the_field(url: str) -> None:
    with pytest.raises(ApiError) as caught:
        UrlResolver([]).check(ref(url))
    assert caught.value.params == ["input.data[0].url"]
    with pytest.raises(ResolveError) as failed:
        UrlResolver([]).resolve(ref(url))
    assert not failed.value.retryable


def test_a_url_without_host_is_refused() -> None:
    with pytest.raises(ApiError, match="no host"):
        UrlResolver([]).check(ref("rtsp:///stream"))


def test_local_files_inside_media_roots_play_as_files(media: Path) -> None:
    resolver = UrlResolver([media])
    for url in (str(media / "clip.mp4"), f"file://{media / 'sub' / 'deep.mkv'}"):
        resolver.check(ref(url))
        target = resolver.resolve(ref(url))
        assert target.is_file
        assert Path(target.url).is_file()


def test_dot_dot_cannot_escape_a_media_root(media: Path) -> None:
    escape = f"{media}/sub/../../secret.mp4"
    assert os.path.exists(escape)
    with pytest.raises(ApiError, match="outside the agent's media_roots") as caught:
        UrlResolver([media]).check(ref(escape))
    assert caught.value.params == ["input.data[0].url"]
    with pytest.raises(ResolveError):
        UrlResolver([media]).resolve(ref(f"file://{escape}"))


def test_symlinks_are_resolved_before_the_containment_check(media: Path, tmp_path: Path) -> None:
    (media / "link.mp4").symlink_to(tmp_path / "secret.mp4")
    (media / "linkdir").symlink_to(tmp_path, target_is_directory=True)
    for url in (str(media / "link.mp4"), str(media / "linkdir" / "secret.mp4")):
        with pytest.raises(ApiError, match="outside"):
            UrlResolver([media]).check(ref(url))


def test_a_symlinked_media_root_still_serves_its_files(media: Path, tmp_path: Path) -> None:
    alias = tmp_path / "alias"
    alias.symlink_to(media, target_is_directory=True)
    target = UrlResolver([alias]).resolve(ref(str(alias / "clip.mp4")))
    assert target.url == str((media / "clip.mp4").resolve())


def test_local_files_need_media_roots_an_absolute_path_and_an_existing_file(media: Path) -> None:
    with pytest.raises(ApiError, match="no media_roots"):
        UrlResolver([]).check(ref(str(media / "clip.mp4")))
    with pytest.raises(ApiError, match="absolute"):
        UrlResolver([media]).check(ref("clip.mp4"))
    with pytest.raises(ApiError, match="no such file"):
        UrlResolver([media]).check(ref(str(media / "missing.mp4")))
    with pytest.raises(ApiError, match="no such file"):
        UrlResolver([media]).check(ref(str(media / "sub")))


def test_file_urls_naming_another_host_are_refused(media: Path) -> None:
    with pytest.raises(ApiError, match="local file"):
        UrlResolver([media]).check(ref(f"file://server{media}/clip.mp4"))
