"""Every documented rule of the create-task body, one case each, with the field the error must name."""

from __future__ import annotations

import json
from typing import Any

import pytest

from agent.tasks.errors import ApiError
from agent.tasks.model import TaskUpdate, apply_update, masked_spec, parse_create, parse_update, spec_secrets
from tests.tasks.examples import DOC_EXAMPLES, DOC_URL, DOC_VIDEO_SOURCE, body

VCN_INPUT = {"type": "vcn", "data": [{"device_id": "123#dom", "stream_type": 1, "index": 0}],
             "vcn": {"ip": "10.0.0.9", "port": 18531, "username": "admin", "password": "S3cret-pass"}}
RESTFUL_INPUT = {"type": "restful", "data": [{"url": "https://lookup/x", "rtsp_path_in_response": "data/url",
                                              "certificate_check": True, "headers": {"AAA": "tok-123"}}]}


def rejected(raw: Any) -> ApiError:
    with pytest.raises(ApiError) as caught:
        parse_create(raw)
    return caught.value


@pytest.mark.parametrize("name", sorted(DOC_EXAMPLES))
def test_documented_examples_are_valid(name: str) -> None:
    spec = parse_create(DOC_EXAMPLES[name])
    assert spec.name == DOC_EXAMPLES[name]["name"]


@pytest.mark.parametrize(
    ("changes", "path", "code"),
    [
        ({"name": None}, "name", "VIAS.00010001"),
        ({"name": ""}, "name", "VIAS.00010001"),
        ({"name": "a" * 101}, "name", "VIAS.00010001"),
        ({"name": "has space"}, "name", "VIAS.00010001"),
        ({"name": "ünï"}, "name", "VIAS.00010001"),
        ({"description": "d" * 501}, "description", "VIAS.00010001"),
        ({"service_version": None}, "service_version", "VIAS.00010001"),
        ({"service_version": "1."}, "service_version", "VIAS.00010001"),
        ({"service_version": "V1.0"}, "service_version", "VIAS.00010001"),
        ({"service_version": "1" * 33}, "service_version", "VIAS.00010001"),
        ({"resource_order_id": "abc"}, "resource_order_id", "VIAS.00010001"),
        ({"resource_order_id": "ABCD"}, "resource_order_id", "VIAS.00010001"),
        ({"resource_order_id": "a" * 37}, "resource_order_id", "VIAS.00010001"),
        ({"is_saved_as_template": "yes"}, "is_saved_as_template", "VIAS.00010001"),
        ({"input": None}, "input", "VIAS.00010001"),
        ({"output": None}, "output", "VIAS.00010001"),
        ({"input__type": "camera"}, "input.type", "VIAS.00010001"),
        ({"input__data": []}, "input.data", "VIAS.00010001"),
        ({"input__data": [{"url": "rtsp://h/x"}] * 51}, "input.data", "VIAS.00010001"),
        ({"input__data__0__url": None}, "input.data[0].url", "VIAS.00010001"),
        ({"input__data__0__url": "u" * 1001}, "input.data[0].url", "VIAS.00010001"),
        ({"input__data__0__index": "0"}, "input.data[0].index", "VIAS.00010001"),
        ({"input__data__0__bucket": "b" * 65}, "input.data[0].bucket", "VIAS.00010001"),
        ({"input__data__0__path": "p" * 1024}, "input.data[0].path", "VIAS.00010001"),
        ({"webhok": {}}, "webhok", "VIAS.00010001"),
        ({"input__data__0__uri": "x"}, "input.data[0].uri", "VIAS.00010001"),
        ({"output__webhook__urll": "x"}, "output.webhook.urll", "VIAS.00010001"),
        ({"config__extra": 1}, "config.extra", "VIAS.00010001"),
        ({"config__common": [1]}, "config.common", "VIAS.00010001"),
        ({"output": {}}, "output", "VIAS.00010001"),
        ({"output": {"event_center": False}}, "output", "VIAS.00010001"),
        ({"output__event_center": "true"}, "output.event_center", "VIAS.00010001"),
        ({"output__webhook__url": "u" * 1001}, "output.webhook.url", "VIAS.00010001"),
        ({"output__webhook__url": "ftp://x"}, "output.webhook.url", "VIAS.00010001"),
        ({"output__webhook__headers": None}, "output.webhook.headers", "VIAS.00010001"),
        ({"output__webhook__headers": {}}, "output.webhook.headers", "VIAS.00010001"),
        ({"output__webhook__headers": {f"h{i}": "v" for i in range(11)}}, "output.webhook.headers",
         "VIAS.00010001"),
        ({"output__webhook__headers": {"X-A": "v\r\nInjected: 1"}}, "output.webhook.headers", "VIAS.00010001"),
        ({"output__webhook__headers": {"Bad Name": "v"}}, "output.webhook.headers", "VIAS.00010001"),
        ({"output__webhook__data_category": ["a"] * 11}, "output.webhook.data_category", "VIAS.00010001"),
        ({"output__dis": {"stream_name": "bad name!"}}, "output.dis.stream_name", "VIAS.00010001"),
        ({"output__obs": {"bucket": "A", "path": "x"}}, "output.obs.bucket", "VIAS.00010001"),
        ({"output__obs": {"bucket": "my-bucket", "path": "/abs"}}, "output.obs.path", "VIAS.00010001"),
    ],
)
def test_rule_violations_name_the_field(changes: dict[str, Any], path: str, code: str) -> None:
    error = rejected(body(DOC_URL, **changes))
    assert error.body()["params"] == [path]
    assert error.body()["error_code"] == code
    assert error.http_status == 400


@pytest.mark.parametrize(
    ("input_spec", "path"),
    [
        ({"type": "video_source", "data": [{"index": 0}]}, "input.data[0].video_source_id"),
        ({"type": "edgecamera", "data": [{"index": 0}]}, "input.data[0].id"),
        ({"type": "edgecamera", "data": [{"id": "i" * 64}]}, "input.data[0].id"),
        ({"type": "restful", "data": [{"url": "https://x"}]}, "input.data[0].rtsp_path_in_response"),
        ({"type": "restful", "data": [{"rtsp_path_in_response": "a/b"}]}, "input.data[0].url"),
        ({"type": "restful", "data": [{"url": "https://x", "rtsp_path_in_response": "p" * 1025}]},
         "input.data[0].rtsp_path_in_response"),
        ({"type": "restful", "data": [{"url": "https://x", "rtsp_path_in_response": "a",
                                       "headers": {f"h{i}": "v" for i in range(11)}}]}, "input.data[0].headers"),
        ({"type": "restful", "data": [{"url": "https://x", "rtsp_path_in_response": "a",
                                       "certificate_check": "no"}]}, "input.data[0].certificate_check"),
        ({"type": "vcn", "data": [{"stream_type": 1}], "vcn": VCN_INPUT["vcn"]}, "input.data[0].device_id"),
        ({"type": "vcn", "data": [{"device_id": "d"}], "vcn": VCN_INPUT["vcn"]}, "input.data[0].stream_type"),
        ({"type": "vcn", "data": [{"device_id": "d", "stream_type": 4}], "vcn": VCN_INPUT["vcn"]},
         "input.data[0].stream_type"),
        ({"type": "vcn", "data": [{"device_id": "d", "stream_type": 0}], "vcn": VCN_INPUT["vcn"]},
         "input.data[0].stream_type"),
        ({"type": "vcn", "data": [{"device_id": "d", "stream_type": 1}]}, "input.vcn"),
        ({**VCN_INPUT, "vcn": {**VCN_INPUT["vcn"], "port": 65536}}, "input.vcn.port"),
        ({**VCN_INPUT, "vcn": {**VCN_INPUT["vcn"], "port": -1}}, "input.vcn.port"),
        ({**VCN_INPUT, "vcn": {**VCN_INPUT["vcn"], "username": ""}}, "input.vcn.username"),
        ({**VCN_INPUT, "vcn": {**VCN_INPUT["vcn"], "username": "u" * 101}}, "input.vcn.username"),
        ({**VCN_INPUT, "vcn": {**VCN_INPUT["vcn"], "password": ""}}, "input.vcn.password"),
        ({**VCN_INPUT, "vcn": {**VCN_INPUT["vcn"], "password": "p" * 1001}}, "input.vcn.password"),
        ({**VCN_INPUT, "vcn": {**VCN_INPUT["vcn"], "ip": None}}, "input.vcn.ip"),
        ({"type": "obs", "data": [{"bucket": "b"}]}, "input.data[0].path"),
    ],
)
def test_per_type_mandatory_fields(input_spec: dict[str, Any], path: str) -> None:
    raw = body(DOC_URL)
    raw["input"] = {k: v for k, v in input_spec.items() if v is not None}
    if input_spec.get("vcn", {}).get("ip", "") is None:
        raw["input"]["vcn"] = {k: v for k, v in input_spec["vcn"].items() if v is not None}
    assert rejected(raw).body()["params"] == [path]


@pytest.mark.parametrize("input_spec", [VCN_INPUT, RESTFUL_INPUT,
                                        {"type": "edgecamera", "data": [{"id": "cam-7", "index": 0}]},
                                        {"type": "video_source", "data": [{"video_source_id": "lobby"}]},
                                        {"type": "obs", "data": [{"bucket": "aicam", "path": "a/b.mp4", "index": 0}]},
                                        {"type": "url",
                                         "data": [{"url": "rtsp://h/x", "index": i} for i in range(50)]}])
def test_every_edge_input_type_is_accepted(input_spec: dict[str, Any]) -> None:
    raw = body(DOC_URL)
    raw["input"] = input_spec
    assert parse_create(raw).input.type == input_spec["type"]


def test_obs_and_dis_outputs_are_accepted_by_the_model() -> None:
    raw = body(DOC_URL, output={"obs": {"bucket": "my-bucket", "path": "results/out", "data_category": ["image"]},
                                "dis": {"stream_name": "good-name"}})
    output = parse_create(raw).output
    assert output.obs is not None and output.obs.path == "results/out"
    assert output.dis is not None and output.dis.stream_name == "good-name"


def test_event_center_alone_is_an_output_and_accepts_1() -> None:
    for value in (True, 1):
        raw = body(DOC_URL, output={"event_center": value})
        assert parse_create(raw).output.event_center


@pytest.mark.parametrize(
    ("schedule", "path"),
    [
        ({"type": "monthly"}, "schedule.type"),
        ({"timezone": "+8:00"}, "schedule.timezone"),
        ({"timezone": "UTC"}, "schedule.timezone"),
        ({"timezone": "+15:00"}, "schedule.timezone"),
        ({"timezone": "+08:60"}, "schedule.timezone"),
        ({"timezone": None}, "schedule.timezone"),
        ({"days_of_week": []}, "schedule.days_of_week"),
        ({"days_of_week": [0]}, "schedule.days_of_week[0]"),
        ({"days_of_week": [8]}, "schedule.days_of_week[0]"),
        ({"days_of_week": [1, 1]}, "schedule.days_of_week"),
        ({"days_of_week": [1, 2, 3, 4, 5, 6, 7, 1]}, "schedule.days_of_week"),
        ({"days_of_week": None}, "schedule.days_of_week"),
        ({"periods": [[]] * 8}, "schedule.periods"),
        ({"periods": [[{"begin_at": "10:00:00", "end_at": "09:00:00"}]]}, "schedule.periods[0][0]"),
        ({"periods": [[{"begin_at": "10:00:00", "end_at": "10:00:00"}]]}, "schedule.periods[0][0]"),
        ({"periods": [[{"begin_at": "24:00:00", "end_at": "10:00:00"}]]}, "schedule.periods[0][0].begin_at"),
        ({"periods": [[{"begin_at": "9:00", "end_at": "10:00:00"}]]}, "schedule.periods[0][0].begin_at"),
        ({"periods": [[{"begin_at": "09:00:00"}]]}, "schedule.periods[0][0].end_at"),
        ({"periods": [[], [], [], [], [], [], []]}, "schedule"),
        ({"days_of_week": [2], "periods": [[{"begin_at": "09:00:00", "end_at": "10:00:00"}]]}, "schedule"),
    ],
)
def test_schedule_rules(schedule: dict[str, Any], path: str) -> None:
    raw = body(DOC_URL)
    base = {"type": "weekly", "timezone": "+08:00", "days_of_week": [1],
            "periods": [[{"begin_at": "09:00:00", "end_at": "17:00:00"}]]}
    base.update(schedule)
    raw["schedule"] = {k: v for k, v in base.items() if v is not None}
    assert rejected(raw).body()["params"] == [path]


def test_days_of_month_is_unsupported() -> None:
    raw = body(DOC_URL)
    raw["schedule"] = {"type": "weekly", "timezone": "-03:30", "days_of_week": [1], "days_of_month": [1],
                       "periods": [[{"begin_at": "09:00:00", "end_at": "17:00:00"}]]}
    error = rejected(raw).body()
    assert (error["error_code"], error["params"]) == ("VIAS.00010004", ["schedule.days_of_month"])


def test_schedule_offsets_are_minutes() -> None:
    raw = body(DOC_URL)
    raw["schedule"] = {"type": "weekly", "timezone": "-03:30", "days_of_week": [1],
                       "periods": [[{"begin_at": "09:00:00", "end_at": "17:00:00"}]]}
    schedule = parse_create(raw).schedule
    assert schedule is not None and schedule.offset_minutes == -210


@pytest.mark.parametrize("raw", [None, [], "task", 3, [DOC_URL]])
def test_body_must_be_an_object(raw: Any) -> None:
    assert rejected(raw).body()["params"] == ["body"]


def test_errors_never_echo_secret_values() -> None:
    raw = body(DOC_URL)
    raw["input"] = {**VCN_INPUT, "vcn": {**VCN_INPUT["vcn"], "port": "not-a-port"}}
    raw["output"]["webhook"]["headers"] = {"Authorization": "Bearer top-secret\n"}
    for candidate in (raw, body(raw, input__vcn__port=1)):
        text = json.dumps(rejected(candidate).body())
        assert "S3cret-pass" not in text and "top-secret" not in text


def test_update_takes_exactly_one_input_and_revalidates_the_whole() -> None:
    spec = parse_create(DOC_VIDEO_SOURCE)
    with pytest.raises(ApiError) as caught:
        parse_update({"input": {"type": "url", "data": [{"url": "rtsp://a/1"}, {"url": "rtsp://a/2"}]}})
    assert caught.value.body()["params"] == ["input.data"]
    with pytest.raises(ApiError) as caught:
        parse_update({"nmae": "x"})
    assert caught.value.body()["params"] == ["nmae"]
    updated = apply_update(spec, parse_update({"input": {"type": "url", "data": [{"url": "rtsp://a/1"}]},
                                               "description": "moved"}))
    assert (updated.input.type, updated.description, updated.name) == ("url", "moved", "Test")
    assert isinstance(parse_update({}), TaskUpdate)


def test_masked_spec_and_spec_secrets() -> None:
    raw = body(DOC_URL)
    raw["input"] = VCN_INPUT
    raw["output"]["webhook"]["headers"] = {"Authorization": "Bearer top-secret"}
    raw["output"]["webhook"]["url"] = "https://user:hook%2Fpw@hooks.example/x"
    spec = parse_create(raw)
    text = json.dumps(masked_spec(spec))
    assert not any(secret in text for secret in ("S3cret-pass", "top-secret", "hook%2Fpw", "hook/pw"))
    assert "Authorization" in text  # names stay: an operator needs to see which headers are set
    # the URL password both as written and URL-decoded: either may reach a log line
    assert set(spec_secrets(spec)) == {"S3cret-pass", "Bearer top-secret", "hook%2Fpw", "hook/pw"}
    restful = parse_create(body(DOC_URL, input=RESTFUL_INPUT))
    assert "tok-123" in spec_secrets(restful)
    assert "tok-123" not in json.dumps(masked_spec(restful))
    url_input = parse_create(body(DOC_URL, input={"type": "url", "data": [{"url": "rtsp://admin:cam-pw@c/1"}]}))
    assert "cam-pw" in spec_secrets(url_input)
    malformed = parse_create(body(DOC_URL, input={"type": "url", "data": [{"url": "rtsp://a:bpass@[::1/x"}]}))
    assert "bpass" not in spec_secrets(malformed)  # an unparsable URL is masked by pattern, and must not raise
