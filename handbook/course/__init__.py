"""Tooling for those who run the course, not for students: set-up of the course's environment.

``torch_build`` picks and installs the PyTorch build ``make lab`` puts into ``.venv``.
"""
