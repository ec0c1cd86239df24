"""``python -m perception.bench ...`` is ``perception bench ...``."""

import sys

from perception.cli import main

sys.exit(main(["bench", *sys.argv[1:]]))
