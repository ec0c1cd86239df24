"""``python -m perception.export ...`` is ``perception export ...``."""

import sys

from perception.cli import main

sys.exit(main(["export", *sys.argv[1:]]))
