"""Entry point of the PyInstaller build: the same as the ``car-desktop`` console script.

``freeze_support`` must run first: the CRF helper is a ``spawn`` child process, and in a frozen app
the child is this executable started again with multiprocessing's arguments, which must run the
child's work instead of opening another window.
"""

import multiprocessing
import sys

if __name__ == "__main__":
    multiprocessing.freeze_support()
    from car_desktop.cli import main

    sys.exit(main())
