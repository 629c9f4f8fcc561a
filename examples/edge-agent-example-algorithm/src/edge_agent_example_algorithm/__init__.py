"""scene-change: an event when an input's mean brightness jumps between two samples."""

from __future__ import annotations

from collections.abc import Collection, Mapping

from pydantic import Field

from agent.algorithms.base import Algorithm, AlgorithmConfig
from agent.algorithms.event import Event
from agent.sources.frame import Frame

EVENT_TYPE = 900001  # a number of the plugin's own, outside the ranges VIAS uses


class SceneChangeConfig(AlgorithmConfig):
    fps: float = Field(1.0, gt=0, le=30, description="Frames per second to analyse, per input.")
    min_change: float = Field(40.0, gt=0, le=255, description="Jump of mean luma (0–255) that is reported.")


class SceneChange(Algorithm):
    service_name = "scene-change"
    versions = ("1.0",)
    event_type = EVENT_TYPE
    Config = SceneChangeConfig
    color = "gray"
    summary = "Sudden change of the whole scene's brightness (example plugin)."

    config: SceneChangeConfig

    def __init__(self, config: AlgorithmConfig, version: str, *, data_categories: Collection[str] = ()) -> None:
        super().__init__(config, version, data_categories=data_categories)
        self._last: dict[int, float] = {}  # input index → mean luma of its previous sample

    def process(self, frames: Mapping[int, Frame]) -> list[Event]:
        events = []
        for index, frame in frames.items():
            level = float(frame.gray.mean())
            previous = self._last.get(index)
            self._last[index] = level
            if previous is not None and abs(level - previous) >= self.config.min_change:
                item = {"from": round(previous, 1), "to": round(level, 1), "threshold": self.config.min_change}
                events.append(Event(EVENT_TYPE, index, frame.info, (item,)))
        return events

    def input_up(self, input_index: int, now: float) -> list[Event]:
        self._last.pop(input_index, None)  # after an outage the scene may differ: that is no "change"
        return []
