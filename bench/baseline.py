"""The naive serial baseline the node is compared with: one thread, one frame at a time.

``run_serial_baseline(...)`` does what a first prototype would: read a frame from the source,
letterbox it into the model input with the node's own ``Preprocessor`` (so both do the same pixel
work and produce the same masks), run the engine (argmax is already in the graph), and send the
raw class-id mask of the content area (padding cut, as the node's wire v2) on a ZeroMQ PUB
socket; then the next frame. No
queue, no overlap of capture with inference, no per-topic encoding. It uses the same source, model
and engine options as the node, in the same bench run, so ``node FPS / baseline FPS`` compares
the designs and not two different moments of the machine.

Timed per frame: from the frame's capture stamp (``capture_mono_ns``, the same stamp the node's
``capture -> publish`` starts from) to the return of ``send``, on the monotonic clock; the wait
for a paced source's next frame is thus not counted, as in the node. FPS is frames / seconds of
the loop. No subscriber is attached: PUB discards a message with no peers after
queueing it, so the baseline pays for the send call but not for a receiver (this flatters it).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from perception.bench.cases import open_engine
from perception.bench.stats import summarize_ms
from perception.contracts import OUTPUT_CLASS_IDS
from perception.preprocess import Preprocessor


def run_serial_baseline(
    *,
    model: Path,
    source: str,
    source_options: dict[str, Any],
    duration_s: float,
    engine: str = "ort",
    provider: str | None = None,
    threads: int | None = None,
    precision: str = "auto",
    warmup: int = 2,
    tick=None,
) -> dict[str, Any]:
    """Run the serial loop for ``duration_s`` seconds; returns the ``baseline`` block of the bench JSON.

    ``source_options`` are the keyword options of ``perception.sources.open_source`` (the node's
    own), ``warmup`` the untimed calls on the first frame before the timing starts (the pipeline
    bench gives as many as the node made before its window: ``pipeline.baseline_warmup``),
    ``tick(n)`` is called after each frame (progress bar). Raises SourceError / ModelError /
    ConfigError for a bad source or model.
    """
    from perception.sources import open_source

    eng = open_engine(model, engine, provider, threads, precision=precision)
    preprocessor = Preprocessor(eng.metadata.input_hw)
    src = open_source(source, **source_options)
    ctx = zmq.Context.instance()
    pub = ctx.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    try:
        pub.bind("tcp://127.0.0.1:*")
        topic = b"baseline/class_map"
        first = src.read()
        if first is None:
            return {"frames": 0, "fps": None, "latency_ms": summarize_ms([]), "samples_ms": [],
                    "note": "the source delivered no frames"}
        batch = preprocessor(first.image)
        for _ in range(warmup):  # untimed, as the node's warm-up and first frame (``baseline_warmup``)
            eng.infer(batch)
        samples_ns = []
        t_start = time.monotonic_ns()
        deadline = t_start + int(duration_s * 1e9)
        while time.monotonic_ns() < deadline:
            frame = src.read()
            if frame is None:
                break
            batch = preprocessor(frame.image)
            class_ids = preprocessor.letterbox.content(eng.infer(batch)[OUTPUT_CLASS_IDS][0])
            pub.send_multipart([topic, np.ascontiguousarray(class_ids).tobytes()])
            samples_ns.append(time.monotonic_ns() - frame.capture_mono_ns)
            if tick is not None:
                tick(1)
        elapsed_s = (time.monotonic_ns() - t_start) / 1e9
    finally:
        pub.close()
        src.close()
    samples_ms = [ns / 1e6 for ns in samples_ns]
    return {
        "design": "one thread: read -> letterbox -> infer -> send raw mask (padding cut) on PUB",
        "timed": "capture stamp -> send returned",
        "warmup_runs": warmup,
        "frames": len(samples_ms),
        "elapsed_s": round(elapsed_s, 4),
        "fps": len(samples_ms) / elapsed_s if elapsed_s > 0 else None,
        "provider": str(eng.provider),
        "latency_ms": summarize_ms(samples_ms),
        "samples_ms": [round(s, 4) for s in samples_ms],
    }
