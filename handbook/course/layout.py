"""How the package reads: the share of input-check lines in a module, and which modules an import loads.

The benchmark's ``layout`` part reports both (benchmarks/RESULTS.md). How a line is counted:

- a **code line** is a line of a statement, not blank, not only a comment, not a docstring;
- a **check line** is a code line of
  - an ``if`` statement whose body only raises (its test lines and its ``raise`` lines),
  - a ``raise ValueError`` / ``TypeError`` anywhere,
  - a statement that calls the shared checks (``checks.<name>(...)``) or a ``_check...`` helper,
  - a function whose name starts with ``_check`` or ``check_`` (all of it: it only checks).
"""

from __future__ import annotations

import ast
import io
import subprocess
import sys
import tokenize
from pathlib import Path

ERRORS = {"ValueError", "TypeError"}


def _lines(node: ast.AST) -> set[int]:
    return set(range(node.lineno, (node.end_lineno or node.lineno) + 1))


def _is_docstring(node: ast.AST) -> bool:
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)


def _calls_a_check(node: ast.AST) -> bool:
    for call in ast.walk(node):
        if isinstance(call, ast.Call):
            f = call.func
            if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id == "checks":
                return True
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
            if name.startswith("_check"):
                return True
    return False


def _raises_an_error(node: ast.Raise) -> bool:
    exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
    return isinstance(exc, ast.Name) and exc.id in ERRORS


def count_check_lines(source: str) -> tuple[int, int]:
    """(check lines, code lines) of a module's source, counted as the module docstring says."""
    tree = ast.parse(source)
    comment_or_blank = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT and not token.line[:token.start[1]].strip():
            comment_or_blank.add(token.start[0])
    code, checks, docstrings = set(), set(), set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body \
                and _is_docstring(node.body[0]):
            docstrings |= _lines(node.body[0])
        if isinstance(node, ast.stmt):
            # a compound statement's own lines are its header; its body's lines come from the body
            if hasattr(node, "body") and node.body:
                code |= set(range(node.lineno, node.body[0].lineno))
            else:
                code |= _lines(node)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith(("_check", "check_")):
            checks |= _lines(node)
        elif isinstance(node, ast.If) and all(isinstance(s, ast.Raise) for s in node.body) and not node.orelse:
            checks |= _lines(node)
        elif isinstance(node, ast.Raise) and _raises_an_error(node):
            checks |= _lines(node)
        elif isinstance(node, (ast.Expr, ast.Assign, ast.AnnAssign, ast.Return)) and _calls_a_check(node):
            checks |= _lines(node)
    blank = {i + 1 for i, line in enumerate(source.splitlines()) if not line.strip()}
    code -= docstrings | comment_or_blank | blank
    return len(checks & code), len(code)


def check_share(path: str | Path) -> float:
    """The share of check lines among the code lines of a Python file."""
    checks, code = count_check_lines(Path(path).read_text(encoding="utf-8"))
    return checks / max(1, code)


def modules_loaded_by(module: str) -> list[str]:
    """The ``handbook`` modules a fresh interpreter has loaded after ``import <module>``."""
    code = f"import sys, {module}; print(' '.join(sorted(m for m in sys.modules if m.startswith('handbook'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.split()


if __name__ == "__main__":
    for name in sys.argv[1:]:
        checks, code = count_check_lines(Path(name).read_text(encoding="utf-8"))
        print(f"{name}: {checks} check lines of {code} code lines ({checks / max(1, code):.1%})")
