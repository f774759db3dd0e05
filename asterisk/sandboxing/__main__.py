"""``python3 -m asterisk.sandboxing``: the same command line as ``python3 -m asterisk.sandbox``."""

import sys

from .cli import main

sys.exit(main())
