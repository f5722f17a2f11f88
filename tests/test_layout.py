"""How the benchmark counts input-check lines (handbook.course.layout): a crafted module."""

import textwrap

from handbook.course.layout import count_check_lines

SOURCE = textwrap.dedent('''
    """Module docstring: not code."""
    from handbook import checks


    def _check_size(n):                # 3 check lines: a whole _check function
        if n < 1:
            raise ValueError("n")


    def forward(x, n):
        """Docstring: not code."""
        # a comment line: not code
        B, T = checks.tensor("x", x, "B T")       # a check line
        if x.dim() != 2:                          # if + raise: 2 check lines
            raise ValueError("x")
        y = x * n                                 # the maths: 2 code lines
        return y.sum(dim=1)
''')


def test_check_lines_are_counted_as_the_docstring_says():
    checks, code = count_check_lines(SOURCE)
    # code: import, def _check_size + 2, def forward, checks.tensor, if + raise, y =, return
    assert (checks, code) == (6, 10)
