"""A view of a running node's masks (``perception view --endpoint E --namespace NS``): ``node_frames``
draws them as they arrive, in the colours of the node's own class table (``node_class_table``, from
its latched ``<NS>/info``; ``_NodeColours`` decides what is drawn and says once what cannot be), at
the node's rate measured from its capture times (``node_rate``) when nothing else gives one, and
says why a view that received nothing under ``--namespace`` ended empty (``NothingReceived``; masks
under deeper namespaces: ``ElsewhereReceived``, found by ``_DeeperNamespaces``). ``perception.view``
runs it and writes its frames; the rules are in that module's docstring.
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Container
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from perception import contracts
from perception.commands.listen import cut_off_line, no_messages_hint
from perception.config import cut
from perception.contracts import ClassInfo, ClassTable
from perception.overlay import render_overlay
from perception.preprocess import Letterbox
from perception.sinks import DEFAULT_VIDEO_FPS
from perception.sources import native_rate
from perception.stats import RateLimitedLog
from perception.view_catchup import SourcePairing
from perception.wire import printable

if TYPE_CHECKING:  # perception.view runs this module
    from perception.view import SeqGaps, ViewConfig

log = logging.getLogger("perception.view")  # the command's name, which its lines show

#: How long after the first mask a view of a node waits for the node's ``<namespace>/info`` (its
#: class table) before drawing with what it has instead: ``--model``'s table, else tints. A node
#: sends its info to each new subscription at once; the wait covers a mask that overtakes it.
INFO_WAIT_S = 1.0
#: Most completed frames held while that wait lasts, and most bytes of masks they hold (the oldest
#: go first): 64 frames of four 4096 x 4096 masks would be 4 GiB, 128 MiB is two of them.
_MAX_HELD = 64
_MAX_HELD_BYTES = 128 * 2**20
#: A node's class table comes from the network (its info document: up to 255 classes, names of up to
#: 256 characters): its legend shows names cut to this many characters (and ``overlay.legend_rows``
#: rows at most, the classes in the frame first).
_LEGEND_NAME_CHARS = 32
#: A video of a node's masks (no ``--fps``, no source with a rate of its own) plays at the node's
#: rate, measured from the capture times of its first ``RATE_FRAMES`` frames; the first frame waits
#: for them at most ``RATE_WAIT_S`` after the first mask (a slower node: measured from those that came),
#: and no longer than the frames held meanwhile fit ``_MAX_HELD_BYTES`` (large masks: none is dropped).
RATE_FRAMES = 10
RATE_WAIT_S = 2.0
#: Most namespaces under ``--namespace`` that a view which received nothing names (``_DeeperNamespaces``).
_MAX_HEARD_NAMESPACES = 16


class NothingReceived(str):
    """Why a view of a node's masks ended empty when nothing at all arrived (no node there)."""


class ElsewhereReceived(str):
    """Why a view of a node's masks ended empty when none came under ``--namespace`` but masks came
    under namespaces below it (a node of several cameras: ``perception/front``, ``perception/rear``)."""


class WrongSource(str):
    """Why a view of a node's masks stopped: ``--source`` gave a frame of another size than the one
    the node's masks were made of (their header's ``source_height``/``source_width``), so it is not
    the node's source, and drawing its frames under the masks would misplace every one."""


def node_rate(capture_ns: list[int]) -> float | None:
    """The frame rate of a node's masks from the capture times of consecutive frames it sent
    (one a seq, in arrival order): frames per second of capture time over the intervals between
    them, None when that cannot be told (fewer than two frames, no interval left). The capture
    times are on the node's wall clock, which a clock step (NTP, chrony) moves: an interval that
    goes back (a step back, a restart) or is longer than ``_MAX_RATE_INTERVAL_S`` (those frames all
    arrived within ``RATE_WAIT_S``, so their capture times cannot be further apart: a step forward)
    is left out, so one step does not set the rate; every other interval counts as it is, so frames
    that come in bursts (a stream delivering them in clumps) give their mean rate."""
    intervals = [b - a for a, b in itertools.pairwise(capture_ns) if 0 < b - a <= _MAX_RATE_INTERVAL_S * 1e9]
    if not intervals:
        return None
    value = len(intervals) / (sum(intervals) / 1e9)
    return value if 0 < value < 10_000 else None


#: The longest interval between the capture times of two frames that ``node_rate`` takes for the
#: node's: its frames arrive within ``RATE_WAIT_S`` of the first, with a second more for the spread
#: of their latencies; a longer one is a clock step of the node's machine.
_MAX_RATE_INTERVAL_S = RATE_WAIT_S + 1.0


#: The last parts of the node's topics under its namespace: a heard topic ending so (or in
#: ``obstacle/<class>``) is one of a node's, under the namespace before them.
_NODE_TOPIC_NAMES = frozenset({"class_map", *contracts.TASKS, *contracts.JSON_TOPICS, contracts.FRAME_TOPIC})


class _DeeperNamespaces:
    """Which namespaces below ``--namespace`` a node publishes under (``ask``): asked when a view
    of a node's masks received nothing at all, for ``--namespace perception`` on a node of several
    cameras, whose topics are ``perception/<camera>/...``. A SUB socket of its own on
    ``<namespace>/`` that reads topics only (nothing is decoded), open for at most ``PROBE_S``: a
    node sends its latched info to each new subscription at once. Asked only then, not during the
    view, where a second connection would count twice in a node's ``--wait-subscribers``."""

    #: How long ``ask`` waits, at most, and after the first topic heard (the other cameras' info
    #: comes with it).
    PROBE_S = 0.5
    AFTER_FIRST_S = 0.1

    def __init__(self, config: ViewConfig, *, rcvhwm: int, max_frame_bytes: int) -> None:
        import zmq

        from perception.endpoints import check_endpoint, is_ipv6_literal
        from perception.zmq_context import new_context

        self.namespace = config.namespace.rstrip("/")
        self.heard: dict[str, int] = {}  # namespace -> messages heard, at most _MAX_HEARD_NAMESPACES
        self._context = new_context("the view's namespace probe")
        self._socket = self._context.socket(zmq.SUB)
        try:
            self._socket.linger = 0
            self._socket.rcvhwm = rcvhwm
            self._socket.maxmsgsize = max_frame_bytes
            if is_ipv6_literal(check_endpoint(config.endpoint)):
                self._socket.ipv6 = True
            if config.curve_server_key is not None:
                from perception.security import make_curve_client

                make_curve_client(self._socket, server_key_file=config.curve_server_key,
                                  client_secret_file=config.curve_key)
            self._socket.setsockopt(zmq.SUBSCRIBE, (self.namespace + "/").encode("utf-8"))
            self._socket.connect(config.endpoint)
        except BaseException:
            self.close()
            raise

    @classmethod
    def ask(cls, config: ViewConfig, *, rcvhwm: int, max_frame_bytes: int) -> list[str]:
        """The namespaces below ``--namespace`` heard within ``PROBE_S``, sorted (empty when none
        came, or the probe could not be made: it only ever adds to an error line)."""
        try:
            probe = cls(config, rcvhwm=rcvhwm, max_frame_bytes=max_frame_bytes)
        except Exception as exc:  # noqa: BLE001 - a hint only: the error line goes without it
            log.debug("no namespace probe: %s", exc)
            return []
        try:
            end = time.monotonic() + cls.PROBE_S
            while (left := end - time.monotonic()) > 0:
                if probe._socket.poll(max(1, int(left * 1000))):
                    probe.drain()
                    if probe.heard:
                        end = min(end, time.monotonic() + cls.AFTER_FIRST_S)
            return sorted(probe.heard)
        except Exception as exc:  # noqa: BLE001
            log.debug("namespace probe failed: %s", exc)
            return sorted(probe.heard)
        finally:
            probe.close()

    def drain(self, most: int = 1000) -> None:
        """Take what has come (at most ``most`` messages), noting the namespaces of the node topics."""
        import zmq

        for _ in range(most):
            try:
                frames = self._socket.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            except zmq.ZMQError:
                return
            where = self._namespace_of(bytes(frames[0].buffer[:contracts.MAX_TOPIC_BYTES + 1]))
            if where is not None and (where in self.heard or len(self.heard) < _MAX_HEARD_NAMESPACES):
                self.heard[where] = self.heard.get(where, 0) + 1

    def _namespace_of(self, raw: bytes) -> str | None:
        """The namespace a node topic is under, when it lies below ``--namespace``; else None."""
        if len(raw) > contracts.MAX_TOPIC_BYTES:
            return None
        parts = raw.decode("utf-8", "replace").split("/")
        if len(parts) >= 2 and parts[-2] == contracts.PER_CLASS_OBSTACLE_PREFIX.rstrip("/"):
            parts = parts[:-1]  # <ns>/obstacle/<class>
        if len(parts) < 2 or parts[-1] not in _NODE_TOPIC_NAMES:
            return None
        where = "/".join(parts[:-1])
        if not where.startswith(self.namespace + "/"):
            return None  # the namespace itself (its other topics) or beside it
        return printable(cut(where, 120))

    def close(self) -> None:
        if not self._socket.closed:
            self._socket.close(linger=0)
        if not self._context.closed:
            self._context.term()


@dataclass(frozen=True)
class NodeClasses:
    """A class table as a node's ``info`` gives it (ids 0..254 in any order, maybe with gaps, which a
    ``ClassTable`` does not allow): all ``render_overlay`` needs to draw a class map."""

    classes: tuple[ClassInfo, ...]


def node_class_table(info: dict[str, Any]) -> NodeClasses | None:
    """The class table of a node's ``<namespace>/info`` document (checked by the subscriber), by
    id, names cut to ``_LEGEND_NAME_CHARS`` for the legend; None when it lists no classes."""
    classes = sorted((ClassInfo(int(c["id"]), cut(str(c["name"]), _LEGEND_NAME_CHARS), tuple(int(v) for v in c["color_rgb"]))
                      for c in info.get("classes") or ()), key=lambda c: c.id)
    return NodeClasses(tuple(classes)) if classes else None


def _draw_class_map(image: np.ndarray, class_map: np.ndarray, table: ClassTable | NodeClasses, *, alpha: float,
                    caption: str) -> np.ndarray:
    """``render_overlay`` of a class map: its legend is bounded there (``overlay.legend_rows``)."""
    return render_overlay(image, class_map, table, alpha=alpha, caption=caption)


def _rows(table: ClassTable | NodeClasses) -> list[tuple[int, str, tuple[int, ...]]]:
    return [(c.id, c.name, tuple(c.color)) for c in table.classes]


class _NodeColours:
    """Which class table draws a node's class maps: the node's own, from its latched info (also
    when ``--model`` names another: said once); before that arrives, none yet (``decided`` False);
    when none arrived in time (``give_up``), ``--model``'s table if given, else none, said once
    when class maps arrive (without them no table is needed). ``arrived`` is the set of mask names
    received so far (kept by the caller), which the warnings name."""

    def __init__(self, config: ViewConfig, arrived: Container[str]) -> None:
        from perception.modelfile import read_model_metadata

        self.model = config.model
        self.model_table = read_model_metadata(config.model).class_table if config.model else None
        self.info_topic = contracts.topic_name(config.namespace, contracts.INFO_TOPIC)
        self.arrived = arrived
        self.table: ClassTable | NodeClasses | None = None
        self.decided = False
        self.fell_back = False  # drawing without the node's table: the node sent no (usable) info
        self._info: dict[str, Any] | None = None
        self._mismatch_said = False
        self._fallback_unsaid: str | None = None  # why there is no node table, to say once class maps come

    def update(self, info: dict[str, Any] | None, *, give_up: bool, waited_s: float) -> None:
        if info is not None and info is not self._info:
            self._take(info)
        elif info is None and give_up and not self.decided:
            self._fall_back(f"no {self.info_topic} from the node in {waited_s:.1f} s (a node sends its class table there)")
        if self._fallback_unsaid is not None and "class_map" in self.arrived:
            log.warning("%s: %s", self._fallback_unsaid, self._fallback())
            self._fallback_unsaid = None

    def _fall_back(self, why: str) -> None:
        """Draw without the node's table; ``why`` is said once class maps arrive (only they need a table)."""
        self.table, self.decided, self.fell_back = self.model_table, True, True
        self._fallback_unsaid = why

    def _fallback(self) -> str:
        if self.model_table is not None:
            return (f"drawing its class maps with the class table of --model {self.model} "
                    f"({self.model_table.num_classes} classes), right only if the node runs that model")
        tasks = [t for t in contracts.TASKS if t in self.arrived]
        if tasks:
            return f"drawing its {', '.join(tasks)} masks as tints (no class table to colour the class map)"
        return ("only its class maps arrive, and without a class table they cannot be coloured: nothing to draw; "
                "give --model with the node's model")

    def _take(self, info: dict[str, Any]) -> None:
        first = self._info is None
        self._info = info
        table = node_class_table(info)
        model_id = printable(str(info.get("model_id", "?")))  # the node's text, logged: no terminal escapes
        if table is None:
            if not self.fell_back:
                self._fall_back(f"{self.info_topic} of the node's model {model_id} lists no classes")
            return
        if self.table is not None and not self.fell_back and _rows(table) == _rows(self.table):
            self.table = table  # the same table again: info goes to every new subscription
            return
        if self.fell_back and self.decided and self._fallback_unsaid is None:
            log.warning("%s arrived: drawing with the class table of the node's model %s from now on",
                        self.info_topic, model_id)
        elif not first:
            log.info("the node now runs %s: drawing with its class table", model_id)
        if self.model_table is not None and _rows(table) != _rows(self.model_table) and not self._mismatch_said:
            self._mismatch_said = True
            log.warning("the node runs %s, whose class table (%d classes, from %s) is not the one of --model %s "
                        "(%d classes): drawing with the node's; --model is not needed to draw a node's masks",
                        model_id, len(table.classes), self.info_topic, self.model, self.model_table.num_classes)
        self.table, self.decided, self.fell_back, self._fallback_unsaid = table, True, False, None


def _listed_masks(info: dict[str, Any] | None, namespace: str, wanted: list[str]) -> set[str]:
    """The masks of ``wanted`` that a node's info lists among its topics (empty when it lists none:
    a node's info from before the list, or no info)."""
    topics = info.get("topics") if info is not None else None
    if not isinstance(topics, dict):
        return set()
    return {name for name in wanted if contracts.topic_name(namespace, name) in topics}


def v1_frame_masks(masks: dict[str, np.ndarray], frame_hw: tuple[int, int]) -> dict[str, np.ndarray]:
    """Wire version 1 masks cut to the camera frame as a version 2 node cuts them. A v1 mask carries
    no geometry: at the model's size (``--mask-size model``, v1's default) it is the model's whole
    letterboxed output, padding included; at the frame's size (``--mask-size source``) it is the
    frame. Either way it is the frame fitted into the mask by the node's own ``Letterbox`` (centred,
    aspect kept), whose content region is what v2 sends (a mask the frame's size is its own region)."""
    return {name: Letterbox.fit(frame_hw, mask.shape[:2]).content(mask) for name, mask in masks.items()}


def _counted(counts: dict[str, int]) -> str:
    """``class_map (38)`` or ``drivable (40), lane (40)``: the masks that arrived, how many of each."""
    return ", ".join(f"{name} ({n})" for name, n in counts.items())


def node_frames(config: ViewConfig, stop: threading.Event, deadline: float | None, ended: list[str],
                 rate: list[float], *, measure_rate: bool = False, gaps: SeqGaps | None = None):
    """Frames drawn from a node's masks; ends at ``deadline`` (monotonic s) even when none arrive.

    The class map is drawn in the colours of a class table (the node's, else ``--model``'s); the
    drivable / lane / obstacle masks that arrive are drawn as tints when there is no table, or when
    no class map arrives (an endpoint that sends only some masks, as a replay of a recording of some
    topics): what cannot be drawn, and why, is said once. A frame (the masks of one seq) is drawn
    when every mask the node lists in its info has come (the class map alone when that is what is
    drawn), else when the next seq begins or (after the first) nothing arrives for 0.2 s, if it
    holds every mask seen so far (a frame missing one, cut by a drop or joined midway, is left out).
    Masks of wire version 1 (no geometry, letterbox padding included) are cut to the source's frame
    first (``v1_frame_masks``); without a source they are drawn whole, which one warning says.

    With ``measure_rate`` and no rate from the source, the first frame waits until the node's rate is
    known (``RATE_FRAMES`` frames, at most ``RATE_WAIT_S``: ``node_rate``), which goes to ``rate``.

    Appends to ``ended`` why it stopped early, when that explains an empty output; counts in ``gaps``
    the node's frames that never came."""
    from perception.sources import open_source
    from perception.subscribe import MaskSubscriber
    from perception.view import SeqGaps

    arrived: dict[str, int] = {}  # mask name -> messages received, in arrival order
    colours = _NodeColours(config, arrived.keys())  # a live view of the names
    # Everything that can be drawn: which of them the node sends is learnt from what arrives.
    wanted = ["class_map", *contracts.TASKS]
    source = open_source(config.source, config.source_options) if config.source else None
    if source is not None:
        source.pace(None)  # pairing with a node's seq: read as fast as needed to catch up
    rate.extend([r] if source is not None and (r := native_rate(source)) else [])
    sub = MaskSubscriber(config.endpoint, namespace=config.namespace, masks=wanted,
                         curve_server_key=config.curve_server_key, curve_key_file=config.curve_key)
    where = f"{config.endpoint} under {config.namespace}"
    limited = RateLimitedLog(log)
    pairing = (SourcePairing(source, spec=config.source, stop=stop, deadline=deadline, ended=ended)
               if source is not None else None)
    pending: dict[str, np.ndarray] = {}
    pending_seq, pending_model = -1, ""
    pending_v1 = False  # a mask of the pending seq came in wire version 1 (letterbox padding included)
    pending_hw: tuple[int, int] | None = None  # the node's frame (height, width) its masks state (wire v2)
    v1_said = False
    next_seq_seen = False  # a second seq began: the masks of a whole frame have been seen
    done_seq = -1  # the last seq whose masks are complete (drawn or held)
    # complete before the table was known: (seq, model_id, masks, whether any came in wire version 1,
    # the node's frame size the masks state)
    held: deque[tuple[int, str, dict[str, np.ndarray], bool, tuple[int, int] | None]] = deque()
    held_bytes = 0  # of the masks in held: at most _MAX_HELD_BYTES, and _MAX_HELD frames
    draw_s = 0.0  # how long the last frame took to draw and write: the next starts only if it ends in time
    received = False
    drawn_any = False
    tints_said = False
    skipped = 0  # messages that arrived but are not masks
    started = time.monotonic()
    first_mask_s: float | None = None
    give_up_s = math.inf
    rate_decided = not measure_rate or bool(rate)  # a video's rate: the source's, else measured here
    rate_give_up_s = math.inf
    captures: list[int] = []  # capture_ns of the first frames (one a seq), for the node's rate
    gaps = gaps or SeqGaps()

    def complete(masks: dict[str, np.ndarray]) -> bool:
        """Nothing more of this seq is worth waiting for."""
        if colours.decided and colours.table is not None and "class_map" in masks:
            return True  # all that is drawn
        return masks.keys() >= (_listed_masks(sub.info, config.namespace, wanted) or set(wanted))

    def hold(seq: int, model_id: str, masks: dict[str, np.ndarray], v1: bool, node_hw: tuple[int, int] | None) -> None:
        nonlocal pending, done_seq, held_bytes
        held.append((seq, model_id, masks, v1, node_hw))
        held_bytes += sum(m.nbytes for m in masks.values())
        while len(held) > _MAX_HELD or (held_bytes > _MAX_HELD_BYTES and len(held) > 1):
            held_bytes -= sum(m.nbytes for m in held.popleft()[2].values())  # the oldest go first
        pending, done_seq = {}, seq

    def picture(seq: int, masks: dict[str, np.ndarray], node_hw: tuple[int, int] | None) -> np.ndarray | None:
        """The source frame of ``seq`` (a dark one without a --source; the first one, when it is not of
        ``node_hw``: refused by the caller); None when the view must end (``SourcePairing``)."""
        dark_hw = next(iter(masks.values())).shape[:2]
        if pairing is None:
            return np.zeros((*dark_hw, 3), np.uint8)
        return pairing.image(seq, node_hw, dark_hw)

    def v1_cut(image: np.ndarray, masks: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Version 1 masks cut to the frame of ``--source`` (``v1_frame_masks``); without a source
        the frame is unknown, and they are drawn whole on a dark frame of their size (said once)."""
        nonlocal v1_said
        if source is not None:
            if not v1_said:
                log.info("wire version 1 masks from %s hold the model's letterbox padding: cut to the %dx%d frames of "
                         "--source as a version 2 node cuts them (upgrade the node to send them cut)",
                         where, image.shape[1], image.shape[0])
            v1_said = True
            return v1_frame_masks(masks, image.shape[:2])
        if not v1_said:
            log.warning("wire version 1 masks from %s carry no frame size, and at the model's size they hold its "
                        "letterbox padding: drawn whole, padding included, on a dark frame; give --source (the node's "
                        "own) to cut them to its frames, or upgrade the node", where)
        v1_said = True
        return masks

    def draw(image: np.ndarray, seq: int, model_id: str, masks: dict[str, np.ndarray]) -> np.ndarray | None:
        nonlocal tints_said
        caption = f"seq {seq}  {model_id}"
        if colours.table is not None and "class_map" in masks:
            return _draw_class_map(image, masks["class_map"], colours.table, alpha=config.alpha, caption=caption)
        tasks = {t: masks[t] for t in contracts.TASKS if t in masks}
        if not tasks:
            return None  # a class map without a table to colour it (said when the table was decided)
        if not tints_said and "class_map" not in arrived:
            tints_said = True
            log.warning("no class map on %s (the node sends only its %s masks here): drawing those as tints",
                        where, ", ".join(t for t in contracts.TASKS if t in arrived))
        return render_overlay(image, None, None, task_masks=tasks, alpha=config.alpha, caption=caption)

    def decide_rate() -> None:
        nonlocal rate_decided
        rate_decided = True
        measured = node_rate(captures)
        if measured is not None:
            rate.append(round(measured, 2))
            log.info("the video plays at %.2f fps, the node's rate from the capture times of its first %d "
                     "frames (--fps sets another)", rate[0], len(captures))
        else:
            why = (f"{len(captures)} frame(s)" if len(captures) < 2 else
                   f"{len(captures)} frames whose capture times go back or jump by over {_MAX_RATE_INTERVAL_S:g} s, "
                   "though they all came within a few seconds: a clock step on the node's machine")
            log.info("the node's rate cannot be told from its first masks (%s): the video plays at %g fps "
                     "(--fps sets another)", why, DEFAULT_VIDEO_FPS)

    def draw_held():
        """Draw the held frames in order (a generator of drawn frames); False when the view must end."""
        nonlocal held_bytes, drawn_any, draw_s
        while held:
            # A frame of large masks takes seconds to draw and write: --duration ends the view
            # between two of them, and one that would end past it is not begun (once one is drawn).
            if deadline is not None and drawn_any and time.monotonic() + draw_s >= deadline:
                return False
            seq, model_id, masks, v1, node_hw = held.popleft()
            held_bytes -= sum(m.nbytes for m in masks.values())
            began = time.monotonic()
            image = picture(seq, masks, node_hw)
            if image is None:
                return False
            if source is not None and node_hw is not None and image.shape[:2] != node_hw:
                why = WrongSource(
                    f"--source {config.source} gives {image.shape[1]}x{image.shape[0]} frames, but the masks of frame seq "
                    f"{seq} from {where} were made of the node's {node_hw[1]}x{node_hw[0]} frames: it is not the node's "
                    "source; give the node's own --source (and --seed, --width, --height), or leave --source out")
                ended.append(why)
                if drawn_any:
                    log.warning("stopped drawing: %s", why)
                return False
            if v1:
                masks = v1_cut(image, masks)
            drawn = draw(image, seq, model_id, masks)
            if drawn is not None:
                first = not drawn_any
                drawn_any = True
                yield drawn  # back here once the frame is written
                # The first also opened the output (a video writer): not what the next will take.
                draw_s = 0.0 if first else time.monotonic() - began
        return True

    try:
        while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
            msg = sub.recv(timeout_s=0.2)
            now = time.monotonic()
            if msg is None and (refused := sub.cut_off()) is not None:
                # Admitted, then refused for good (a revoked key): nothing more will come.
                why = NothingReceived(cut_off_line(config.endpoint, sum(arrived.values()), refused))
                ended.append(why)
                if drawn_any:
                    log.warning("stopped drawing: %s", why)
                return
            if msg is not None and msg.kind != contracts.KIND_MASK:  # a JSON document on a mask topic: not drawable
                skipped += 1
                limited.warning("kind", "skipped a %r message on mask topic %s", msg.kind, msg.topic)
                msg = None
            if msg is not None:
                received = True
                if first_mask_s is None:
                    first_mask_s = now
                    # Decided before the end of a short --duration, so that the held frames are drawn.
                    give_up_s = min(now + INFO_WAIT_S, deadline - 0.3 if deadline is not None else math.inf)
                    # half of what is left of a short --duration, so the frames held meanwhile are drawn in it
                    rate_give_up_s = min(now + RATE_WAIT_S, (now + deadline) / 2 if deadline is not None else math.inf)
                if not rate_decided and msg.seq != pending_seq and msg.seq != done_seq and msg.capture_ns is not None:
                    captures.append(msg.capture_ns)  # the first mask of a new seq: its frame's capture time
            # Decided before a frame held meanwhile would have to go (large masks), at the latest.
            full = (bool(held) and held_bytes * (len(held) + 1) / len(held) > _MAX_HELD_BYTES) or len(held) >= _MAX_HELD
            if not rate_decided and (len(captures) >= RATE_FRAMES or now >= rate_give_up_s or full or stop.is_set()):
                decide_rate()
            # The wait is said as the rule gave it (a loaded machine may notice its end a little late).
            colours.update(sub.info, give_up=now >= give_up_s, waited_s=min(now, give_up_s) - (first_mask_s or now))
            if msg is None and next_seq_seen and pending and pending.keys() >= arrived.keys():
                # Nothing more came (the last frame before a pause, or of a replay): the frame is
                # whole, as a frame was before it (a first frame may lack masks not seen yet).
                hold(pending_seq, pending_model, pending, pending_v1, pending_hw)
            if msg is not None:
                name = msg.topic.rsplit("/", 1)[-1]
                arrived[name] = arrived.get(name, 0) + 1
                gaps.add(msg.topic, msg.seq, msg.pub_seq)
                if msg.seq != done_seq and msg.seq != pending_seq:
                    # The next seq began: the one before is whole if it holds every mask seen so far
                    # (this one's included: the first seq, joined midway, may lack the first masks).
                    if pending and pending.keys() >= arrived.keys():
                        hold(pending_seq, pending_model, pending, pending_v1, pending_hw)
                    gaps.incomplete += bool(pending) and next_seq_seen  # (a first frame, joined midway, is not)
                    next_seq_seen = next_seq_seen or pending_seq != -1
                    pending, pending_seq, pending_model = {}, msg.seq, msg.header["model_id"]
                    pending_v1, pending_hw = False, None
                if msg.seq != done_seq:
                    pending[name] = msg.data
                    pending_v1 = pending_v1 or msg.header.get("wire_version") == 1
                    if "source_height" in msg.header:
                        pending_hw = (int(msg.header["source_height"]), int(msg.header["source_width"]))
                    if complete(pending):
                        hold(pending_seq, pending_model, pending, pending_v1, pending_hw)
            if held and colours.decided and rate_decided and not (yield from draw_held()):
                return
        waited = time.monotonic() - started
        if config.duration_s and not stop.is_set():
            waited = config.duration_s
        if not received:
            if sub.counters.malformed or sub.counters.version_mismatch or skipped:
                ended.append(f"no drawable masks from {where} in {waited:.1f} s: every message was skipped "
                             f"({sub.last_error or 'not a mask'}); check --namespace and versions")
            elif sub.info is not None:
                ended.append(NothingReceived(
                    f"no masks received from {where} in {waited:.1f} s, only its {colours.info_topic} (model "
                    f"{printable(str(sub.info.get('model_id', '?')))}): the node is there but sent no {', '.join(wanted[:-1])} or "
                    f"{wanted[-1]} mask; is its source delivering frames (see its log), or, replaying, does the "
                    "recording hold its masks?"))
            elif not stop.is_set() and (heard := _DeeperNamespaces.ask(config, rcvhwm=sub.rcvhwm,
                                                                      max_frame_bytes=sub.max_frame_bytes)):
                names = ", ".join(heard[:4]) + (f" and {len(heard) - 4} more" if len(heard) > 4 else "")
                ended.append(ElsewhereReceived(
                    f"no masks received from {where} in {waited:.1f} s, but the node publishes under {names} "
                    f"(a node of several cameras publishes each camera under <namespace>/<camera>); a view draws "
                    f"one camera: give --namespace {heard[0]}"))
            else:
                hint = no_messages_hint("--namespace", curve=bool(config.curve_server_key), endpoint=config.endpoint,
                                        handshake_failure=sub.handshake_failure)
                ended.append(NothingReceived(f"no masks received from {where} in {waited:.1f} s; {hint}"))
        elif not drawn_any:
            ended.append(_nothing_drawable(where, waited, arrived, colours))
    finally:
        sub.close()
        if source is not None:
            source.close()


def _nothing_drawable(where: str, waited_s: float, arrived: dict[str, int], colours: _NodeColours) -> str:
    """Why masks arrived but none could be drawn: what arrived, and what is missing."""
    if not any(t in arrived for t in contracts.TASKS) and colours.decided and colours.table is None:
        return (f"only class maps arrived from {where} in {waited_s:.1f} s ({arrived.get('class_map', 0)} of them), "
                f"and there is no class table to colour them (no {colours.info_topic} from the node with its classes, "
                "and no --model), nor drivable, lane or obstacle masks to tint; give --model with the node's model")
    return (f"{_counted(arrived)} arrived from {where} in {waited_s:.1f} s, but no frame of them was whole before "
            f"the end (the masks of one seq: {', '.join(arrived)}); give a longer --duration")
