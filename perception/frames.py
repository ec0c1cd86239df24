"""Sample frames for judging engines: what ``perception bench engine`` times its engines on and
``--engine auto``'s probe judges agreement with (``python -m perception.engines.auto --frames``):
synthetic road scenes, or with ``--frames SPEC`` a dataset's val images or a video file or image
folder, each letterboxed into the model input as the node does. Runtime code (the probe child
reads it), so it imports nothing from the build side."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from perception.errors import ConfigError, PerceptionError

#: ``--frames`` from a video or image folder: every this-many-th frame (neighbours are near copies).
SOURCE_FRAME_STRIDE = 10


def _is_dataset_spec(spec: str) -> bool:
    """``--frames SPEC`` names a dataset (``camvid:PATH``), not a file or folder of that name."""
    from perception.datasets import dataset_kinds

    return not Path(spec).exists() and spec.partition(":")[0].strip() in dataset_kinds()


def is_frames_path(spec: str) -> bool:
    """``spec`` (``--calib``, ``--verify-data``) is a video file or an image folder that exists, read
    as frames without labels, not a dataset spec (``camvid:PATH``, ``folder:PATH``, ``synthetic``)."""
    return bool(spec) and not _is_dataset_spec(spec) and Path(spec).exists()


def frames_description(spec: str, seed: int) -> str:
    """Where the bench frames came from, for the report."""
    if not spec:
        return f"synthetic road scenes (seed {seed})"
    if _is_dataset_spec(spec):
        return f"val images of {spec}"
    return f"every {SOURCE_FRAME_STRIDE}th frame of {spec}"


def bench_frames(input_hw: tuple[int, int], count: int, seed: int, spec: str = "") -> list[np.ndarray]:
    """Up to ``count`` uint8 H x W x 3 BGR frames at ``input_hw``: synthetic road scenes (``seed``),
    or with ``spec`` a dataset's val images spread over it, or every SOURCE_FRAME_STRIDE-th frame of
    a source, letterboxed as the node does.

    Raises:
        ConfigError, DataError, SourceError: the frames cannot be read or there are none; the
            message names ``--frames``.
    """
    from perception.options import synthetic_hw_near
    from perception.preprocess import letterbox_image
    from perception.sources import open_source

    what = f"--frames {spec}" if spec else "the synthetic source"
    frames: list[np.ndarray] = []
    try:
        if spec and _is_dataset_spec(spec):  # spread over the split, as the export gates pick theirs
            from perception.datasets import open_dataset

            dataset = open_dataset(spec, split="val")
            indices = np.linspace(0, len(dataset) - 1, num=min(count, len(dataset))).round().astype(int)
            frames = [letterbox_image(dataset.image(int(i)), input_hw)[0] for i in dict.fromkeys(indices.tolist())]
        elif spec:
            frames = source_frames(spec, input_hw, count, SOURCE_FRAME_STRIDE)
        else:  # rendered at the input size (where the synthetic camera draws it): no letterbox then
            h, w = synthetic_hw_near(input_hw)
            frames = _read(open_source("synthetic", width=w, height=h, seed=seed), input_hw, count, 1)
    except PerceptionError as exc:
        raise type(exc)(f"{what}: {exc}") from None
    if not frames:
        raise ConfigError(f"{what} delivered no frames; give a video file, an image folder or a dataset spec such "
                          "as camvid:PATH")
    return frames


def source_frames(spec: str, input_hw: tuple[int, int], count: int, stride: int) -> list[np.ndarray]:
    """Up to ``count`` frames of the source ``spec`` (a video file or image folder), every
    ``stride``-th, letterboxed into ``input_hw`` as the node does. SourceError/ConfigError when it
    cannot be opened or read."""
    from perception.sources import open_source

    return _read(open_source(spec), input_hw, count, stride)


def _read(source, input_hw: tuple[int, int], count: int, stride: int) -> list[np.ndarray]:
    """Every ``stride``-th of the first ``count * stride`` frames of ``source`` (closed after),
    letterboxed into ``input_hw``, read as fast as it gives them."""
    from perception.preprocess import letterbox_image

    source.pace(None)  # sample frames need no pacing
    frames: list[np.ndarray] = []
    try:
        for index in range(count * stride):
            frame = source.read()
            if frame is None:
                break
            if index % stride == 0:
                frames.append(letterbox_image(frame.image, input_hw)[0])
    finally:
        source.close()
    return frames
