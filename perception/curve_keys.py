"""CURVE key files: ``perception keys`` writes a pair, the node and its clients read them.

Key files are ZeroMQ certificates, in the text ``zmq.auth.create_certificates`` writes (and
``zmq.auth.load_certificate`` and czmq's zcert read): ``<name>.key`` holds the public key,
``<name>.key_secret`` the public and the secret key. They are written here, not by pyzmq's
``create_certificates``, because it writes in place with the umask's mode: an interrupted run would
leave half a file or a secret key readable by others for a moment. The allow-list that reads the
clients' public keys, and the CURVE sockets, are in ``perception/security.py``.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import re
import secrets
import signal
import stat
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import zmq
import zmq.auth
import zmq.auth.certs
from zmq.utils import z85

from perception.errors import ConfigError, PublishError, why_not_a_file

log = logging.getLogger(__name__)

#: Key names `perception keys` writes: letters, digits, '.', '_' and '-', not starting with '.' or '-'.
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")

_warned_open: set[str] = set()  # secret key files warned about as open to other users (once a process)


def create_key_pair(out_dir: str | Path, name: str, *, overwrite: bool = False) -> tuple[Path, Path]:
    """Write ``<out_dir>/<name>.key`` (public) and ``<name>.key_secret`` (public + secret).

    Each file is written to a new temporary file beside it (created exclusively, never through a
    symlink, mode 600 for the secret from its first byte, 644 for the public) and renamed over its
    name, so an interrupted run leaves the old file or the new one, never a partial one or a
    secret readable by others. Both are written before either is renamed, the secret first.

    Returns (public_path, secret_path). Raises ConfigError for a bad name, a symlink at either path,
    or when the files exist and ``overwrite`` is false; PublishError when libzmq was built without
    CURVE.
    """
    if not _SAFE_NAME.match(name or ""):
        raise ConfigError(f"key name {name!r} is not a safe file name; use letters, digits, '.', '_' and '-' "
                          "(not first: '.', '-'), e.g. --name laptop-2")
    if not zmq.has("curve"):
        raise PublishError("this libzmq has no CURVE support; install pyzmq wheels from PyPI (they include it)")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"cannot write keys to {out}: it is a file, not a folder; give a folder for --out "
                          "(created when missing)")
    public, secret = out / f"{name}.key", out / f"{name}.key_secret"
    for path in (public, secret):
        if path.is_symlink():  # written through, it would put the key wherever the link points
            raise ConfigError(f"{path} is a symbolic link; `perception keys` does not write key files through "
                              "links: remove it or pick another --name")
        if path.is_dir():
            raise ConfigError(f"{path} is a folder, not a key file; remove it or pick another --name")
    existing = [str(p) for p in (public, secret) if os.path.lexists(p)]
    if existing and not overwrite:
        verb = "exists" if len(existing) == 1 else "exist"
        raise ConfigError(f"{', '.join(existing)} already {verb}; pick another --name or pass --overwrite")
    public_key, secret_key = zmq.curve_keypair()
    now = datetime.datetime.now()
    texts = {secret: (_certificate_text(_SECRET_BANNER, now, public_key, secret_key), 0o600),
             public: (_certificate_text(_PUBLIC_BANNER, now, public_key), 0o644)}
    # The temporary names are known before either file exists, so whatever point a stop lands at
    # (just after a file is created, at its last close), the clean-up below finds it.
    written = [(_temporary_name(path), path) for path in (secret, public)]
    renaming = stopped = False
    try:
        # Ctrl-C, SIGTERM and SIGHUP are held from the first temporary file to the last rename (a few
        # milliseconds). One that came while the files were written is answered before any rename:
        # the temporary files go and the old pair stays. One that came during the renames finds the
        # new pair in place (a stop between them would leave the new secret beside the old public key).
        with _stop_signals_held() as stop_pending:
            _make_private_folder(out)
            for tmp, path in written:
                _write_new_file(tmp, *texts[path])
            if stop_pending():
                _remove_files(tmp for tmp, _ in written)
                stopped = True
            else:
                renaming = True
                for tmp, path in written:
                    os.replace(tmp, path)
        if stopped:  # the signal's handler raises as the signals are let through; this when it does not
            raise KeyboardInterrupt
    except BaseException as exc:  # Ctrl-C too: leave no temporary file behind, and never half a pair
        # Renamed: its temporary name is gone (a signal may land between a rename and any counter).
        left = [(tmp, path) for tmp, path in written if os.path.lexists(tmp)]
        unfinished = ""
        if renaming and left and len(left) < len(written):  # the secret is in place: its public key must follow it
            try:
                while left:
                    os.replace(*left[0])
                    left.pop(0)
            except OSError:
                unfinished = (f"; {written[0][1]} was replaced but {left[0][1]} could not be, so they do not "
                              "match: run `perception keys --overwrite` again")
        _remove_files(tmp for tmp, _ in left)
        if renaming and not left and not unfinished and isinstance(exc, KeyboardInterrupt):
            # The new pair is in place: the stop came as its last file was renamed, so the command is
            # done; "interrupted" would say the old public key still holds.
            return public, secret
        if not isinstance(exc, OSError) and not unfinished:
            raise
        why = f"{exc.strerror or exc}; check the directory" if isinstance(exc, OSError) else "interrupted"
        raise ConfigError(f"cannot write keys to {out}: {why}{unfinished}") from None
    return public, secret


def _make_private_folder(out: Path) -> None:
    """Make ``out`` (and the folders above it that are missing) for the key files: the folders made
    here are the user's alone (0700, whatever the umask: under umask 000 anyone could have replaced
    the keys); one already there that others may write gets one warning."""
    made = []
    for folder in [out, *out.parents]:
        if folder.exists():
            break
        made.append(folder)
    out.mkdir(parents=True, exist_ok=True)
    for folder in made:
        os.chmod(folder, 0o700)
    mode = None if made else posix_mode(out)
    if mode is not None and mode & 0o022 and not mode & stat.S_ISVTX:  # sticky: others cannot replace them
        log.warning("key folder %s may be written by other users (mode %04o): they could replace the keys; "
                    "chmod 700 %s", out, mode, out)


def _remove_files(paths: Iterable[str]) -> None:
    for path in paths:
        with contextlib.suppress(OSError):
            os.unlink(path)


@contextlib.contextmanager
def _stop_signals_held() -> Iterator[Callable[[], bool]]:
    """Block SIGINT, SIGTERM and SIGHUP in this thread for the block (Python's handlers run once it
    ends), giving a function that says whether one of them came meanwhile; nothing (and never a
    stop) where ``pthread_sigmask`` is missing."""
    block = getattr(signal, "pthread_sigmask", None)
    if block is None:
        yield lambda: False
        return
    held = {s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None}
    previous = block(signal.SIG_BLOCK, held)
    try:
        yield lambda: bool(signal.sigpending() & (held - set(previous)))
    finally:
        block(signal.SIG_SETMASK, previous)


# pyzmq's certificate text (zmq.auth.certs, which ``zmq.auth.load_certificate`` and czmq's zcert
# read): the same banners, then a ``metadata`` and a ``curve`` section.
_PUBLIC_BANNER = getattr(zmq.auth.certs, "_cert_public_banner", None) or (
    "#   ****  Generated on {0} by pyzmq  ****\n"
    "#   ZeroMQ CURVE Public Certificate\n"
    "#   Exchange securely, or use a secure mechanism to verify the contents\n"
    "#   of this file after exchange. Store public certificates in your home\n"
    "#   directory, in the .curve subdirectory.\n\n")
_SECRET_BANNER = getattr(zmq.auth.certs, "_cert_secret_banner", None) or (
    "#   ****  Generated on {0} by pyzmq  ****\n"
    "#   ZeroMQ CURVE **Secret** Certificate\n"
    "#   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions.\n\n")


def _certificate_text(banner: str, now: datetime.datetime, public_key: bytes, secret_key: bytes | None = None) -> str:
    text = banner.format(now) + "metadata\ncurve\n" + f'    public-key = "{public_key.decode("ascii")}"\n'
    if secret_key:
        text += f'    secret-key = "{secret_key.decode("ascii")}"\n'
    return text


def _temporary_name(path: Path) -> str:
    """A new hidden name beside ``path`` for its content before it is renamed over it."""
    return str(path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp"))


def _write_new_file(tmp: str, text: str, mode: int) -> None:
    """Write ``text`` to the new file ``tmp`` (O_EXCL, O_NOFOLLOW, ``mode`` from its creation), to be
    renamed over its file; OSError (the file removed) when it cannot be written."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(tmp, flags, mode)
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, mode)  # the mode asked for, whatever the umask (0600 stays 0600)
        with os.fdopen(fd, "w", encoding="utf-8", closefd=False) as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    finally:
        os.close(fd)


def load_key_pair(secret_file: str | Path, *, role: str) -> tuple[bytes, bytes]:
    """Read (public, secret) Z85 keys from a ``.key_secret`` file; PublishError naming the file.

    A file that other users may read or write gets one warning (``chmod 600``), as ssh gives."""
    path = Path(secret_file)
    public, secret = load_certificate(path, role=role)
    if secret is None:
        raise PublishError(
            f"{role} key file {path} has no secret key; pass the .key_secret file made by `perception keys`"
        )
    if zmq.curve_public(secret) != public:
        raise PublishError(f"{role} key file {path} holds a public key that does not belong to its secret key; "
                           "recreate the pair with `perception keys`")
    warn_if_open(path, role=role)
    return public, secret


def posix_mode(path: Path) -> int | None:
    """The permission bits of ``path`` (following links); None where there are none to check
    (Windows) or it cannot be looked at."""
    if os.name == "nt":
        return None
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return None


def warn_if_open(path: Path, *, role: str) -> bool:
    """One warning (a file a process) when a secret key file is open to other users; True if so."""
    mode = posix_mode(path)
    if mode is None or not mode & 0o077:
        return False
    if str(path) not in _warned_open:
        _warned_open.add(str(path))
        what = "readable" if mode & 0o044 else "writable" if mode & 0o022 else "accessible"
        log.warning("%s key file %s is %s by other users (mode %04o); keep it private: chmod 600 %s",
                    role, path, what, mode, path)
    return True


def load_public_key(public_file: str | Path, *, role: str) -> bytes:
    """Read a Z85 public key from a ``.key`` (or ``.key_secret``) file; PublishError naming the file."""
    public, _ = load_certificate(Path(public_file), role=role)
    return public


#: The most bytes a key file may hold: ``perception keys`` writes about 300 (a public key file)
#: to 400 (a secret one), pyzmq and czmq about as much; a larger file is refused unread, so a
#: huge or endless file in --curve-allow costs neither memory nor time.
MAX_KEY_FILE_BYTES = 16 * 1024

_Z85_CHARS = frozenset(z85.Z85CHARS)  # byte values


class KeyFileGoneError(PublishError):
    """A key file that is not there (any more): removed, or a link to nothing."""


class KeyFileTooLargeError(PublishError):
    """A key file larger than MAX_KEY_FILE_BYTES (``size``: its size, or more), refused unread."""

    def __init__(self, message: str, size: int) -> None:
        super().__init__(message)
        self.size = size


def _read_key_file(path: Path, *, role: str) -> bytes:
    """The bytes of the key file ``path``, read without following it into anything but a regular
    file of at most MAX_KEY_FILE_BYTES (O_NONBLOCK: a FIFO put in its place never blocks)."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise KeyFileGoneError(f"{role} key file {path} not found; create one with `perception keys --out DIR "
                               "--name NAME`") from None
    except OSError as exc:
        raise PublishError(f"{role} key file {path} cannot be read ({exc.strerror or exc}); check its permissions "
                           "or recreate it with `perception keys`") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise PublishError(f"{role} key file {path} is not a regular file; create one with `perception keys "
                               "--out DIR --name NAME`")
        if st.st_size > MAX_KEY_FILE_BYTES:
            raise KeyFileTooLargeError(f"{role} key file {path} is too large for a key file ({st.st_size} bytes, "
                                       f"more than {MAX_KEY_FILE_BYTES}); recreate it with `perception keys`",
                                       st.st_size)
        chunks, total = [], 0
        while total <= MAX_KEY_FILE_BYTES:  # it may grow after the fstat: never read more than the limit
            chunk = os.read(fd, MAX_KEY_FILE_BYTES + 1 - total)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > MAX_KEY_FILE_BYTES:
            raise KeyFileTooLargeError(f"{role} key file {path} is too large for a key file (more than "
                                       f"{MAX_KEY_FILE_BYTES} bytes); recreate it with `perception keys`", total)
        return b"".join(chunks)
    except OSError as exc:
        raise PublishError(f"{role} key file {path} cannot be read ({exc.strerror or exc}); recreate it with "
                           "`perception keys`") from None
    finally:
        os.close(fd)


def _parse_certificate(data: bytes) -> tuple[bytes | None, bytes | None]:
    """(public, secret) as pyzmq's ``zmq.auth.load_certificate`` reads them from a file's bytes."""
    public = secret = None
    for line in data.splitlines():
        line = line.strip()
        if line.startswith(b"#"):
            continue
        if line.startswith(b"public-key"):
            public = line.split(b"=", 1)[1].strip(b" \t'\"") if b"=" in line else b""
        elif line.startswith(b"secret-key"):
            secret = line.split(b"=", 1)[1].strip(b" \t'\"") if b"=" in line else b""
        if public and secret:
            break
    return public, secret


def valid_z85_key(key: bytes | None) -> bool:
    """Whether ``key`` is a CURVE key in Z85 text: 40 characters of the Z85 alphabet that decode
    to 32 bytes (libzmq refuses anything else with a bare "Invalid argument")."""
    if not key or len(key) != 40 or not set(key) <= _Z85_CHARS:
        return False
    try:
        return len(z85.decode(key)) == 32
    except Exception:  # noqa: BLE001 - z85.decode raises KeyError, struct.error or ValueError alike
        return False


def load_certificate(path: Path, *, role: str) -> tuple[bytes, bytes | None]:
    """(public, secret or None) Z85 keys of the key file ``path``, both checked (Z85, 32 bytes);
    PublishError naming the file and the fix (KeyFileGoneError when it is not there)."""
    if not os.path.lexists(path):
        raise KeyFileGoneError(f"{role} key file {path} not found; create one with `perception keys --out DIR "
                               "--name NAME`")
    if not path.is_file():
        why = why_not_a_file(path)
        error = KeyFileGoneError if why == "not found" else PublishError  # a link to nothing
        raise error(f"{role} key file {path} {why}; create one with `perception keys --out DIR --name NAME`")
    data = _read_key_file(path, role=role)
    public, secret = _parse_certificate(data)
    if public is None:
        raise PublishError(f"{role} key file {path} is not a ZeroMQ certificate (no public key found); recreate it "
                           "with `perception keys`")
    if not valid_z85_key(public) or (secret is not None and not valid_z85_key(secret)):
        raise PublishError(f"{role} key file {path} holds a malformed key; recreate it with `perception keys`")
    return public, secret
