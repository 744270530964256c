"""``python -m lmforge.cli``: the same command line as ``lmforge``."""

from lmforge.cli import main

main()
