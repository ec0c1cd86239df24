"""The node's mask stage: one inferred frame -> class map -> masks and obstacle blobs -> publisher.

The publish thread of ``perception/pipeline.py`` hands every inferred frame (``Inferred``: the
model-size class ids, the confidence when unknown marking is on, the letterbox geometry, the
stage latencies so far) to ``MaskStage.publish``, in capture order. It marks unsure pixels
unknown, cuts the letterbox padding off (or maps the class map back to the source size), builds
only the masks and obstacle blobs someone subscribes to (``perception/masks.py``), sends them
(``perception/publish.py``) and returns the frame's latencies with ``postprocess`` added. It also
latches the ``<namespace>/info`` document, again whenever the source size or the model changes
(``--engine auto`` switching engines).
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from perception import contracts
from perception.engines.base import Engine
from perception.masks import MaskBuilder, obstacle_blobs, unknown_marker_for
from perception.preprocess import Letterbox
from perception.run_config import RunConfig
from perception.stats import FractionMeter
from perception.wire import MaskGeometry

log = logging.getLogger(__name__)


#: The ego reach warns once when it empties the drivable mask of this many frames in a row, each
#: with at least this share of the frame in the drivable classes.
EMPTIED_FRAMES_WARNING = 30
EMPTIED_SHARE = 0.1


@dataclass
class Inferred:
    """What the inference thread hands to the publish thread for one frame."""

    seq: int
    capture_ns: int
    capture_mono_ns: int
    class_ids: np.ndarray  # model-size H x W uint8
    letterbox: Letterbox
    latency_ms: dict[str, float]
    confidence: np.ndarray | None = None  # model-size H x W uint8, when unknown marking is on


class MaskStage:
    """Masks, obstacle blobs and the info document for one node (see the module docstring).
    ``publisher`` is a ``MaskPublisher`` or any object with its ``publish_masks``, ``publish_json``
    and, optionally, ``set_info``, ``subscribed`` and ``topic_encodings``."""

    def __init__(self, config: RunConfig, *, engine: Engine, publisher: Any) -> None:
        self.config = config
        self.engine = engine
        self.publisher = publisher
        publish = config.publish_options
        self.masks = MaskBuilder(
            engine.metadata.class_table, model=engine.model_id, overrides={k: list(v) for k, v in publish.task.items()},
            per_class_obstacles=publish.per_class_obstacles, drivable_reach=publish.drivable_reach,
        )
        # Unknown marking (a model with a confidence output): decided and logged once, here.
        self.unknown = unknown_marker_for(engine.has_confidence, engine.metadata.unknown_threshold,
                                          publish.unknown_threshold, model=engine.model_id)
        self.unknown_fraction = FractionMeter()
        # The ego reach: the share of the drivable classes' pixels cut per frame, and frames it emptied.
        self.reach_cut = FractionMeter()
        self.reach_emptied = FractionMeter()
        self._emptied_run = 0
        self._source_map: np.ndarray | None = None
        self._num_classes = engine.metadata.class_table.num_classes
        self._outside_ids_frames = 0
        #: Frames published while no mask or obstacles topic had a subscriber (nothing built or sent).
        self.frames_unheard = 0
        self._info_source_hw: tuple[int, int] | None = None
        self._info_model_id: str | None = None
        self._said_over_readers_limit = False

    def publish(self, item: Inferred) -> dict[str, float]:
        """Mark, cut, build and send ``item``'s masks (and blobs); its latencies with
        ``postprocess``, ``total`` and ``publish`` added."""
        t0 = time.perf_counter()
        # The first frame, a new source size, or a new model (--engine auto switched engines).
        if item.letterbox.src_hw != self._info_source_hw or self.engine.model_id != self._info_model_id:
            self.publish_info(item.letterbox)
            self._check_readers_limit(item.letterbox)
        if int(item.class_ids.max(initial=0)) >= self._num_classes:
            self._unknown_ids(item)
        if self.unknown is not None:
            self._mark_unknown(item)
        class_map = self._content_map(item)
        # Only what someone receives is computed: masks of unsubscribed topics and the blobs
        # (the dearest step, ~2 ms at 288x384) are skipped while nobody subscribes to them.
        wanted = self._subscribed()
        want_blobs = self.config.publish_options.obstacles and "obstacle" in self.masks.luts and contracts.OBSTACLES_TOPIC in wanted
        built = self.masks.build(class_map, only=wanted | ({"obstacle"} if want_blobs else set()))
        if self.masks.reach is not None and "drivable" in built:
            self._count_reach(*self.masks.last_reach, class_map.size)
        masks = {name: mask for name, mask in built.items() if name in wanted}
        blobs = obstacle_blobs(built["obstacle"], class_map, self.engine.metadata.class_table) if want_blobs else None
        t1 = time.perf_counter()
        latency = item.latency_ms
        latency["postprocess"] = (t1 - t0) * 1e3
        latency["total"] = (time.monotonic_ns() - item.capture_mono_ns) / 1e6
        self.publisher.publish_masks(
            seq=item.seq,
            capture_ns=item.capture_ns,
            frame_id=self.config.publish_options.camera_name,
            masks=masks,
            latency_ms=latency,
            model_id=self.engine.model_id,
            geometry=MaskGeometry.full(item.letterbox.src_hw),
        )
        if blobs is not None:
            self.publisher.publish_json(
                contracts.OBSTACLES_TOPIC,
                {"seq": item.seq, "capture_ns": item.capture_ns, "frame_id": self.config.publish_options.camera_name,
                 "image_hw": list(class_map.shape[:2]), "blobs": blobs},
            )
        latency["publish"] = (time.perf_counter() - t1) * 1e3
        if not masks and blobs is None:
            self.frames_unheard += 1
        return latency

    def _unknown_ids(self, item: Inferred) -> None:
        """A class id the model's table lacks (a broken or mismatched model) is published as
        ``UNKNOWN_CLASS_ID``, never as an id a subscriber would look up in the class table; said
        once, then every 1000th frame, with the count."""
        if not item.class_ids.flags.writeable:
            item.class_ids = item.class_ids.copy()
        outside = item.class_ids >= self._num_classes
        top = int(item.class_ids.max())
        item.class_ids[outside] = contracts.UNKNOWN_CLASS_ID
        self._outside_ids_frames += 1
        if self._outside_ids_frames % 1000 == 1:
            log.warning("model %s output class ids up to %d, outside its class table (%d classes), in %d frame(s) so "
                        "far; those pixels are published as unknown (%d); check the model's metadata (perception "
                        "inspect)", self.engine.model_id, top, self._num_classes, self._outside_ids_frames, contracts.UNKNOWN_CLASS_ID)

    def _mark_unknown(self, item: Inferred) -> None:
        """Unsure pixels become ``UNKNOWN_CLASS_ID`` in the model-size class map, before any mask or
        blob is built from it; the unknown share of the frame's content goes into the stats."""
        if not item.class_ids.flags.writeable:
            item.class_ids = item.class_ids.copy()
        marks = self.unknown.apply(item.class_ids, item.confidence)
        content = item.letterbox.content(marks)  # the padding is never published: not counted
        self.unknown_fraction.add(int(np.count_nonzero(content)) / max(content.size, 1))

    def _count_reach(self, before: int, kept: int, pixels: int) -> None:
        """Stats of the ego reach, and one warning when it keeps emptying the drivable mask: a
        camera that sees the car's hood with a model that has no hood class (``ego_vehicle``)
        leaves the road joined to nothing."""
        self.reach_cut.add((before - kept) / before if before else 0.0)
        emptied = kept == 0 and before >= EMPTIED_SHARE * pixels
        self.reach_emptied.add(float(emptied))
        self._emptied_run = self._emptied_run + 1 if emptied else 0
        if self._emptied_run == EMPTIED_FRAMES_WARNING:
            log.warning(
                "drivable: for %d frames in a row the model saw road (>= %d %% of the frame) but none of it joined "
                "the bottom tenth of the frame, so the drivable mask was empty; if the camera sees the car's hood "
                "and model %s has no ego_vehicle class, run with --drivable-reach all",
                EMPTIED_FRAMES_WARNING, round(100 * EMPTIED_SHARE), self.engine.model_id,
            )

    def reach_stats(self, final: bool) -> dict[str, Any]:
        """``drivable`` in the stats: the reach in effect and, for ``ego``, the share of the
        drivable classes' pixels it cut and the share of frames it emptied (interval or run)."""
        if self.masks.reach is None:
            return {"reach": self.masks.drivable_reach}
        cut = self.reach_cut.summary(final=final)
        emptied = self.reach_emptied.summary(final=final)
        return {"reach": "ego", "cut": cut["fraction"], "cut_max": cut["fraction_max"],
                "emptied": emptied["fraction"], "frames": cut["frames"]}

    def info(self, letterbox: Letterbox | None) -> dict[str, Any]:
        """The ``<namespace>/info`` document: what a consumer in any language needs to read the
        masks (see the README's wire-format section). ``letterbox`` is the latest frame's
        geometry (None before the first frame: the source size is not known yet)."""
        metadata = self.engine.metadata
        table = metadata.class_table
        geometry = None
        if letterbox is not None:
            mask_hw = letterbox.src_hw if self.config.publish_options.mask_size == "source" else letterbox.content_hw
            geometry = {"source_hw": list(letterbox.src_hw), "mask_hw": list(mask_hw),
                        **MaskGeometry.full(letterbox.src_hw).fields(*mask_hw)}
        publisher_encodings = getattr(self.publisher, "topic_encodings", None)
        return {
            "wire_version": contracts.WIRE_VERSION,
            "frame_id": self.config.publish_options.camera_name,
            "model_id": self.engine.model_id,
            "metadata_sha256": hashlib.sha256(metadata.to_json().encode("utf-8")).hexdigest(),
            "classes": [{"id": c.id, "name": c.name, "color_rgb": list(c.color)} for c in table.classes],
            "ignore_id": table.ignore_id,
            "unknown_id": contracts.UNKNOWN_CLASS_ID,
            "unknown_threshold": self.unknown.threshold if self.unknown is not None else 0.0,
            "drivable_reach": self.masks.drivable_reach,
            "task_groups": {task: list(names) for task, names in self.masks.task_classes.items()},
            "input_hw": list(self.engine.input_hw),
            "mask_size": self.config.publish_options.mask_size,
            "geometry": geometry,
            "topics": publisher_encodings(self.masks.topics) if publisher_encodings is not None else {},
        }

    def publish_info(self, letterbox: Letterbox | None) -> None:
        """Latch the info document on the publisher (sent when it changes, and to late subscribers)."""
        set_info = getattr(self.publisher, "set_info", None)
        if set_info is not None:
            set_info(self.info(letterbox))
            self._info_source_hw = None if letterbox is None else letterbox.src_hw
            self._info_model_id = self.engine.model_id

    def _check_readers_limit(self, letterbox: Letterbox) -> None:
        """Warn once when masks of this frame's size are over the readers' default
        ``--max-mask-pixels`` (``contracts.MAX_MASK_PIXELS``, 4096x4096): every default subscriber
        (``perception listen``/``record``/``view``, the C and JS clients) skips them, while the node
        publishes them (a camera over 16.7 MP with ``--mask-size source``)."""
        if self._said_over_readers_limit:
            return
        mask_hw = letterbox.src_hw if self.config.publish_options.mask_size == "source" else letterbox.content_hw
        pixels = mask_hw[0] * mask_hw[1]
        if pixels <= contracts.MAX_MASK_PIXELS:
            return
        self._said_over_readers_limit = True
        log.warning("masks of %dx%d = %d pixels are over the readers' default --max-mask-pixels %d (4096x4096): "
                    "subscribers skip every one of them unless they raise it (--max-mask-pixels %d for perception "
                    "listen/record/view and the C and JS clients); or publish masks at the model's scale "
                    "(--mask-size model)", mask_hw[0], mask_hw[1], pixels, contracts.MAX_MASK_PIXELS, pixels)

    def _content_map(self, item: Inferred) -> np.ndarray:
        """The class map without invented pixels: the letterbox padding is cut off (``model``: the
        content region at model scale) or the content resized to the camera frame (``source``).
        Either way the masks and obstacle blobs cover the whole camera frame and nothing else
        (``MaskGeometry.full``), and no mask pixel comes from padding."""
        letterbox = item.letterbox
        if self.config.publish_options.mask_size == "source":
            shape, fill = letterbox.src_hw, letterbox.to_source
        else:
            shape, fill = letterbox.content_hw, None
            if not letterbox.padded:
                return item.class_ids
        if self._source_map is None or self._source_map.shape != shape:
            self._source_map = np.empty(shape, dtype=np.uint8)
        if fill is not None:
            return fill(item.class_ids, out=self._source_map)
        # A contiguous copy of the content view: codecs and cv2 want whole rows (~0.05 ms at 288x384).
        np.copyto(self._source_map, letterbox.content(item.class_ids))
        return self._source_map

    def _subscribed(self) -> set[str]:
        """The mask topics and the obstacles document that a subscriber receives now (every one
        with a publisher that cannot tell, e.g. a test double without ``subscribed``)."""
        names = [*self.masks.topics, contracts.OBSTACLES_TOPIC]
        subscribed = getattr(self.publisher, "subscribed", None)
        return set(names) if subscribed is None else subscribed(names)

    def unknown_stats(self, final: bool) -> dict[str, Any]:
        """``unknown`` in the stats: the id, the threshold in effect (0: off) and where it came from,
        and the share of unknown pixels per frame (mean and max over the interval, or the run)."""
        if self.unknown is None:
            return {"id": contracts.UNKNOWN_CLASS_ID, "threshold": 0.0, "enabled": False}
        return {"id": contracts.UNKNOWN_CLASS_ID, "threshold": self.unknown.threshold, "enabled": True,
                "set_by": self.unknown.set_by, **self.unknown_fraction.summary(final=final)}
