"""A node run without sockets: ``run_recorded`` runs the pipeline on a folder of frames with a
``RecordingPublisher``, which keeps copies of every mask, JSON document and the latched info."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from perception.engines import EngineOptions, load_engine
from perception.pipeline import Pipeline
from perception.run_config import RunConfig
from perception.sources import open_source


class RecordingPublisher:
    """Keeps copies of every mask and JSON document the pipeline publishes (no sockets)."""

    endpoint = "inproc://recording"

    def __init__(self) -> None:
        self.masks: list[dict[str, np.ndarray]] = []
        self.json: list[tuple[str, dict]] = []
        self.info: dict | None = None

    def publish_masks(self, *, masks, **_):
        self.masks.append({name: mask.copy() for name, mask in masks.items()})

    def publish_json(self, topic, doc):
        self.json.append((topic, doc))

    def set_info(self, doc):
        self.info = doc

    def stats(self):
        return {}

    def wait_for_subscribers(self, count, *, timeout_s):
        return True


def run_recorded(model: Path, frames: Path, **config) -> tuple[RecordingPublisher, dict]:
    """Run ``model`` (ONNX Runtime, one thread) over the frames in ``frames`` with the run settings
    ``config``; the publisher with what was published, and the final stats document."""
    engine = load_engine("ort", model, EngineOptions(provider="cpu", threads=1))
    try:
        publisher = RecordingPublisher()
        run = RunConfig.from_settings(source=str(frames), warmup=0, **config)
        final = Pipeline(run, source=open_source(str(frames)), engine=engine, publisher=publisher).run()
    finally:
        engine.close()
    return publisher, final
