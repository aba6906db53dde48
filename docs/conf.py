"""Sphinx configuration of the bspump documentation."""

project = "bspump"
author = "bspump developers"
extensions: list[str] = []
exclude_patterns = ["_build", "test_examples.py"]
html_theme = "alabaster"
