"""The three request bodies of the create-task documentation, verbatim, and builders for variations."""

from __future__ import annotations

import copy
from typing import Any

DOC_VIDEO_SOURCE: dict[str, Any] = {
    "name": "Test",
    "input": {"type": "video_source", "data": [{"video_source_id": "xxxxxxx-xxxxxxx-xxxxxxx-xxxxx-xxxxxx"}]},
    "output": {"webhook": {"url": "http://test", "headers": {"a": "a"}}},
    "config": {"common": {}},
    "service_version": "1.1",
    "is_saved_as_template": False,
}

DOC_URL: dict[str, Any] = {
    "name": "test-alg-819",
    "input": {"type": "url", "data": [{"url": "https://iuwhediue-input.com", "index": 0}]},
    "output": {"webhook": {"url": "https://iuwhediue-output.com", "headers": {"AA": "AA"}}},
    "config": {"common": {"viewpoint": 1}},
    "service_version": "3.0",
    "is_saved_as_template": False,
    "resource_order_id": "029b34a69efd48769215e429deff0cec",
}

DOC_SCHEDULED: dict[str, Any] = {
    "name": "test-alg-819",
    "schedule": {
        "type": "weekly",
        "timezone": "+08:00",
        "days_of_week": [1, 2, 3, 4, 5, 6, 7],
        "periods": [[], [], [], [], [{"begin_at": "22:15:00", "end_at": "23:59:00"}],
                    [{"begin_at": "00:00:00", "end_at": "23:59:00"}],
                    [{"begin_at": "22:15:00", "end_at": "23:59:00"}]],
    },
    "input": {"type": "url", "data": [{"url": "https://iuwhediue-input.com", "index": 0}]},
    "output": {"webhook": {"url": "https://iuwhediue-output.com", "headers": {"AA": "AA"}}},
    "config": {"common": {"viewpoint": 1}},
    "service_version": "3.0",
    "is_saved_as_template": False,
    "resource_order_id": "029b34a69efd48769215e429deff0cec",
}

DOC_EXAMPLES = {"video_source": DOC_VIDEO_SOURCE, "url": DOC_URL, "scheduled": DOC_SCHEDULED}


def body(base: dict[str, Any] | None = None, **changes: Any) -> dict[str, Any]:
    """A deep copy of ``base`` (default: the url example) with dotted-path changes; None deletes."""
    result = copy.deepcopy(base if base is not None else DOC_URL)
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        node: Any = result
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        if isinstance(node, list):
            node[int(leaf)] = value
        elif value is None:
            node.pop(leaf, None)
        else:
            node[leaf] = value
    return result
