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

Key files are ZeroMQ certificates (``zmq.auth.create_certificates``). The allow-list is enforced by
pyzmq's ``ThreadAuthenticator`` (ZAP) with ``configure_curve(location=DIR)``: a client whose
public key is not a ``*.key`` file in DIR fails the handshake and receives nothing.

Every refused handshake is audited: logged as a warning with the client's public key (Z85) and
IP address (rate-limited: the first of each key/address pair at once, then at most one line per
``AUDIT_INTERVAL_S``) and counted in ``rejections`` (``curve_rejections`` in the node's stats).
A client that does not speak CURVE at all fails before ZAP and is not seen here.
"""

from __future__ import annotations

import logging
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85

from perception.errors import ConfigError, PublishError, why_not_a_file
from perception.stats import RateLimitedLog

log = logging.getLogger(__name__)

#: Seconds between audit lines for the same refused key and address (others are counted).
AUDIT_INTERVAL_S = 10.0
#: Distinct (key, address) pairs remembered for rate limiting; beyond it they share one key.
_MAX_AUDIT_KEYS = 1024


class AuditingAuthenticator(ThreadAuthenticator):
    """pyzmq's ZAP authenticator thread, plus an audit of every refused handshake.

    pyzmq decides (``configure_curve``); this subclass only watches: ``handle_zap_message`` keeps
    the request being decided (its address and credentials), and ``_send_zap_reply`` — the one
    place every decision passes — logs and counts the refusals. Both run on the authenticator's
    single thread, one request at a time.
    """

    def __init__(self, context: zmq.Context) -> None:
        super().__init__(context, log=logging.getLogger(f"{__name__}.zap"))
        self.rejections = 0
        self.last_rejection: dict[str, str] | None = None
        self._request: list[bytes] | None = None
        self._audit = RateLimitedLog(log, AUDIT_INTERVAL_S)
        self._audit_keys: set[str] = set()

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
        pair = f"{key} {address}"
        if pair not in self._audit_keys and len(self._audit_keys) >= _MAX_AUDIT_KEYS:
            pair = "other"
        self._audit_keys.add(pair)
        self._audit.warning(
            pair, "CURVE handshake refused (%s): client key %s from %s; add its .key to --curve-allow to admit it "
            "(%d refused so far)", self.last_rejection["reason"], key, address, self.rejections,
        )


def create_key_pair(out_dir: str | Path, name: str, *, overwrite: bool = False) -> tuple[Path, Path]:
    """Write ``<out_dir>/<name>.key`` (public) and ``<name>.key_secret`` (public + secret).

    Returns (public_path, secret_path). Raises ConfigError for a bad name or when the files exist
    and ``overwrite`` is false; PublishError when libzmq was built without CURVE.
    """
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise ConfigError(f"key name {name!r} is not a plain file name; use e.g. --name server")
    if not zmq.has("curve"):
        raise PublishError("this libzmq has no CURVE support; install pyzmq wheels from PyPI (they include it)")
    out = Path(out_dir)
    public, secret = out / f"{name}.key", out / f"{name}.key_secret"
    existing = [str(p) for p in (public, secret) if p.exists()]
    if existing and not overwrite:
        verb = "exists" if len(existing) == 1 else "exist"
        raise ConfigError(f"{', '.join(existing)} already {verb}; pick another --name or pass --overwrite")
    try:
        out.mkdir(parents=True, exist_ok=True)
        public_file, secret_file = zmq.auth.create_certificates(out, name)
    except OSError as exc:
        raise ConfigError(f"cannot write keys to {out}: {exc.strerror or exc}; check the directory") from None
    Path(secret_file).chmod(0o600)
    return Path(public_file), Path(secret_file)


def load_key_pair(secret_file: str | Path, *, role: str) -> tuple[bytes, bytes]:
    """Read (public, secret) Z85 keys from a ``.key_secret`` file; PublishError naming the file."""
    path = Path(secret_file)
    public, secret = _load_certificate(path, role=role)
    if secret is None:
        raise PublishError(
            f"{role} key file {path} has no secret key; pass the .key_secret file made by `perception keys`"
        )
    return public, secret


def load_public_key(public_file: str | Path, *, role: str) -> bytes:
    """Read a Z85 public key from a ``.key`` (or ``.key_secret``) file; PublishError naming the file."""
    public, _ = _load_certificate(Path(public_file), role=role)
    return public


def _load_certificate(path: Path, *, role: str) -> tuple[bytes, bytes | None]:
    if not path.is_file():
        raise PublishError(f"{role} key file {path} {why_not_a_file(path)}; create one with `perception keys --out DIR --name NAME`")
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise PublishError(f"{role} key file {path} is not a ZeroMQ certificate ({exc}); recreate it with `perception keys`") from None
    if not public or len(public) != 40 or (secret is not None and len(secret) != 40):
        raise PublishError(f"{role} key file {path} holds a malformed key; recreate it with `perception keys`")
    return public, secret


def start_authenticator(context: zmq.Context, allow_dir: str | Path) -> AuditingAuthenticator:
    """Start a ZAP authenticator on ``context`` that admits only the public keys in ``allow_dir``.

    Must run before the server socket binds. Raises PublishError when the directory is missing or
    holds no ``*.key`` file (an empty allow-list would silently admit nobody).
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
    allowed = sorted(location.glob("*.key"))
    if not allowed:
        raise PublishError(
            f"CURVE allow-list directory {location} holds no .key files; copy each subscriber's public .key into it"
        )
    for path in allowed:
        load_public_key(path, role="allowed client")
    auth = AuditingAuthenticator(context)
    auth.start()
    auth.configure_curve(domain="*", location=str(location))
    log.info("CURVE on: %d allowed client key(s) from %s", len(allowed), location)
    return auth


def make_curve_server(socket: zmq.Socket, secret_file: str | Path) -> None:
    """Make ``socket`` a CURVE server with the key pair in ``secret_file`` (before bind)."""
    public, secret = load_key_pair(secret_file, role="server secret")
    socket.curve_publickey = public
    socket.curve_secretkey = secret
    socket.curve_server = True


def make_curve_client(socket: zmq.Socket, *, server_key_file: str | Path, client_secret_file: str | Path) -> None:
    """Make ``socket`` a CURVE client of the server whose public key is in ``server_key_file``."""
    socket.curve_serverkey = load_public_key(server_key_file, role="server public")
    socket.curve_publickey, socket.curve_secretkey = load_key_pair(client_secret_file, role="client secret")
