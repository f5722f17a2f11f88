"""``handbook assign``: write the student notebooks (chapters/) from the solutions (solutions/)."""

from __future__ import annotations

import argparse

from handbook.course.notebooks import assign


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="handbook assign", description=__doc__)
    parser.add_argument("--solutions", default="solutions", help="folder of solution notebooks (default: solutions)")
    parser.add_argument("--chapters", default="chapters", help="folder of student notebooks to write (default: chapters)")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if chapters/ is out of date")
    args = parser.parse_args(argv)
    changed = assign(args.solutions, args.chapters, check=args.check)
    verb = "out of date" if args.check else "written"
    for path in changed:
        print(f"{verb}: {path}")
    if not changed:
        print(f"{args.chapters} is in sync with {args.solutions}")
    return 1 if (args.check and changed) else 0
