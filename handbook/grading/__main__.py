"""``python -m handbook.grading ...`` is ``handbook grade ...`` (see handbook/grading/cli.py)."""

import sys

from handbook.grading.cli import main

sys.exit(main())
