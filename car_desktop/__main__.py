"""``python -m car_desktop``: the same as the ``car-desktop`` command (no sub-command opens the window)."""

import sys

from .cli import main

sys.exit(main())
