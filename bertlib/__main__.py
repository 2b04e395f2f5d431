import sys

from bertlib.cli import main

sys.exit(main())
