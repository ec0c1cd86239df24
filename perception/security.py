"""CURVE encryption and the client allow-list for the mask publisher.

By default the node publishes unencrypted on localhost only. To publish across a network, give
the node a key pair and a directory of allowed client public keys::

    perception keys --out keys --name server        # keys/server.key, keys/server.key_secret
    perception keys --out keys --name laptop        # one pair per subscriber
    mkdir allowed && cp keys/laptop.key allowed/
    perception run ... --endpoint tcp://0.0.0.0:5556 \\
        --curve-secret-key keys/server.key_secret --curve-allow allowed
    perception listen --endpoint tcp://car:5556 \\
        --curve-server-key keys/server.key --curve-key keys/laptop.key_secret

Key files are ZeroMQ certificates (``perception/curve_keys.py`` writes and reads them). The allow-list is enforced by
pyzmq's ``ThreadAuthenticator`` (ZAP), asking ``AuditingAuthenticator.callback`` (pyzmq's
``configure_curve_callback``): a client whose public key is not in a ``*.key`` file in DIR fails
the handshake and receives nothing.

The folder is followed while the node runs: a watcher thread looks at its listing (names, sizes,
mtimes) every ``ALLOW_POLL_S`` and, when it changed, reads it again and swaps the allowed set (one
immutable frozenset, replaced whole, so the ZAP thread always sees one list or the other) and logs
one line. A key that is no longer in any file is revoked: new handshakes with it are refused, and
``on_revoke`` (the publisher, ``XpubCore.cut_clients``) disconnects the clients already connected
with it, whose reconnects are then refused. The list never falls open: an empty folder admits
nobody; a folder that cannot be read keeps the last list (one warning); a ``.key`` file that cannot
be read or is not a public key admits nobody (one warning naming it) while the other files apply.
A file that held a key and turns malformed (rewritten in place by a slow copy: scp, NFS, an editor)
keeps that key while it is being written: its key is revoked only once the file has stayed
malformed and unchanged for ``ALLOW_GRACE_S``, or malformed for ``ALLOW_GRACE_MAX_S`` in all, so a
re-deploy of the same key does not cut its client (ZeroMQ does not retry a refused handshake).

Secret key files open to other users get one warning (as ssh does), and a client given a secret
key file as the server's public key is refused: the node's secret belongs on the node only.

Every refused handshake is audited: logged as a warning with the client's public key (Z85) and
IP address and counted in ``rejections`` (``curve_rejections`` in the node's stats). The log is
rate-limited by ``curve_audit.AuditLog``: the first refusal of a key/address pair at once, then at most one
line per pair per ``AUDIT_INTERVAL_S``, and at most ``MAX_AUDIT_NAMED`` pairs named per interval;
the refusals beyond (a flood of new keys) share one summary line per interval naming the latest.
Pairs are remembered for one interval only, so once a flood has passed a new client is named again.
A client that does not speak CURVE at all fails before ZAP and is not seen here.
"""

from __future__ import annotations

import logging
import os
import signal
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path

import zmq
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85

from perception.curve_audit import AUDIT_INTERVAL_S, MAX_AUDIT_NAMED, AuditLog
from perception.curve_keys import (
    KeyFileGoneError,
    KeyFileTooLargeError,
    load_certificate,
    load_key_pair,
    posix_mode,
)
from perception.errors import PublishError, why_not_a_file

log = logging.getLogger(__name__)

#: Seconds between two looks at the --curve-allow folder (its listing: names, sizes, mtimes).
ALLOW_POLL_S = 1.0
#: Seconds a .key that held a key may stay malformed and unchanged (being written) before that key
#: is revoked; ALLOW_GRACE_MAX_S bounds the time it may stay malformed while it keeps changing.
ALLOW_GRACE_S = 2.0
ALLOW_GRACE_MAX_S = 10.0
#: The refusal audit's words for a key revoked while running, by how its file went.
_REVOKED_HOW = {
    "removed": "its .key was removed from --curve-allow",
    "changed": "its .key in --curve-allow was changed to another key",
    "unreadable": "its .key in --curve-allow was left unreadable or malformed, so it was revoked",
}
#: The allow-list line's words for the connected clients cut, by how their key was revoked (as above).
_CUT_WORDS = {
    "removed": "with a removed key",
    "changed": "with a changed key",
    "unreadable": "with an unreadable key",
}


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


#: Names in an allow-list line before the rest are counted ("added 500: a.key, b.key, ... and 495 more").
_MAX_NAMES = 5


def _names(names: list[str]) -> str:
    """``names`` for a log line: all of them when few, else the first ``_MAX_NAMES`` and a count."""
    if len(names) <= _MAX_NAMES:
        return ", ".join(names)
    return f"{len(names)}: {', '.join(names[:_MAX_NAMES])}, ... and {len(names) - _MAX_NAMES} more"


def _scan(location: Path) -> tuple[tuple, dict[str, str], tuple[str, ...]]:
    """The allow-list folder as the watcher sees it: the listing of its ``*.key`` regular files
    (name, size, mtime, ctime, inode; hidden files left out, as pyzmq's ``load_certificates``
    globs them), the ``*.key`` entries that cannot be key files (a link to nothing, a folder, a
    FIFO: name -> why) and the names of the ``*.key_secret`` files put there. A file removed
    between the listing and its stat is not there. OSError when the folder cannot be listed."""
    with os.scandir(location) as entries:
        names = sorted(e.name for e in entries if not e.name.startswith("."))
    listing, broken = [], {}
    for name in names:
        if not name.endswith(".key"):
            continue
        path = location / name
        try:
            st = path.stat()
        except FileNotFoundError:
            if path.is_symlink():
                broken[name] = "is a link to nothing"
            continue  # removed since the listing
        except OSError as exc:
            broken[name] = f"cannot be looked at ({exc.strerror or exc})"
            continue
        if stat.S_ISREG(st.st_mode):
            listing.append((name, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino))
        else:
            broken[name] = "is a folder" if stat.S_ISDIR(st.st_mode) else "is not a regular file"
    return tuple(listing), broken, tuple(n for n in names if n.endswith(".key_secret"))


class AuditingAuthenticator(ThreadAuthenticator):
    """pyzmq's ZAP authenticator thread with an allow-list that follows a folder, plus an audit of
    every refused handshake.

    pyzmq runs the ZAP protocol and asks ``callback`` (its credentials-provider hook) whether a
    client key is allowed; ``reload`` (called by the watcher thread every ``ALLOW_POLL_S``) keeps
    ``allowed`` equal to the keys of the folder's ``*.key`` files. ``handle_zap_message`` keeps the
    request being decided (its address and credentials), and ``_send_zap_reply`` — the one place
    every decision passes — logs and counts the refusals. Both run on the authenticator's single
    thread, one request at a time.
    """

    def __init__(self, context: zmq.Context, location: str | Path | None = None) -> None:
        super().__init__(context, log=logging.getLogger(f"{__name__}.zap"))
        self.rejections = 0
        self.last_rejection: dict[str, str] | None = None
        self._request: list[bytes] | None = None
        self._audit = AuditLog(log, AUDIT_INTERVAL_S, MAX_AUDIT_NAMED)
        #: The folder of allowed client ``.key`` files.
        self.location = Path(location) if location is not None else None
        #: Z85 public keys admitted now; replaced whole (never mutated), so readers need no lock.
        self.allowed: frozenset[bytes] = frozenset()
        #: Called with the revoked keys after the list dropped some; returns how many connected
        #: clients it disconnected (set by the publisher that owns the socket).
        self.on_revoke: Callable[[frozenset[bytes]], int] | None = None
        #: Keys revoked while running (Z85 text) -> how (``_REVOKED_HOW``), named so in the refusal audit.
        self.revoked: dict[str, str] = {}
        #: Connected clients disconnected because their key was revoked.
        self.disconnected = 0
        self._files: dict[str, bytes] = {}  # the .key files that read as a public key, and that key
        #: The files that held a key and read malformed now, whose key is kept for the grace (a file
        #: being rewritten): name -> (that key, its listing entry, when that entry last changed,
        #: when it turned malformed), times by ``_clock``.
        self._held: dict[str, tuple[bytes, tuple, float, float]] = {}
        self._listing: tuple | None = None
        self._unreadable: str | None = None  # the folder's last warned read error
        self._bad: list[str] = []  # the .key files last warned about as not admitted
        self._clock: Callable[[], float] = time.monotonic
        self._reload_lock = threading.Lock()
        self._cache: dict[str, tuple] = {}  # name -> (listing entry, public key or None, holds a secret, why not)
        self._tickets = 0  # looks at the folder begun
        self._applied = 0  # the latest look applied (an older one finishing later is dropped)
        self._broken_warned: set[str] = set()  # the *.key entries warned about as no key files
        self._secret_warned: set[str] = set()  # the files warned about as holding a secret key
        #: True once the ZAP thread was found dead (``check_zap``): nobody is admitted from then on.
        self.failed = False
        #: Called (watcher thread) when the ZAP thread died: the node stops with exit 1.
        self.on_failure: Callable[[], None] | None = None
        self._stop_watch = threading.Event()
        self._watcher: threading.Thread | None = None

    # ------------------------------------------------------------------ the allow-list

    def callback(self, domain: str, key: bytes) -> bool:
        """pyzmq's credentials-provider hook (ZAP thread): is this Z85 client key allowed now?"""
        return key in self.allowed

    def load_initial(self) -> int:
        """Read the folder before the first handshake; PublishError for a missing or empty folder
        or a file that is not a public key (at start every problem is an error)."""
        listing, broken, secret_files = _scan(self.location)
        self._warn_odd_entries(broken, secret_files)
        if not listing:
            odd = f" ({_names(sorted(broken))}: not key files)" if broken else ""
            raise PublishError(
                f"CURVE allow-list directory {self.location} holds no .key files{odd}; copy each subscriber's public "
                ".key into it"
            )
        reads: dict[str, tuple] = {}
        for entry in listing:
            public, secret = load_certificate(self.location / entry[0], role="allowed client")
            reads[entry[0]] = (entry, public, secret is not None, None)
        self._warn_secrets(reads)
        self._cache = reads
        self._files = {name: read[1] for name, read in reads.items()}
        self._listing = listing
        self.allowed = frozenset(self._files.values())
        return len(listing)

    def watch(self, interval_s: float | None = None) -> None:
        """Start the thread that calls ``reload`` every ``interval_s`` (``ALLOW_POLL_S``), and checks
        that the ZAP thread still runs (``check_zap``)."""
        interval = ALLOW_POLL_S if interval_s is None else interval_s

        def loop() -> None:
            while not self._stop_watch.wait(interval):
                self._audit.flush()  # a flood's last refusals, summed once its interval has passed
                if not self.check_zap():
                    return
                try:
                    self.reload()
                except Exception:  # never let the watcher die silently: the list would freeze
                    log.exception("CURVE allow-list: reading %s failed; keeping the last list", self.location)

        self._watcher = threading.Thread(target=loop, name="curve-allow-watch", daemon=True)
        self._watcher.start()

    def check_zap(self) -> bool:
        """Whether the ZAP thread that answers every handshake still runs. When it died (an error in
        it), new clients would wait for ever and the node would look healthy, so: one error line,
        every connected client cut, nobody admitted, and ``on_failure`` (the node stops, exit 1);
        without one, SIGTERM to this process. False when it died."""
        thread = self.thread
        if self.failed:
            return False
        if thread is None or thread.ident is None or thread.is_alive() or self._stop_watch.is_set():
            return True
        self.failed = True
        log.error("CURVE: the ZAP authenticator thread died, so no client can be admitted (new handshakes would "
                  "wait for ever); stopping the node: restart it (see the error above)")
        old, self.allowed = self.allowed, frozenset()
        if old and self.on_revoke is not None:
            try:
                self.on_revoke(old)
            except Exception:  # noqa: BLE001 - the node stops anyway
                log.exception("CURVE: disconnecting the clients failed")
        if self.on_failure is not None:
            self.on_failure()
        else:
            os.kill(os.getpid(), signal.SIGTERM)
        return False

    def _list(self) -> tuple:
        """What the folder looks like (names, sizes, mtimes, inodes); OSError when unreadable."""
        return _scan(self.location)[0]

    def reload(self) -> bool:
        """Look at the folder; when it changed, read the files that changed (at most
        ``MAX_KEY_FILE_BYTES`` each), swap the allowed set, disconnect clients whose key was
        removed, and log one line. Returns True when it logged that line.

        No lock is held while files are read (a slow file delays nothing else): each look takes a
        ticket, and only the latest look applies (an older one that finishes later is dropped)."""
        with self._reload_lock:
            self._tickets += 1
            ticket = self._tickets
        try:
            listing, broken, secret_files = _scan(self.location)
        except OSError as exc:
            with self._reload_lock:
                if ticket < self._applied:
                    return False
                self._applied = ticket
                why = "not found" if isinstance(exc, FileNotFoundError) else exc.strerror or str(exc)
                if why != self._unreadable:
                    log.warning("CURVE allow-list folder %s cannot be read (%s); keeping the last list (%s) until "
                                "it can", self.location, why, _plural(len(self.allowed), "client key"))
                self._unreadable = why
            return False
        cache = self._cache
        reads: dict[str, tuple] = {}
        for entry in listing:
            name = entry[0]
            if name in cache and cache[name][0] == entry:
                reads[name] = cache[name]  # unchanged: not read again
                continue
            try:
                public, secret = load_certificate(self.location / name, role="allowed client")
                reads[name] = (entry, public, secret is not None, None)
            except KeyFileGoneError:  # removed since the listing: a removal, never a file being written
                continue
            except KeyFileTooLargeError as exc:
                reads[name] = (entry, None, False, f"too large for a key file: {exc.size} bytes")
            except PublishError:
                reads[name] = (entry, None, False, "unreadable or malformed")
        listing = tuple(entry for entry in listing if entry[0] in reads)
        with self._reload_lock:
            if ticket < self._applied:
                return False  # a later look has applied already
            self._applied = ticket
            self._warn_odd_entries(broken, secret_files)
            self._warn_secrets(reads)
            self._cache = reads
            return self._apply(listing, reads)

    def _warn_odd_entries(self, broken: dict[str, str], secret_files: tuple[str, ...]) -> None:
        """One warning for each ``*.key`` entry that cannot be a key file, and for each
        ``*.key_secret`` file in the folder (warned again only after it went and came back)."""
        for name, why in broken.items():
            if name not in self._broken_warned:
                log.warning("CURVE allow-list: %s in %s %s, so it admits nobody; put the client's public .key file "
                            "there", name, self.location, why)
        self._broken_warned = set(broken)
        for name in secret_files:
            if name not in self._secret_warned:
                log.warning("CURVE allow-list: %s in %s is a secret key file: it is not read (only .key files are), "
                            "and anyone who can read the folder can read that secret; move it out, copy only the "
                            "public .key, and treat the secret as exposed (make a new pair with `perception keys`)",
                            name, self.location)
        self._secret_warned = set(secret_files) | {n for n in self._secret_warned if n.endswith(".key")}

    def _warn_secrets(self, reads: dict[str, tuple]) -> None:
        """One warning for each ``.key`` file in the folder that holds a secret key too."""
        for name, (_entry, public, has_secret, _why) in reads.items():
            if public is not None and has_secret and name not in self._secret_warned:
                self._secret_warned.add(name)
                log.warning("CURVE allow-list: %s in %s holds a secret key (a .key_secret copied as .key?): its "
                            "public key is admitted, but anyone who can read the folder can read that secret; copy "
                            "only the public .key, and treat the secret as exposed (make a new pair with "
                            "`perception keys`)", name, self.location)
        self._secret_warned = {n for n in self._secret_warned
                               if n.endswith(".key_secret") or (n in reads and reads[n][2])}

    def _apply(self, listing: tuple, reads: dict[str, tuple]) -> bool:
        if self._unreadable is not None:
            self._unreadable = None
            if listing == self._listing:
                log.info("CURVE allow-list folder %s can be read again: %s, unchanged", self.location,
                         _plural(len(self.allowed), "client key"))
        if listing == self._listing and not self._held:
            return False
        now = self._clock()
        files = {name: read[1] for name, read in reads.items() if read[1] is not None}
        bad = [name for name, read in reads.items() if read[1] is None]
        why_bad = {name: reads[name][3] for name in bad}
        entries = {entry[0]: entry for entry in listing}
        old_held = self._held
        held: dict[str, tuple[bytes, tuple, float, float]] = {}
        for name in bad:
            if name in old_held:
                key, entry, changed_at, bad_since = old_held[name]
                if entries[name] != entry:  # still being written
                    entry, changed_at = entries[name], now
            elif name in self._files:  # held a key at the last reading: being rewritten in place?
                key, entry, changed_at, bad_since = self._files[name], entries[name], now, now
            else:  # never held a key: admits nobody
                continue
            if now - changed_at < ALLOW_GRACE_S and now - bad_since < ALLOW_GRACE_MAX_S:
                held[name] = (key, entry, changed_at, bad_since)
        self._listing = listing
        unadmitted = [name for name in bad if name not in held]
        newly_held = [name for name in held if name not in old_held]
        if newly_held:
            one = len(newly_held) == 1
            log.warning("CURVE allow-list: %s in %s %s (unreadable or malformed: still being written?); %s key "
                        "stays admitted until %s left so for %g s, then it is revoked", _names(newly_held),
                        self.location, "is not a public key file now" if one else "are not public key files now",
                        "its" if one else "their", "it is" if one else "they are", ALLOW_GRACE_S)
        if unadmitted and unadmitted != self._bad:
            # Not admitted (never fall open); a file still being copied is read again once it changes.
            whys = sorted({why_bad[name] for name in unadmitted})
            log.warning("CURVE allow-list: %s in %s %s (%s), so not admitted; recreate it with `perception keys` "
                        "and copy the .key", _names(unadmitted), self.location,
                        "is not a public key file" if len(unadmitted) == 1 else "are not public key files",
                        "; ".join(whys))
        self._bad = unadmitted
        old_files = {**self._files, **{name: h[0] for name, h in old_held.items()}}
        old_keys = self.allowed
        new_keys = frozenset(files.values()) | frozenset(h[0] for h in held.values())
        if self.failed:  # the ZAP thread died: nobody is admitted again
            new_keys = frozenset()
        # from here on the ZAP thread decides with the new list
        self._files, self._held, self.allowed = files, held, new_keys
        added = [n for n in files if n not in old_files]
        removed = [n for n in old_files if n not in files and n not in bad]
        broken = [n for n in old_files if n in bad and n not in held]
        changed = [n for n in files if n in old_files and files[n] != old_files[n]]
        whole = [n for n in files if n in old_held and files[n] == old_files[n]]  # written out: the same key
        revoked = old_keys - new_keys
        if not (added or removed or broken or changed or whole or revoked):
            return False
        cut = 0
        by_how: dict[str, set[bytes]] = {}  # the revoked keys by how their file went (_CUT_WORDS)
        cut_by_how: dict[str, int] = {}  # the connected clients cut, likewise
        if revoked:
            for key in revoked:  # its file removed, changed to another key, or left unreadable
                names = {n for n, k in old_files.items() if k == key}
                how = "changed" if names & set(changed) else "unreadable" if names & set(broken) else "removed"
                self.revoked[key.decode()] = how
                by_how.setdefault(how, set()).add(key)
            if self.on_revoke is not None:
                for how in _CUT_WORDS:
                    if how not in by_how:
                        continue
                    try:
                        cut_by_how[how] = self.on_revoke(frozenset(by_how[how]))
                    except Exception:  # the new list holds anyway; only the disconnect failed
                        log.exception("CURVE allow-list: disconnecting clients %s failed", _CUT_WORDS[how])
                cut = sum(cut_by_how.values())
                self.disconnected += cut
        for key in new_keys:
            self.revoked.pop(key.decode(), None)
        parts = [f"{label} {_names(names)}" for label, names in
                 (("added", added), ("removed", removed), ("unreadable now", broken), ("changed", changed),
                  ("whole again, the same key", whole))
                 if names]
        line = f"CURVE allow-list: {_plural(len(new_keys), 'client key')} from {self.location} ({'; '.join(parts)})"
        if not new_keys:
            line += "; no client is admitted"
        if revoked:
            # How the keys went, as the parts above and the refusal audit (_REVOKED_HOW) say it: a
            # key changed to another, or left unreadable, was not removed.
            hows = [how for how in _CUT_WORDS if how in by_how]
            if len(hows) == 1:
                said = f"{_plural(cut, 'connected client')} {_CUT_WORDS[hows[0]]} disconnected"
            else:
                said = (f"{_plural(cut, 'connected client')} with a revoked key disconnected ("
                        + ", ".join(f"{cut_by_how.get(how, 0)} {_CUT_WORDS[how]}" for how in hows) + ")")
            line += f"; {said}, new handshakes with {'it' if len(revoked) == 1 else 'them'} refused"
        log.info("%s", line)
        return True

    def stop(self) -> None:
        if not hasattr(self, "_stop_watch"):  # __init__ failed early; pyzmq's __del__ still calls stop
            return
        self._stop_watch.set()
        watcher, self._watcher = self._watcher, None
        if watcher is not None and watcher is not threading.current_thread():
            watcher.join(timeout=5)
        super().stop()
        self._audit.flush(final=True)  # refusals not said yet: said before the node's last lines

    # ------------------------------------------------------------------ the audit

    async def handle_zap_message(self, msg: list[bytes]) -> None:
        self._request = msg
        try:
            await super().handle_zap_message(msg)
        finally:
            self._request = None

    def _send_zap_reply(self, request_id: bytes, status_code: bytes, status_text: bytes,
                        user_id: str = "anonymous") -> None:
        if status_code != b"200":
            self._record_rejection(status_text)
        super()._send_zap_reply(request_id, status_code, status_text, user_id)

    def _record_rejection(self, reason: bytes) -> None:
        request = self._request or []
        address = request[3].decode("utf-8", "replace") if len(request) > 3 else "?"
        mechanism = request[5].decode("ascii", "replace") if len(request) > 5 else "?"
        credentials = request[6:]
        key = z85.encode(credentials[0]).decode() if mechanism == "CURVE" and len(credentials) == 1 and \
            len(credentials[0]) == 32 else "?"
        self.rejections += 1
        self.last_rejection = {"address": address, "public_key": key, "reason": reason.decode("utf-8", "replace")}
        hint = _REVOKED_HOW.get(self.revoked.get(key, ""),
                                "to admit it, add its .key to --curve-allow and restart the client (ZeroMQ does not "
                                "retry a refused handshake)")
        self._audit.refused(
            f"{key} {address}", "CURVE handshake refused (%s): client key %s from %s; %s (%d refused so far)",
            self.last_rejection["reason"], key, address, hint, self.rejections,
        )


def start_authenticator(context: zmq.Context, allow_dir: str | Path) -> AuditingAuthenticator:
    """Start a ZAP authenticator on ``context`` that admits only the public keys in ``allow_dir``,
    and the thread that follows the folder while the node runs (see the module docstring).

    Must run before the server socket binds. Raises PublishError when the directory is missing,
    holds no ``*.key`` file (an empty allow-list would silently admit nobody) or a bad one.
    """
    location = Path(allow_dir)
    if not location.is_dir():
        why = why_not_a_file(location)
        if why == "is a file":  # e.g. one subscriber's .key given for the folder of them
            raise PublishError(f"CURVE allow-list directory {location} is a file, not a folder; give the folder that "
                               f"holds the subscribers' public .key files (e.g. {location.parent})")
        if why != "not found":
            raise PublishError(f"CURVE allow-list directory {location} {why}; give a folder of client .key files")
        raise PublishError(f"CURVE allow-list directory {location} not found; create it and copy client .key files into it")
    auth = AuditingAuthenticator(context, location)
    try:
        auth.load_initial()
    except OSError as exc:
        raise PublishError(f"CURVE allow-list directory {location} cannot be read: {exc.strerror or exc}") from None
    warn_if_writable_by_others(location)
    auth.start()
    auth.configure_curve_callback(domain="*", credentials_provider=auth)
    auth.watch()
    log.info("CURVE on: %s from %s (the folder is reread every %g s: add or remove a .key to admit or revoke "
             "a client)", _plural(len(auth.allowed), "allowed client key"), location, ALLOW_POLL_S)
    return auth


def warn_if_writable_by_others(location: Path) -> bool:
    """One warning when the allow-list folder may be written by other users (group or others; a
    sticky bit still lets them add files): any of them could add a ``.key`` and be admitted, as the
    folder is followed while the node runs; True if so. The list still applies (a shared deployment
    may mean it)."""
    mode = posix_mode(location)
    if mode is None or not mode & 0o022:
        return False
    log.warning("CURVE allow-list directory %s may be written by other users (mode %04o): any of them could add a "
                ".key and be admitted; chmod go-w %s", location, mode, location)
    return True


def make_curve_server(socket: zmq.Socket, secret_file: str | Path | tuple[bytes, bytes]) -> None:
    """Make ``socket`` a CURVE server with the key pair in ``secret_file`` (before bind), or the
    (public, secret) pair ``load_key_pair`` read from it."""
    public, secret = secret_file if isinstance(secret_file, tuple) else load_key_pair(secret_file, role="server secret")
    try:
        socket.curve_publickey = public
        socket.curve_secretkey = secret
        socket.curve_server = True
    except zmq.ZMQError as exc:  # a key libzmq refuses: the file's fault, never the endpoint's
        name = "the --curve-secret-key file" if isinstance(secret_file, tuple) else str(secret_file)
        raise PublishError(f"ZeroMQ refused the CURVE key pair of {name} ({exc.strerror}); recreate it with "
                           "`perception keys`") from None


def make_curve_client(socket: zmq.Socket, *, server_key_file: str | Path, client_secret_file: str | Path) -> None:
    """Make ``socket`` a CURVE client of the server whose public key is in ``server_key_file``.

    Refuses a server key file that holds a secret key: the node's ``.key_secret`` must stay on the node."""
    path = Path(server_key_file)
    server_public, server_secret = load_certificate(path, role="server public")
    if server_secret is not None:
        public = path.with_suffix(".key") if path.suffix == ".key_secret" else "its .key"
        raise PublishError(f"--curve-server-key {path} is a secret key file (the node's .key_secret); give the "
                           f"node's public key, {public}, and keep the .key_secret on the node only")
    client_public, client_secret = load_key_pair(client_secret_file, role="client secret")
    try:
        socket.curve_serverkey = server_public
    except zmq.ZMQError as exc:  # a key libzmq refuses: the file's fault, never the endpoint's
        raise PublishError(f"ZeroMQ refused the server public key in --curve-server-key {path} ({exc.strerror}); "
                           "give the node's public .key made by `perception keys`") from None
    try:
        socket.curve_publickey, socket.curve_secretkey = client_public, client_secret
    except zmq.ZMQError as exc:
        raise PublishError(f"ZeroMQ refused the key pair in --curve-key {client_secret_file} ({exc.strerror}); "
                           "recreate it with `perception keys`") from None
