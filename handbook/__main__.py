"""``python -m handbook ...`` is the ``handbook`` command (see handbook/cli.py)."""

import sys

from handbook.cli import main

sys.exit(main())
