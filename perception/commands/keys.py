"""``perception keys``: create a CURVE key pair for encrypted publishing.

    perception keys --out keys --name server     # keys/server.key (public), keys/server.key_secret
    perception keys --out keys --name laptop     # one pair per subscriber; copy laptop.key to the
                                                 # node's --curve-allow directory
"""

from __future__ import annotations

import argparse

from perception.console import emit
from perception.curve_keys import create_key_pair


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, metavar="DIR", help="folder to write the key files into (created when missing)")
    parser.add_argument("--name", required=True,
                        help="key name: writes NAME.key and NAME.key_secret (letters, digits, '.', '_', '-')")
    # --overwrite as record and train spell it; --force, its first name here, stays an alias.
    parser.add_argument("--overwrite", "--force", dest="overwrite", action="store_true",
                        help="overwrite existing key files of that name")


def main(args: argparse.Namespace) -> int:
    from perception.signals import interrupt_on_stop_signals

    # SIGTERM and SIGHUP stop it as Ctrl-C does (one line, status 130), through the clean-up that
    # removes the temporary key files (one holds a secret); SIGTERM's default would leave them.
    with interrupt_on_stop_signals():
        public, secret = create_key_pair(args.out, args.name, overwrite=args.overwrite)
    emit(f"public key: {public}  (give this to the other side / put it in the --curve-allow directory)")
    emit(f"secret key: {secret}  (keep private; pass it as --curve-secret-key or --curve-key)")
    return 0
