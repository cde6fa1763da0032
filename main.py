"""Thin launcher: ``python main.py`` opens the window (same as ``python -m car_desktop``)."""

import sys

from car_desktop.cli import main

if __name__ == "__main__":
    sys.exit(main())
