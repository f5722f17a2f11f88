"""``python -m handbook ...`` is the ``handbook`` command (see handbook/course/cli.py)."""

import sys

from handbook.course.cli import main

sys.exit(main())
