"""``python -m handbook.course.grading ...`` is ``handbook grade ...`` (see handbook/course/grading/cli.py)."""

import sys

from handbook.course.grading.cli import main

sys.exit(main())
