"""`python -m megawatt` runs the command line."""

from megawatt.cli import _console_main

_console_main()
