"""The frames of a view's ``--source`` paired with a node's masks by seq (``SourcePairing``), for
``perception view --endpoint E --namespace NS --source S``: a view that joins a node at frame seq N
must bring its own copy of the node's source to frame N first.

- The first source frame is compared with the node's frame size (the masks' ``source_width`` /
  ``source_height``) before any catch-up: a source of another size is handed back at once, for
  ``view_node`` to refuse (``WrongSource``), not after reading up to the node's seq.
- The synthetic world skips ahead (``SyntheticSource.seek``: the frames between are not rendered);
  other sources (a video file, an image folder) are read frame by frame: a video's frame seek
  (``CAP_PROP_POS_FRAMES``) lands on a keyframe near the frame asked for in many files, not on it.
- Either way a stop (Ctrl-C, SIGTERM) or the end of ``--duration`` ends the catch-up, and the view
  with it, as a stop ends it at any other time (what was written is kept); a catch-up of
  ``CATCH_UP_SAID`` frames or more is said in one info line.
"""

from __future__ import annotations

import logging
import threading
import time

import numpy as np

log = logging.getLogger("perception.view")  # the command's name, which its lines show

#: A catch-up of this many frames or more is said (one info line); a few frames that the node
#: dropped between two masks are caught up without a word.
CATCH_UP_SAID = 30


class SourcePairing:
    """The frame of ``source`` with a node's seq (``image``). ``stop`` and ``deadline`` (monotonic
    s, or None) end a catch-up; why the view must end is appended to ``ended``."""

    def __init__(self, source, *, spec: str, stop: threading.Event, deadline: float | None,
                 ended: list[str]) -> None:
        self.source = source
        self.spec = spec
        self.stop = stop
        self.deadline = deadline
        self.ended = ended
        self.frame = None  # the last frame read

    def image(self, seq: int, node_hw: tuple[int, int] | None, dark_hw: tuple[int, int]) -> np.ndarray | None:
        """The source frame of ``seq``; a dark frame of ``dark_hw`` when the source is past it (the
        node started again); the first source frame itself, uncaught-up, when it is not of
        ``node_hw`` (the caller refuses it); None when the view must end (the source ended, a stop,
        ``--duration``)."""
        if self.frame is None:
            self.frame = self._read(seq)
            if self.frame is None:
                return None
            if node_hw is not None and self.frame.image.shape[:2] != tuple(node_hw):
                return self.frame.image  # not the node's source: refused before any catch-up
        if self.frame.seq < seq and not self._catch_up(seq):
            return None
        if self.frame.seq == seq:
            return self.frame.image
        return np.zeros((*dark_hw, 3), np.uint8)

    def _read(self, seq: int):
        frame = self.source.read()
        if frame is None:
            self.ended.append(f"--source {self.spec} ended before frame seq {seq} of the node's masks; "
                              "give the node's own source (and --seed)")
        return frame

    def _must_stop(self) -> bool:
        return self.stop.is_set() or (self.deadline is not None and time.monotonic() >= self.deadline)

    def _catch_up(self, seq: int) -> bool:
        """Bring the source to frame ``seq``; False when the view must end first."""
        behind = seq - self.frame.seq
        seek = getattr(self.source, "seek", None)
        if behind >= CATCH_UP_SAID:
            how = ("skipped to, not rendered" if seek is not None else
                   "read one by one; --duration and Ctrl-C end the view meanwhile")
            log.info("--source %s: catching up %d frames to the node's frame seq %d (%s)", self.spec, behind, seq, how)
        if seek is not None and behind > 1:
            if not seek(seq, stop=self._must_stop):
                return self._interrupted(seq)
            frame = self._read(seq)
            if frame is None:
                return False
            self.frame = frame
        while self.frame.seq < seq:
            if self._must_stop():
                return self._interrupted(seq)
            frame = self._read(seq)
            if frame is None:
                return False
            self.frame = frame
        return True

    def _interrupted(self, seq: int) -> bool:
        if not self.stop.is_set():  # --duration: why a view that drew nothing ended so
            self.ended.append(f"--duration ended while --source {self.spec} was catching up to the node's frame "
                              f"seq {seq} ({self.source.frames_read} of its frames in)")
        return False
