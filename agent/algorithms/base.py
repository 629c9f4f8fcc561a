"""The algorithm hook: what an analytic declares about itself and the one call the pipeline makes.

An algorithm is a class. Its class attributes say who it is (``service_name``, ``versions``), what it
reports (``event_type``, ``data_categories``), what it needs (``color``, a ``Config`` model whose ``fps``
says how often it wants frames) and the pipeline hands it, per call, the newest sampled frame of each
input. One instance serves one task, so per-input state (a background model per camera) lives on it;
it is called from one worker thread at a time and need not lock.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from agent.algorithms.event import Event
from agent.sources.frame import Frame

Color = Literal["gray", "bgr"]

# The data_category names of the VIAS result format that built-ins can attach.
ORIGIN_IMAGE = "OriginImage"  # the whole frame, JPEG, in Event.images
FACE_IMAGE = "FaceImage"  # one crop per face, JPEG, in Event.item_images


class AlgorithmConfig(BaseModel):
    """Base of every ``config.common`` model: unknown keys are rejected, values are immutable.

    Subclasses override ``fps`` with their own default and add their settings, each with a default and
    a description (the description is what ``edge-agent algorithms`` and docs/algorithms.md show).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    fps: float = Field(5.0, gt=0, le=30, description="Frames per second to analyse, per input.")
    backend: Literal["pyav", "opencv"] | None = Field(
        None, description="Decoder for this task's inputs; unset: the agent's stream.backend (pyav, faster)."
    )


class Algorithm(ABC):
    """Base class of an analytic. Subclasses set the class attributes and implement ``process``."""

    service_name: ClassVar[str]  # the task's service_name, e.g. "intrusion-detection"
    versions: ClassVar[tuple[str, ...]]  # service_version values this class implements, e.g. ("1.0",)
    event_type: ClassVar[int]  # VIAS event_type number of the events it emits
    Config: ClassVar[type[AlgorithmConfig]] = AlgorithmConfig  # the config.common model
    color: ClassVar[Color] = "gray"  # "gray" lets the pipeline hand over the Y plane without conversion
    data_categories: ClassVar[frozenset[str]] = frozenset()  # images it can attach when an output asks
    summary: ClassVar[str] = ""  # one line for `edge-agent algorithms`

    def __init__(self, config: AlgorithmConfig, version: str, *,
                 data_categories: Collection[str] = ()) -> None:
        self.config = config
        self.version = version
        # Images cost JPEG encoding on the worker thread: attach only what some output asked for.
        self.attach = frozenset(data_categories) & self.data_categories

    @property
    def fps(self) -> float:
        return self.config.fps

    @abstractmethod
    def process(self, frames: Mapping[int, Frame]) -> list[Event]:
        """Analyse the newest sampled frame of each input (input_index → frame); return the findings.

        Inputs with no new frame since the last call are absent. Frames may change size at any time
        (a camera reconfigured, a stream re-resolved); an algorithm keeping per-input state must cope.
        """

    def input_down(self, input_index: int, reason: str, now: float) -> list[Event]:
        """An input lost its stream (``reason`` is already free of secrets); ``now`` is epoch seconds."""
        return []

    def input_up(self, input_index: int, now: float) -> list[Event]:
        """An input delivers frames again after ``input_down``."""
        return []


def describe(cls: type[Algorithm]) -> dict[str, Any]:
    """What ``edge-agent algorithms`` prints for one algorithm class."""
    return {
        "service_name": cls.service_name,
        "versions": list(cls.versions),
        "event_type": cls.event_type,
        "summary": cls.summary,
        "fps": cls.Config.model_fields["fps"].default,
        "color": cls.color,
        "data_categories": sorted(cls.data_categories),
        "config_schema": cls.Config.model_json_schema(),
    }
