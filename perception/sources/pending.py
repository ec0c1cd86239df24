"""Opening sources in threads of their own, and the camera of a node of several that was not there
at start-up.

``Opening`` opens one source in a thread (``perception-open``), so that a stop need not wait for
it: a stream that accepts the connection and never answers holds ``cv2.VideoCapture`` in native
code for up to ``--read-timeout``, which no signal interrupts. ``perception run`` opens the cameras
of a node all at once this way, so N streams that do not answer cost one ``--read-timeout`` at
start-up, not N.

``PendingSource`` stands in for a camera of a node of several whose opening failed with
``SourceUnavailableError`` (unplugged, not yet enumerated after boot, its server down): the other
cameras start without it, as they go on when a camera drops out mid-run, and its capture thread
keeps opening it, with the backoff of a reconnect (0.1 s doubling to 5 s; a failed try said at the
10th, 100th and every 1000th), until it opens or the node stops. From then on it is that
source. Before, one camera missing at start-up stopped the whole node, and a launch file restarted
it for as long as that camera stayed away, every other camera dark meanwhile.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from perception.errors import SourceError, hide_credentials, start_thread
from perception.sources.base import Frame, SourceOptions, quoted

log = logging.getLogger(__name__)

#: The first wait before opening a missing camera again, and the longest (a reconnect's).
INITIAL_BACKOFF_S, MAX_BACKOFF_S = 0.1, 5.0
#: How often a wait on an opening looks whether the source was interrupted meanwhile.
POLL_S = 0.05


class Opening:
    """One source being opened in a thread of its own. An opening that a stop ``abandon``s is left
    to end on its own: the source it may still open is closed by its thread, never handed to anyone
    (the process ends past that thread: ``exit_past_native_threads``)."""

    def __init__(self, spec: str, options: Any) -> None:
        self._spec, self._options = spec, options
        self._lock = threading.Lock()
        self._abandoned = False
        self.source: Any = None
        self.error: BaseException | None = None
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._open, name="perception-open", daemon=True)
        start_thread(self._thread, "the thread that opens the source")

    def _open(self) -> None:
        from perception.sources import open_source

        source = None
        try:
            source = open_source(self._spec, self._options)
        except BaseException as exc:  # raised in the caller's thread
            self.error = exc
        with self._lock:
            left = source if self._abandoned else None
            if not self._abandoned:
                self.source = source
        self.done.set()
        if left is not None:
            left.close()

    def abandon(self) -> Any:
        """Give the opening up: the source, when it opened meanwhile (for the caller to close);
        else None, and a source that opens later is closed by the opening's thread."""
        with self._lock:
            self._abandoned = True
            return self.source


class PendingSource:
    """A camera of a node of several that was not there when the node started (see the module
    docstring): live, no frame until it opens, then the source it opened as."""

    live = True

    def __init__(self, spec: str, options: SourceOptions, error: SourceError, camera: str) -> None:
        self.spec, self.options, self.camera = spec, options, camera
        self.first_error = error
        self.tries = 0  # openings tried after the one at start-up
        self._source: Any = None
        self._interrupted = threading.Event()
        self._lock = threading.Lock()
        self._closed = False
        log.warning("camera %s is not there (%s); the other cameras start without it, and it is opened as soon as it "
                    "is (tried again every %g s at most)", quoted(camera), error, MAX_BACKOFF_S)

    @property
    def opened(self) -> bool:
        """Whether the camera has opened (it is that source from then on)."""
        return self._source is not None

    # The counters and names a pipeline reads: the opened source's, or none yet.
    @property
    def frames_read(self) -> int:
        return self._source.frames_read if self._source is not None else 0

    @property
    def corrupt(self) -> int:
        return self._source.corrupt if self._source is not None else 0

    @property
    def reconnects(self) -> int:
        return self._source.reconnects if self._source is not None else 0

    @property
    def skipped(self) -> list[str]:
        return self._source.skipped if self._source is not None else []

    def describe(self) -> str:
        if self._source is not None:
            return self._source.describe()
        return f"{hide_credentials(self.spec)} (not opened yet)"

    def camera_prefix(self) -> str:
        return f"camera {quoted(self.camera)}, "

    def name_camera(self, name: str) -> None:
        self.camera = name
        if self._source is not None:
            self._source.name_camera(name)

    def read(self) -> Frame | None:
        """The next frame of the camera once it opened; until then, keep opening it (None once
        interrupted)."""
        if self._source is None and not self._open_when_there():
            return None
        return self._source.read()

    def _open_when_there(self) -> bool:
        backoff_s = INITIAL_BACKOFF_S
        while not self._interrupted.wait(backoff_s):
            self.tries += 1
            backoff_s = min(backoff_s * 2, MAX_BACKOFF_S)
            opening = Opening(self.spec, self.options)
            while not opening.done.wait(POLL_S):
                if self._interrupted.is_set():
                    left = opening.abandon()
                    if left is not None:
                        left.close()
                    return False
            if opening.error is None:
                with self._lock:
                    if self._closed:  # closed while it opened
                        opening.source.close()
                        return False
                    self._source = opening.source
                self._source.name_camera(self.camera)
                log.info("camera %s is there now: opened after %d more tr%s (%s)", quoted(self.camera), self.tries,
                         "y" if self.tries == 1 else "ies", self._source.describe())
                return True
            if not isinstance(opening.error, SourceError):
                raise opening.error
            if self.tries in (10, 100) or self.tries % 1000 == 0:  # the first failure was said at start
                log.warning("camera %s: try %d to open it failed (%s); next try in %.1f s", quoted(self.camera),
                            self.tries, opening.error, backoff_s)
        return False

    def interrupt(self) -> None:
        self._interrupted.set()
        if self._source is not None:
            self._source.interrupt()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            source = self._source
        self._interrupted.set()
        if source is not None:
            source.close()
