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
"""

from __future__ import annotations

import logging
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from perception.errors import ConfigError, PublishError

log = logging.getLogger(__name__)


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
        raise ConfigError(f"{', '.join(existing)} already {verb}; pick another --name or pass --force")
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
        raise PublishError(f"{role} key file {path} not found; create one with `perception keys --out DIR --name NAME`")
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise PublishError(f"{role} key file {path} is not a ZeroMQ certificate ({exc}); recreate it with `perception keys`") from None
    if not public or len(public) != 40 or (secret is not None and len(secret) != 40):
        raise PublishError(f"{role} key file {path} holds a malformed key; recreate it with `perception keys`")
    return public, secret


def start_authenticator(context: zmq.Context, allow_dir: str | Path) -> ThreadAuthenticator:
    """Start a ZAP authenticator on ``context`` that admits only the public keys in ``allow_dir``.

    Must run before the server socket binds. Raises PublishError when the directory is missing or
    holds no ``*.key`` file (an empty allow-list would silently admit nobody).
    """
    location = Path(allow_dir)
    if not location.is_dir():
        raise PublishError(f"CURVE allow-list directory {location} not found; create it and copy client .key files into it")
    allowed = sorted(location.glob("*.key"))
    if not allowed:
        raise PublishError(
            f"CURVE allow-list directory {location} holds no .key files; copy each subscriber's public .key into it"
        )
    for path in allowed:
        load_public_key(path, role="allowed client")
    auth = ThreadAuthenticator(context, log=logging.getLogger(f"{__name__}.zap"))
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
