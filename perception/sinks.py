"""Where rendered frames go: a window, a video file, one PNG or a folder of numbered PNGs.

``FrameSink(out, fps=...)`` takes frames from ``perception view`` and ``perception demo``;
``resolve_output(out)`` picks a window when a display can be opened (``window_unavailable``: a
``$DISPLAY`` that is set but cannot be reached, as after a dead ``ssh -X``, falls back with one
warning, where OpenCV's Qt would abort the process) and ``out/view.mp4`` otherwise. A file or
folder ``out`` is checked writable when the sink is made, before any work. A sink that wrote
nothing removes the folders it made for ``out`` when it closes, as ``missing_folders`` /
``remove_empty_folders`` let other commands do. A video has the first frame's
size; a later frame of another size is letterboxed into it (aspect kept, black bars), said once.
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from perception import cvpath
from perception.errors import ConfigError, file_in_the_way
from perception.preprocess import Letterbox

log = logging.getLogger(__name__)

#: Frame rate of written videos when --fps is not given.
DEFAULT_VIDEO_FPS = 10.0
VIDEO_SUFFIXES = {".mp4": "mp4v", ".avi": "MJPG"}
#: The names of the numbered PNGs a folder output receives (``view_000001.png``, ...; the number
#: takes 6 digits or more, so the millionth frame is ``view_1000000.png``, and a later view still
#: knows it for an earlier view's frame).
FOLDER_FRAME_NAME = re.compile(r"view_[0-9]{6,}\.png")


#: How long ``window_unavailable`` waits for an X server to answer (a DISPLAY on a host whose
#: firewall drops packets would otherwise hold the view for a TCP time-out).
X_PROBE_TIMEOUT_S = 5.0
#: ``xcb_connection_has_error`` codes said in the warning when libxcb itself said nothing.
_XCB_ERRORS = {5: "not an X display name", 6: "the X server has no such screen"}


def has_display() -> bool:
    """Whether OpenCV can open a window here (``window_unavailable`` says why not)."""
    return window_unavailable() is None


#: The output of a view given no ``--out`` where no window can open (``resolve_output``). This
#: very object, not an equal path (a user's ``--out out/view.mp4``), is what ``FrameSink`` names
#: as the default in its errors.
DEFAULT_VIEW_OUT = Path("out/view.mp4")
#: How often the display probe looks at its ``stop`` event while it waits for an X server.
_PROBE_SLICE_S = 0.05


def window_unavailable(stop: threading.Event | None = None) -> str | None:
    """Why ``cv2.imshow`` cannot open a window here, naming the variable; None when it can.

    OpenCV's windows are Qt's, and Qt ends the process (a C-level abort, exit 134, which no Python
    handler catches) when the display it is given cannot be opened: a ``$DISPLAY`` left by a dead
    ``ssh -X`` forward, one passed into a container without the X socket, or a Wayland session
    (the Qt of the opencv-python wheel has only the ``xcb`` platform plugin, so ``$WAYLAND_DISPLAY``
    alone is no display for it; XWayland sets ``$DISPLAY``). So the display is opened first with
    libxcb, as Qt's xcb plugin would open it (same library, same ``$XAUTHORITY``): ``xcb_connect``
    never aborts, it returns a connection marked with an error. It costs a few milliseconds (no Qt,
    no window) and is bounded by ``X_PROBE_TIMEOUT_S``, or by ``stop`` (set by SIGTERM or Ctrl-C while
    it waits: it stops waiting at once, and what it returns is then of no use to anyone)."""
    display = os.environ.get("DISPLAY")
    wayland = os.environ.get("WAYLAND_DISPLAY")
    if not display and not wayland:
        return "no display ($DISPLAY / $WAYLAND_DISPLAY unset)"
    if not sys.platform.startswith("linux"):
        return None  # no Qt xcb there: OpenCV's own windows
    if not display:
        return (f"$WAYLAND_DISPLAY={_shown(wayland)} is set but $DISPLAY is not, and OpenCV's window needs an X "
                "display (XWayland sets $DISPLAY)")
    problem = _x_display_problem(display, stop)
    return f"$DISPLAY={_shown(display)} is set, but {problem}" if problem else None


def _shown(value: str) -> str:
    from perception.wire import printable

    return printable(value[:80])


def _x_display_problem(display: str, stop: threading.Event | None = None) -> str | None:
    """Why the X display ``display`` cannot be opened (libxcb's ``xcb_connect``), None when it can.
    What libxcb writes to stderr about a refusal (the server's reason, e.g. "Authorization
    required, ...") is taken into the answer instead."""
    try:
        xcb = ctypes.CDLL("libxcb.so.1")
    except OSError:
        return "libxcb.so.1, which OpenCV's window opens it with, is not installed"
    xcb.xcb_connect.restype = ctypes.c_void_p
    xcb.xcb_connect.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
    xcb.xcb_connection_has_error.restype = ctypes.c_int
    xcb.xcb_connection_has_error.argtypes = [ctypes.c_void_p]
    xcb.xcb_disconnect.restype = None
    xcb.xcb_disconnect.argtypes = [ctypes.c_void_p]
    errors: list[int] = []

    def probe() -> None:
        conn = xcb.xcb_connect(display.encode(errors="surrogateescape"), None)
        error = xcb.xcb_connection_has_error(conn) if conn else 1
        if conn and not error:
            xcb.xcb_disconnect(conn)  # an error connection is libxcb's own static one: not freed
        errors.append(error)

    # A daemon thread: a connect that hangs is left behind (ctypes released the GIL), not waited on.
    thread = threading.Thread(target=probe, name="x-display-probe", daemon=True)
    with tempfile.TemporaryFile() as said:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(said.fileno(), 2)
        try:
            thread.start()
            # In slices that look at ``stop``: a display that never answers must not hold off a stop
            # signal for the whole time-out (the handlers that set ``stop`` are in place by now).
            deadline = time.monotonic() + X_PROBE_TIMEOUT_S
            while thread.is_alive() and time.monotonic() < deadline and not (stop is not None and stop.is_set()):
                thread.join(min(_PROBE_SLICE_S, max(0.0, deadline - time.monotonic())))
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        said.seek(0)
        reason = " ".join(said.read(400).decode("utf-8", "replace").split())
    if not errors:
        if stop is not None and stop.is_set():
            return "stopped before an X server answered there"
        return f"no X server answered there within {X_PROBE_TIMEOUT_S:g} s"
    if not errors[0]:
        return None
    from perception.wire import printable

    why = printable(reason[:200]) or _XCB_ERRORS.get(errors[0]) or \
        "no X server there, a closed ssh -X forward, or one that refused this client"
    return f"no X display can be opened there ({why})"


class FrameSink:
    """Receives rendered frames: a window, a video file, one PNG or a folder of PNGs.

    ``write(frame)`` returns False once the user closed the window (q or Esc). ``close()``
    finishes the file. Frames may change size; a video is fixed to the first frame's size, and a
    frame of another size is letterboxed into it, keeping its aspect (one warning says so).
    """

    def __init__(self, out: Path | None, *, fps: float) -> None:
        self.out = out
        self.fps = fps
        self.frames = 0
        self._writer: cv2.VideoWriter | None = None
        self._size: tuple[int, int] | None = None
        self._last: np.ndarray | None = None
        self._letterboxed = False  # a frame of another size than the video's has been fitted (and said so)
        if out is None:
            self.mode = "window"
        elif out.suffix.lower() in VIDEO_SUFFIXES:
            self.mode = "video"
        elif out.suffix.lower() == ".png":
            self.mode = "png"
        elif out.suffix:
            raise ConfigError(
                f"--out {out}: unknown file type; use .mp4, .avi, .png or a folder for numbered PNGs"
            )
        else:
            self.mode = "folder"
        #: Folders made for ``out`` here: removed again by ``close`` when nothing was written.
        self.created: list[Path] = []
        if out is not None:
            # Made now, so an unwritable --out fails before any work, not at the first frame.
            # No --out given (out/view.mp4, view's own): the error names it and the flag to pass.
            default = out is DEFAULT_VIEW_OUT
            what = f"{out} (the default output where no window can open)" if default else "--out"
            fix = "pass --out PATH" if default else "choose a writable path"
            target = out if self.mode == "folder" else out.parent
            if self.mode != "folder" and out.is_dir():
                if default:
                    raise ConfigError(f"{what} is a folder, not a {out.suffix} file; {fix}")
                raise ConfigError(f"--out {out} is a folder, not a {out.suffix} file; choose another --out (a folder "
                                  "of numbered PNGs is named without a suffix)")
            created = missing_folders(target)
            try:
                target.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                remove_empty_folders(created)
                why = file_in_the_way(target) or os_reason(exc)
                raise ConfigError(f"cannot create {target} for {what}: {why}; {fix}") from None
            try:
                # A .png is written only at close, and a long or endless source (synthetic, a
                # camera, a node) would render until Ctrl-C before saying it cannot be: a file
                # is written beside it and removed now (as bench and demo check their outputs).
                check_output_writable(out if self.mode != "folder" else out / "view_000000.png",
                                      fix=f"pass --out PATH ({out} is the default where no window can open)"
                                      if default else "choose a writable --out")
                if self.mode == "video" and not cvpath.opencv_can_take(out):
                    # A video name OpenCV cannot take is opened through an alias: tried now, before any work.
                    try:
                        with cvpath.opencv_name(out):
                            pass
                    except OSError as exc:
                        raise ConfigError(cvpath.unnamable(out, "--out", exc)) from None
            except ConfigError:
                remove_empty_folders(created)
                raise
            self.created = created

    def write(self, frame: np.ndarray) -> bool:
        self.frames += 1
        self._last = frame
        if self.mode == "window":
            cv2.imshow("perception view", frame)
            return cv2.waitKey(1) & 0xFF not in (ord("q"), 27)
        if self.mode == "video":
            if self._writer is None:
                self._size = (frame.shape[1], frame.shape[0])
                fourcc = cv2.VideoWriter_fourcc(*VIDEO_SUFFIXES[self.out.suffix.lower()])
                try:  # a name OpenCV cannot take (not UTF-8) is opened through an alias (cvpath)
                    self._writer = cvpath.video_writer(self.out, fourcc, self.fps, self._size)
                except OSError as exc:
                    raise ConfigError(cvpath.unnamable(self.out, "--out", exc)) from None
                if not self._writer.isOpened():
                    from perception.modelfile import check_writable

                    check_writable(self.out)  # a folder it cannot write to is named as such, not as a format
                    if _disk_full(self.out):  # not the format's fault: a full disk opens no writer either
                        raise ConfigError(f"cannot write video {self.out}: no space left on its disk; free "
                                          "space or choose another --out")
                    raise ConfigError(
                        f"OpenCV cannot write video {self.out}; try --out with .avi or a PNG folder"
                    )
            if (frame.shape[1], frame.shape[0]) != self._size:
                frame = self._fit(frame)
            self._writer.write(frame)
        elif self.mode == "folder":
            self._imwrite(self.out / f"view_{self.frames:06d}.png", frame)
        return True

    def _fit(self, frame: np.ndarray) -> np.ndarray:
        """``frame`` letterboxed into the video's size: scaled to fit, aspect kept, black bars."""
        width, height = self._size
        if not self._letterboxed:
            self._letterboxed = True
            log.warning("frame sizes change (frame %d is %dx%d, the video %dx%d): such frames are letterboxed into "
                        "the video's size, aspect kept; a folder --out keeps each frame's own size",
                        self.frames, frame.shape[1], frame.shape[0], width, height)
        box = Letterbox.fit(frame.shape[:2], (height, width))
        fitted = np.zeros((height, width, 3), np.uint8)
        shrink = box.content_hw[0] < frame.shape[0]
        box.apply(frame, fitted, interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        return fitted

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        if self.mode == "png" and self._last is not None:
            self._imwrite(self.out, self._last)
        if self.mode == "window":
            cv2.destroyAllWindows()
        if self.frames == 0:  # a failed view or demo leaves no empty folder behind
            remove_empty_folders(self.created)

    @staticmethod
    def _imwrite(path: Path, frame: np.ndarray) -> None:
        try:
            written = cvpath.imwrite(path, frame)  # any name: OpenCV is not handed it (cvpath)
        except OSError as exc:  # the system's reason: a full disk is not "choose a writable --out" alone
            raise ConfigError(f"cannot write {path} ({os_reason(exc)}); choose a writable --out") from None
        if not written:
            raise ConfigError(f"cannot write {path}; choose a writable --out")


def _disk_full(path: Path) -> bool:
    """Whether the file system that would hold ``path`` has no block left for this user."""
    try:
        return os.statvfs(path.parent if str(path.parent) else ".").f_bavail == 0
    except (OSError, AttributeError):  # no statvfs (Windows) or the folder is gone
        return False


def os_reason(exc: OSError) -> str:
    """The system's reason in an error line, in lower case as the project's own words are
    (``permission denied``, ``read-only file system``)."""
    return (exc.strerror or str(exc) or type(exc).__name__).lower()


def check_output_writable(path: Path, *, fix: str) -> None:
    """ConfigError ending in ``fix``, before any work, unless a file can be written at ``path``: a
    file is written beside it and removed (``modelfile.check_writable``: a missing or read-only
    folder, ``/proc``, a FIFO or device), and a file already there (through a link, its target) is
    opened for writing, as OpenCV will open it in place (a read-only file in a writable folder
    passes the first test). The file is not changed."""
    from perception.modelfile import check_writable
    from perception.overwrite import is_special_file

    real = path.resolve() if path.is_symlink() else path
    folder = real.parent
    if not is_special_file(path) and folder.is_dir() and not os.access(folder, os.W_OK | os.X_OK):
        read_only = hasattr(os, "statvfs") and bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
        raise ConfigError(f"cannot write {path} ({'read-only file system' if read_only else 'permission denied'}); "
                          f"{fix}")
    check_writable(path, fix=fix)
    if real.is_file():
        try:
            os.close(os.open(real, os.O_WRONLY | getattr(os, "O_NONBLOCK", 0)))  # no O_TRUNC: left as it is
        except OSError as exc:
            raise ConfigError(f"cannot write {path} ({os_reason(exc)}); {fix}") from None


def missing_folders(folder: Path) -> list[Path]:
    """The folders that creating ``folder`` (``mkdir -p``) would make, outermost first: what a
    failed command removes again (``remove_empty_folders``), so that it leaves no empty tree."""
    missing: list[Path] = []
    for each in (folder, *folder.parents):
        if each.exists() or each.is_symlink():
            break
        missing.append(each)
    return missing[::-1]


def remove_empty_folders(folders: list[Path]) -> None:
    """Remove ``folders`` (from ``missing_folders``), innermost first, each only while it is empty:
    whatever a command did write stays."""
    for folder in reversed(folders):
        try:
            folder.rmdir()
        except FileNotFoundError:
            continue
        except OSError:  # not empty (something was written): nor are the folders around it
            return


def resolve_output(out: Path | None, stop: threading.Event | None = None) -> Path | None:
    """``out`` as given; with none, a window if one can open (``window_unavailable``), else
    ``out/view.mp4`` (``DEFAULT_VIEW_OUT``): said at info level when no display is set, as one
    warning naming the variable when one is set but cannot be opened. ``stop`` set while the
    display is probed ends the wait at once; then nothing is said (the caller stops)."""
    if out is not None:
        return out
    why = window_unavailable(stop)
    if why is None:
        return None
    default = DEFAULT_VIEW_OUT
    if stop is not None and stop.is_set():
        return default
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        log.warning("%s; writing %s instead of a window", why, default)
    else:
        log.info("%s; writing %s", why, default)
    return default
