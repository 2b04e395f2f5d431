"""``python -m bertlib.data.prepare``: the same as ``bertlib prepare-data``."""

import sys

from bertlib.core.errors import run_guarded
from bertlib.data.prepare.run import main

sys.exit(run_guarded(main, sys.argv[1:]))
