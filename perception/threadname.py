"""The operating system's name for the calling thread, so ``top -H``, ``ps -L`` and ``perception
bench pipeline``'s per-thread CPU name the node's stages instead of showing every thread as
``python``. Python names its threads only for itself (up to 3.13), so on Linux this asks the kernel
directly (``prctl(PR_SET_NAME)``, at most 15 bytes); elsewhere it does nothing.
"""

from __future__ import annotations

import ctypes
import sys

_PR_SET_NAME = 15  # linux/prctl.h
_LIBC = None


def set_os_thread_name(name: str) -> bool:
    """Name the calling thread ``name`` (cut to 15 bytes) for the OS; False where that is not possible."""
    global _LIBC
    if not sys.platform.startswith("linux"):
        return False
    try:
        if _LIBC is None:
            # The process's own symbols hold libc's prctl; no library search (find_library runs
            # ldconfig in a subprocess, which a node's start-up should not wait for).
            _LIBC = ctypes.CDLL(None, use_errno=True)
        zero = ctypes.c_ulong(0)  # prctl's unused arguments are unsigned longs
        return _LIBC.prctl(_PR_SET_NAME, ctypes.c_char_p(name.encode("utf-8", "replace")[:15]), zero, zero, zero) == 0
    except (OSError, AttributeError):
        return False
