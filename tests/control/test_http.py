"""The REST API in-process (ASGI): every endpoint, the auth rule, and hostile bodies."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.control.http import create_app
from agent.tasks.service import TaskService
from agent.tasks.store import TaskStore
from tests.tasks.examples import DOC_EXAMPLES, DOC_URL, body

TOKEN = "test-token-123"
AUTH = {"X-Auth-Token": TOKEN}
ERROR_KEYS = {"error_code", "error_msg", "detail", "params", "reason", "advice"}


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    service = TaskService(TaskStore(tmp_path), max_tasks=1000, max_inputs=100_000)
    with TestClient(create_app(service, TOKEN), raise_server_exceptions=False) as test_client:
        yield test_client


def create(client: TestClient, raw: Any, service_name: str = "intrusion-detection") -> Any:
    return client.post(f"/v2/proj/services/{service_name}/tasks", json=raw, headers=AUTH)


@pytest.mark.parametrize("name", sorted(DOC_EXAMPLES))
def test_documented_requests_return_200(client: TestClient, name: str) -> None:
    response = create(client, DOC_EXAMPLES[name])
    assert response.status_code == 200, response.text
    (task,) = response.json()["tasks"]
    assert len(task["id"]) == 32


def test_full_lifecycle(client: TestClient) -> None:
    task_id = create(client, DOC_URL).json()["tasks"][0]["id"]
    listed = client.get("/v2/proj/tasks", headers=AUTH, params={"task_name": "alg"}).json()
    assert listed["count"] == 1 and set(listed["tasks"][0]) >= {"id", "name", "service_name", "created_at", "state"}
    assert (listed["page"], listed["page_size"]) == (0, 100)
    shown = client.get(f"/v2/proj/tasks/{task_id}", headers=AUTH).json()
    assert shown["state"] == "PENDING" and shown["output"]["webhook"]["headers"] == {"AA": "***"}
    assert client.put(f"/v2/proj/tasks/{task_id}/action/stop", headers=AUTH).status_code == 200
    assert client.put(f"/v2/proj/tasks/{task_id}", headers=AUTH,
                      json={"description": "d", "input": {"type": "url", "data": [{"url": "rtsp://c/1"}]}}
                      ).status_code == 200
    assert client.put(f"/v2/proj/tasks/{task_id}/action/start", headers=AUTH).status_code == 200
    assert client.put(f"/v2/proj/tasks/{task_id}/action/pause", headers=AUTH).json()["params"] == ["action"]
    response = client.delete(f"/v2/proj/tasks/{task_id}", headers=AUTH)
    assert (response.status_code, response.content) == (200, b"")
    missing = client.get(f"/v2/proj/tasks/{task_id}", headers=AUTH)
    assert missing.status_code == 404 and missing.json()["error_code"] == "VIAS.00010007"


@pytest.mark.parametrize("headers", [{}, {"X-Auth-Token": "wrong"}, {"X-Auth-Token": ""}])
def test_token_required_on_v2(client: TestClient, headers: dict[str, str]) -> None:
    response = client.get("/v2/proj/tasks", headers=headers)
    assert response.status_code == 401
    assert response.json()["error_code"] == "VIAS.00010005"
    assert client.get("/healthz").status_code == 200


@pytest.mark.parametrize("headers", [{}, {"X-Auth-Token": "wrong"}])
def test_openapi_schema_needs_the_token(client: TestClient, headers: dict[str, str]) -> None:
    refused = client.get("/openapi.json", headers=headers)
    assert refused.status_code == 401 and refused.json()["error_code"] == "VIAS.00010005"
    schema = client.get("/openapi.json", headers=AUTH)
    assert schema.status_code == 200 and "/v2/{project_id}/tasks" in schema.json()["paths"]
    for page in ("/docs", "/redoc"):  # not served at all; without the token not even that is told
        assert client.get(page, headers=headers).status_code == 401
        assert client.get(page, headers=AUTH).status_code == 404


def test_only_health_and_metrics_are_open(tmp_path: Path) -> None:
    app = create_app(TaskService(TaskStore(tmp_path)), TOKEN, metrics=lambda: (b"up 1\n", "text/plain"))
    with TestClient(app) as test_client:
        assert test_client.get("/healthz").status_code == 200
        assert test_client.get("/metrics").text == "up 1\n"
        assert test_client.get("/elsewhere").status_code == 401
        assert test_client.get("/elsewhere", headers=AUTH).status_code == 404


def test_no_configured_token_refuses_everything(tmp_path: Path) -> None:
    app = create_app(TaskService(TaskStore(tmp_path)), None)
    with TestClient(app) as test_client:
        assert test_client.get("/v2/p/tasks", headers={"X-Auth-Token": ""}).status_code == 401


@pytest.mark.parametrize(
    ("raw", "detail"),
    [
        (b"not json", "not valid JSON"),
        (b"", "empty"),
        (b"[" * 200_000, "nests deeper"),
        (b'{"a":' * 40 + b"1" + b"}" * 40, "nests deeper"),
        (b"{" + b'"k":"' + b"x" * (1 << 20) + b'"}', "larger than"),
        (b"\xff\xfe", "UTF-8"),
        (b'{"name": NaN}', "not valid JSON"),
        (b'{"n": 1' + b"0" * 5000 + b"}", "not valid JSON"),
    ],
)
def test_hostile_bodies_get_400(client: TestClient, raw: bytes, detail: str) -> None:
    response = client.post("/v2/proj/services/svc/tasks", content=raw,
                           headers={**AUTH, "Content-Type": "application/json"})
    assert response.status_code == 400
    assert set(response.json()) == ERROR_KEYS and detail in response.json()["detail"]


def test_unknown_paths_and_methods_use_the_error_body(client: TestClient) -> None:
    assert set(client.get("/v2/proj/nothing", headers=AUTH).json()) == ERROR_KEYS
    response = client.patch("/v2/proj/tasks", headers=AUTH)
    assert response.status_code == 405 and set(response.json()) == ERROR_KEYS
    assert client.get("/v2/proj/tasks", headers=AUTH, params={"page_size": "x"}).json()["params"] == ["page_size"]
    assert client.get("/v2/proj/tasks", headers=AUTH, params={"task_state": "NOPE"}).status_code == 400


def test_secret_values_never_come_back(client: TestClient) -> None:
    raw = body(DOC_URL)
    raw["input"] = {"type": "vcn", "data": [{"device_id": "c#d", "stream_type": 1}],
                    "vcn": {"ip": "10.0.0.1", "port": "bad", "username": "u", "password": "vcn-pass-42"}}
    assert "vcn-pass-42" not in create(client, raw).text
    raw["input"]["vcn"]["port"] = 18531
    task_id = create(client, raw).json()["tasks"][0]["id"]
    assert "vcn-pass-42" not in client.get(f"/v2/proj/tasks/{task_id}", headers=AUTH).text


@pytest.mark.parametrize(("params", "named"), [
    ({"page": str(2**63 - 1)}, "page"), ({"page": str(10**30)}, "page"), ({"page": "-1"}, "page"),
    ({"page_size": str(2**63)}, "page_size"), ({"page": "10", "page_size": str(2**62)}, "page_size"),
])
def test_out_of_range_query_numbers_are_400_naming_the_parameter(client: TestClient, params: dict[str, str],
                                                                 named: str) -> None:
    response = client.get("/v2/proj/tasks", headers=AUTH, params=params)
    assert response.status_code == 400, response.text
    assert (response.json()["error_code"], response.json()["params"]) == ("VIAS.00010001", [named])


def test_non_ascii_project_ids_are_400(client: TestClient) -> None:
    for project in ("é", "caf%C3%A9"):
        response = client.post(f"/v2/{project}/services/intrusion-detection/tasks", json=DOC_URL, headers=AUTH)
        assert (response.status_code, response.json()["params"]) == (400, ["project_id"])
        assert client.get(f"/v2/{project}/tasks", headers=AUTH).status_code == 400


def test_refused_creates_leave_nothing_in_the_masker_or_memory(client: TestClient) -> None:
    import secrets as random

    from agent.redact import mask_text, secrets
    from tests.fixtures.memory import rss_bytes

    assert create(client, body(DOC_URL, name="taken")).status_code == 200

    def refused_create(header_value: str) -> None:
        raw = body(DOC_URL, name="taken")
        raw["output"]["webhook"]["headers"] = {f"H{k}": f"{header_value}{k}" for k in range(10)}
        response = create(client, raw)
        assert response.json()["error_code"] == "VIAS.00010011", response.text

    refused_create(random.token_hex(1024))  # warm-up: imports and caches that stay anyway
    held, rss = len(secrets), rss_bytes()
    for _ in range(60):
        refused_create(random.token_hex(1024))
    assert len(secrets) == held
    assert rss_bytes() - rss < 5 * 1024 * 1024
    raw = body(DOC_URL, name="taken")
    raw["output"]["webhook"]["headers"] = {"X-Reason": "deleted"}
    assert create(client, raw).status_code == 400
    assert mask_text("task deleted") == "task deleted"


# property-based: random and mutated bodies only ever get documented answers -----------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += _paths(child, (*prefix, index))
    return found


@st.composite
def mutated_bodies(draw: st.DrawFn) -> Any:
    raw = json.loads(json.dumps(draw(st.sampled_from(list(DOC_EXAMPLES.values())))))
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(raw) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = raw
        for part in path[:-1]:
            parent = parent[part]
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "replace":
            parent[path[-1]] = draw(json_values)
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=8))] = draw(json_values)
    return raw


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=mutated_bodies() | json_values)
def test_fuzzed_bodies_only_get_documented_answers(client: TestClient, raw: Any) -> None:
    name = f"fz{abs(hash(json.dumps(raw, sort_keys=True))) % 10**12}"
    if isinstance(raw, dict) and "name" in raw and isinstance(raw["name"], str):
        raw["name"] = name  # avoid duplicate-name 400s hiding other answers
    response = create(client, raw)
    assert response.status_code in (200, 400), response.text
    if response.status_code == 400:
        assert set(response.json()) == ERROR_KEYS
        assert response.json()["error_code"].startswith("VIAS.0001")
    task_id = response.json()["tasks"][0]["id"] if response.status_code == 200 else "0" * 32
    update = client.put(f"/v2/proj/tasks/{task_id}", json=raw, headers=AUTH)
    assert update.status_code in (200, 400, 404), update.text
