"""diag's store checks against moto's S3 server and the DIS server: reachable, keys accepted, bucket or
stream exists; and ``edge-agent diag`` shows them."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import tomllib

from agent.diag.report import Level, Progress
from agent.diag.stores import check_stores
from agent.settings import AgentSettings
from tests.diag.test_command import diag_json
from tests.fixtures.dis import DisServer
from tests.fixtures.obs import S3Server

pytestmark = pytest.mark.integration


def settings_with(tmp_path: Path, toml: str) -> AgentSettings:
    return AgentSettings(node_id="n", state_dir=tmp_path, **tomllib.loads(toml))


def test_each_bucket_and_stream_is_checked(tmp_path: Path, s3_server: S3Server, dis_server: DisServer) -> None:
    bucket = s3_server.create_bucket()
    dis_server.streams.add("results")
    settings = settings_with(tmp_path, s3_server.toml() + dis_server.toml())
    checks = check_stores(settings, {bucket, "no-such-bucket"}, {"results", "nowhere"}, Progress(io.StringIO()))
    found = {check.subject.rsplit(" ", 1)[-1]: check for check in checks}
    assert found[bucket].level is Level.OK and "bucket exists" in found[bucket].detail
    assert found["no-such-bucket"].level is Level.FAIL and "NoSuchBucket" in found["no-such-bucket"].detail
    assert found["results"].level is Level.OK
    assert found["nowhere"].level is Level.FAIL and "DIS.4301" in found["nowhere"].detail

    wrong = settings_with(tmp_path, s3_server.toml(secret_key="wrong-key-1") + dis_server.toml(secret_key="wrong-2"))
    checks = check_stores(wrong, {bucket}, {"results"}, Progress(io.StringIO()))
    assert [check.level for check in checks] == [Level.FAIL, Level.FAIL]
    assert "SignatureDoesNotMatch" in checks[0].detail and "HTTP 401" in checks[1].detail
    assert all("Check the access key" in (check.hint or "") for check in checks)


def test_diag_command_reports_the_stores(tmp_path: Path, s3_server: S3Server, dis_server: DisServer) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(f'node_id = "n"\nstate_dir = "{tmp_path / "state"}"\n[api]\nlisten = "127.0.0.1:9"\n'
                      + s3_server.toml(secret_key="the-wrong-secret") + dis_server.toml())
    code, report, everything = diag_json("--timeout", "3", config=config)
    stores = [check for check in report["checks"] if check["area"] == "store"]
    assert [(check["subject"], check["status"]) for check in stores] == [
        (f"obs {s3_server.endpoint}", "FAIL"), (f"dis {dis_server.endpoint}", "OK")]
    assert "SignatureDoesNotMatch" in stores[0]["detail"] and code == 1
    assert "the-wrong-secret" not in everything
