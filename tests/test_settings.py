from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
from pydantic import BaseModel, ValidationError

from agent.api_token import api_token
from agent.settings import AgentSettings, config_secrets, load_settings

ROOT = Path(__file__).resolve().parent.parent


def test_toml_then_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('node_id = "box-1"\n[api]\nlisten = "127.0.0.1:9000"\n[mqtt]\nport = 1884\n'
                      '[[cameras]]\nid = "cam-7"\nurl = "rtsp://10.0.0.7/main"\n')
    settings = load_settings(config)
    assert (settings.node_id, settings.api.port, settings.topic_prefix) == ("box-1", 9000, "edge-agent/box-1")
    assert settings.mqtt is not None and settings.mqtt.port == 1884
    monkeypatch.setenv("EDGE_AGENT_API__LISTEN", "127.0.0.1:9100")
    monkeypatch.setenv("EDGE_AGENT_NODE_ID", "box-2")
    monkeypatch.setenv("EDGE_AGENT_MQTT__TOPIC_PREFIX", "fleet/b2/")
    settings = load_settings(config)
    assert (settings.node_id, settings.api.port, settings.topic_prefix) == ("box-2", 9100, "fleet/b2")
    monkeypatch.setenv("EDGE_AGENT_CONFIG", str(config))
    assert load_settings().cameras[0].id == "cam-7"


def test_no_mqtt_section_means_no_mqtt(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('node_id = "n"\n')
    assert load_settings(config).mqtt is None


@pytest.mark.parametrize(
    ("text", "where"),
    [('[api]\nlisten = "x"\n', "api"), ('[apii]\nx = 1\n', "apii"), ('[mqtt]\nport = 0\n', "port"),
     ('[[video_sources]]\nid = "a"\n', "video_sources"),
     ('[[cameras]]\nid = "a"\nurl = "u"\n[[cameras]]\nid = "a"\nurl = "v"\n', "unique")],
)
def test_bad_keys_are_named(tmp_path: Path, text: str, where: str) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(text)
    with pytest.raises(ValidationError) as caught:
        load_settings(config)
    assert where in str(caught.value)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_settings(tmp_path / "nope.toml")


def test_token_from_value_file_or_generated(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("from-file\n")
    assert api_token(AgentSettings(state_dir=tmp_path, api={"token_file": token_file}), create=False) == "from-file"
    assert api_token(AgentSettings(state_dir=tmp_path, api={"token": "v"}), create=False) == "v"
    fresh = AgentSettings(state_dir=tmp_path / "s")
    assert api_token(fresh, create=False) is None
    generated = api_token(fresh, create=True)
    assert generated and api_token(fresh, create=False) == generated
    assert ((tmp_path / "s" / "api-token").stat().st_mode & 0o777) == 0o600


def _keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    keys = set()
    for name, info in model.model_fields.items():
        keys.add(prefix + name)
        for candidate in (info.annotation, *getattr(info.annotation, "__args__", ())):
            for inner in (candidate, *getattr(candidate, "__args__", ())):
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    keys |= _keys(inner, f"{prefix}{name}.")
    return keys


def test_deploy_example_is_valid_and_mentions_every_key() -> None:
    text = (ROOT / "deploy" / "agent.toml").read_text()
    AgentSettings.model_validate(tomllib.loads(text))
    for key in _keys(AgentSettings):
        leaf = key.rsplit(".", 1)[-1]
        assert leaf in text, f"deploy/agent.toml does not document {key}"


def test_configuration_doc_is_current() -> None:
    rendered = subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, 'scripts');"
                               " import gen_config_docs; print(gen_config_docs.render(), end='')"],
                              cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert (ROOT / "docs" / "configuration.md").read_text() == rendered, "run python scripts/gen_config_docs.py"


OBS_TOML = ('[obs]\nendpoint = "https://obs.cn-north-4.myhuaweicloud.com"\nregion = "cn-north-4"\n'
            'access_key = "AKIDEXAMPLE"\nsecret_key = "obs-secret-value"\n')


@pytest.mark.parametrize(
    ("text", "where"),
    [('[obs]\nendpoint = "https://h"\nregion = "r"\naccess_key = "a"\n', "secret_key"),
     ('[obs]\nendpoint = "ftp://h"\nregion = "r"\naccess_key = "a"\nsecret_key = "s"\n', "endpoint"),
     ('[obs]\nendpoint = "https://h/bucket"\nregion = "r"\naccess_key = "a"\nsecret_key = "s"\n', "endpoint"),
     ('[dis]\nendpoint = "https://h"\nregion = "r"\nproject_id = "p"\nkeys_from_obs = true\n', "[obs]"),
     ('[dis]\nendpoint = "https://h"\nregion = "r"\nproject_id = "p"\n', "keys_from_obs"),
     (OBS_TOML + '[dis]\nendpoint = "https://h"\nregion = "r"\nproject_id = "p"\nkeys_from_obs = true\n'
                 'access_key = "a"\n', "not both")],
)
def test_store_sections_name_what_is_wrong(tmp_path: Path, text: str, where: str) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(text)
    with pytest.raises(ValidationError) as caught:
        load_settings(config)
    assert where in str(caught.value)


def test_dis_signs_with_its_own_keys_or_obs_keys_and_both_secrets_are_masked(tmp_path: Path) -> None:
    secret_file = tmp_path / "dis-sk"
    secret_file.write_text("dis-secret-from-file\n")
    config = tmp_path / "agent.toml"
    dis = '[dis]\nendpoint = "https://dis.example"\nregion = "r"\nproject_id = "p"\n'
    config.write_text(OBS_TOML + dis + f'access_key = "DISAK"\nsecret_key_file = "{secret_file}"\n')
    settings = load_settings(config)
    assert settings.dis_key_pair() == ("DISAK", "dis-secret-from-file")
    assert {"obs-secret-value", "dis-secret-from-file"} <= set(config_secrets(settings))
    config.write_text(OBS_TOML + dis + "keys_from_obs = true\n")
    assert load_settings(config).dis_key_pair() == ("AKIDEXAMPLE", "obs-secret-value")
