"""Writes docs/recipe.md: ``python -m lmforge.recipe.doc > docs/recipe.md`` (a script, so it
prints; the text is :func:`lmforge.recipe.reference.markdown`)."""

from __future__ import annotations

import sys

from lmforge.recipe.reference import markdown

if __name__ == "__main__":
    sys.stdout.write(markdown())
