"""Fixtures of the outputs tests; plain helpers are in support.py."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.outputs.support import Subscriber


@pytest.fixture
def subscriber_factory() -> Iterator[Any]:
    made: list[Subscriber] = []

    def make(host: str, port: int, topic: str, **kwargs: Any) -> Subscriber:
        subscriber = Subscriber(host, port, topic, **kwargs)
        made.append(subscriber)
        return subscriber

    yield make
    for subscriber in made:
        subscriber.close()
